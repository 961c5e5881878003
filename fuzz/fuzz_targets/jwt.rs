//! JWT parsing and verification (`token.rs`, through `Auth::authenticate` and
//! `Auth::verify_id_token`): raw text, and tokens assembled from a fuzzed header and payload
//! naming the server's real key id. None may panic, and none may be accepted: the fuzzer
//! cannot sign with the server's key.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a str),
    Assembled {
        alg: &'a str,
        typ: Option<&'a str>,
        real_kid: bool,
        kid: &'a str,
        claims: &'a str,
        signature: &'a [u8],
    },
    AssembledJson {
        alg: u8,
        typ: u8,
        sub: &'a str,
        sid: &'a str,
        tid: &'a str,
        aud: &'a str,
        exp: i64,
        signature: &'a [u8],
    },
}

/// The key id and algorithm the server signs with, from its JWKS.
fn key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let h = latchkey_fuzz::harness();
        let request = Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap_or_default();
        let (_, body) = h.send(request);
        let jwks: Value = serde_json::from_slice(&body).unwrap_or_default();
        let kid = jwks.pointer("/keys/0/kid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let alg = jwks.pointer("/keys/0/alg").and_then(Value::as_str).unwrap_or("EdDSA").to_owned();
        (kid, alg)
    })
}

fn assemble(header: &Value, claims: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fuzz_target!(|input: Input<'_>| {
    let (kid, alg) = key();
    let token = match input {
        Input::Raw(s) => s.to_owned(),
        Input::Assembled { alg, typ, real_kid, kid: fuzzed_kid, claims, signature } => {
            let kid = if real_kid { kid.as_str() } else { fuzzed_kid };
            assemble(&json!({ "alg": alg, "typ": typ, "kid": kid }), claims.as_bytes(), signature)
        }
        Input::AssembledJson { alg: a, typ, sub, sid, tid, aud, exp, signature } => {
            let alg = ["EdDSA", "ES256", "RS256", "HS256", "none", alg.as_str()][usize::from(a) % 6];
            let typ = ["at+jwt", "JWT", "id+jwt", ""][usize::from(typ) % 4];
            let claims = json!({ "iss": "http://127.0.0.1", "sub": sub, "sid": sid, "tid": tid, "aud": aud, "exp": exp, "iat": 0 });
            assemble(&json!({ "alg": alg, "typ": typ, "kid": kid }), claims.to_string().as_bytes(), signature)
        }
    };
    let h = latchkey_fuzz::harness();
    let auth = h.auth();
    h.runtime.block_on(async {
        assert!(auth.authenticate(&token, &[]).await.is_err(), "forged access token accepted: {token}");
        assert!(auth.verify_id_token(&token, &[]).await.is_err(), "forged ID token accepted: {token}");
    });
});
