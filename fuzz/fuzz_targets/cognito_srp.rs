//! The SRP parameters of the `cognito` surface, parsed in core: `SRP_A` (`srp::parse_public`),
//! `TIMESTAMP` (`srp::parse_timestamp`), `PASSWORD_CLAIM_SIGNATURE` and
//! `PASSWORD_CLAIM_SECRET_BLOCK` (`Auth::srp_sign_in`). Never a panic; a fuzzed secret block
//! or signature never signs anyone in.
#![no_main]

use arbitrary::Arbitrary;
use latchkey_core::SrpResponse;
use latchkey_core::identity::{Email, TenantId};
use latchkey_core::session::ClientMeta;
use latchkey_core::srp;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    srp_a: &'a str,
    timestamp: &'a str,
    signature: &'a str,
    secret_block: &'a str,
    username: &'a str,
    challenge_first: bool,
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(a) = srp::parse_public(input.srp_a) {
        // The hex form parses back to the same value.
        assert_eq!(srp::parse_public(&srp::to_hex(&a)).ok(), Some(a));
    }
    if let Some(at) = srp::parse_timestamp(input.timestamp) {
        assert_eq!(srp::parse_timestamp(&srp::format_timestamp(at)), Some(at));
    }
    let h = latchkey_fuzz::harness();
    let auth = h.auth();
    let meta = ClientMeta { ip: Some("10.0.0.1".into()), user_agent: None };
    h.runtime.block_on(async {
        if input.challenge_first {
            if let Ok(email) = Email::parse("srp-fuzz@example.com") {
                let _ = auth.srp_challenge(TenantId::DEFAULT, &email, input.srp_a, "fuzz-client", &meta).await;
            }
        }
        let response = SrpResponse {
            user_id_for_srp: input.username,
            secret_block: input.secret_block,
            timestamp: input.timestamp,
            signature: input.signature,
        };
        let outcome = auth.srp_sign_in(TenantId::DEFAULT, &response, "fuzz-client", &meta).await;
        assert!(outcome.is_err(), "a fuzzed SRP answer signed in");
    });
});
