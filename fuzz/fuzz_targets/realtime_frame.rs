//! WebSocket text frames of the `realtime` surface: any text gets a well-formed error frame
//! or reaches the core, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|text: &str| {
    if let Some(reply) = latchkey_server::surfaces::check_realtime_frame(text) {
        let code = reply.pointer("/error/code").and_then(Value::as_str);
        assert!(matches!(code, Some("malformed_frame" | "unknown_action" | "invalid_input")), "{reply}");
    }
});
