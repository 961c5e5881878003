//! Arbitrary GraphQL documents (and variables) executed against the schema with
//! async-graphql: no panic, and no internal error, the GraphQL equivalent of a 5xx.
#![no_main]

use arbitrary::Arbitrary;
use latchkey_core::session::ClientMeta;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    query: &'a str,
    variables: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let h = latchkey_fuzz::harness();
    let variables = serde_json::from_str(input.variables).unwrap_or(serde_json::Value::Null);
    let meta = ClientMeta { ip: Some("10.0.0.1".into()), user_agent: None };
    let response =
        h.runtime.block_on(latchkey_server::surfaces::execute_graphql_document(h.auth(), meta, input.query, variables));
    for error in &response.errors {
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string());
        assert!(code.as_deref() != Some("\"INTERNAL_SERVER_ERROR\""), "{}: {error:?}", input.query);
    }
});
