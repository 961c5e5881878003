//! Configuration values through the loader: any text given to a duration setting (or to
//! the other keys) is a value or a one-line error naming the key, never a panic.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use latchkey_server::Config;
use libfuzzer_sys::fuzz_target;

const KEYS: &[&str] = &[
    "access_token_ttl",
    "code_ttl",
    "session_ttl",
    "refresh_reuse_window",
    "unverified_account_ttl",
    "hash_queue",
    "surfaces",
    "metrics_allow",
    "mail_from",
    "listen",
    "public_url",
    "realtime_ping_interval",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: u8,
    value: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let key = KEYS[usize::from(input.key) % KEYS.len()];
    let raw = BTreeMap::from([(key.to_owned(), input.value.to_owned())]);
    if let Err(e) = Config::from_map(&raw) {
        assert!(e.key.starts_with("LATCHKEY_"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    let _ = latchkey_server::config::de::parse_duration(input.value);
});
