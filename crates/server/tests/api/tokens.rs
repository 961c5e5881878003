//! Token verification: every forgery and misuse is refused, rotation keeps old tokens valid
//! for one more generation, and a verifier that is not Latchkey's own code (PyJWT, fed only the
//! JWKS) accepts what Latchkey issues.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey_core::token::SigningAlgorithm;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, jwt_parts};
use crate::on_both_backends;

async fn assert_rejected(app: &TestApp, token: &str, code: &str) {
    let me = app.v1_me(token).await;
    assert_eq!(me.status, 401, "{}", me.body);
    assert_eq!(me.body["code"], code, "{}", me.body);
}

/// Re-signs `claims` under `header` with an arbitrary key.
fn forge(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

/// A server, a verified user signed in through v1, and that session's access token with its
/// decoded header and claims.
struct Signed {
    app: TestApp,
    access: String,
    kid: String,
    claims: Value,
}

async fn signed(backend: Backend) -> Signed {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("fox@example.com").await;
    let tokens = app.v1_signed_in("fox@example.com").await;
    assert_eq!(app.v1_me(&tokens.access).await.status, 200);
    let (header, claims) = jwt_parts(&tokens.access);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    Signed { app, access: tokens.access, kid, claims }
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.to_owned());
    h
}

async fn a_wrong_signature_is_refused(backend: Backend) {
    let s = signed(backend).await;
    let mut bad = s.access.clone();
    let last = bad.pop().expect("non-empty");
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert_rejected(&s.app, &bad, "invalid_token").await;

    // Claims changed under the original signature.
    let mut parts: Vec<String> = s.access.split('.').map(str::to_owned).collect();
    let mut tampered = s.claims.clone();
    tampered["sub"] = json!(uuid::Uuid::new_v4().to_string());
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).expect("json"));
    assert_rejected(&s.app, &parts.join("."), "invalid_token").await;

    assert_rejected(&s.app, "a.b.c", "invalid_token").await;
    assert_rejected(&s.app, &"x".repeat(20_000), "invalid_token").await;
    assert_eq!(s.app.v1_me(&s.access).await.status, 200, "the genuine token still works");
}

async fn an_unknown_kid_or_foreign_key_is_refused(backend: Backend) {
    let s = signed(backend).await;
    let foreign = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        EncodingKey::from_ed_der(key.to_pkcs8_der().expect("der").as_bytes())
    };
    let unknown = forge(&header(Algorithm::EdDSA, "not-a-latchkey-kid"), &s.claims, &foreign);
    assert_rejected(&s.app, &unknown, "invalid_token").await;
    let impostor = forge(&header(Algorithm::EdDSA, &s.kid), &s.claims, &foreign);
    assert_rejected(&s.app, &impostor, "invalid_token").await;
}

async fn alg_none_is_refused(backend: Backend) {
    let s = signed(backend).await;
    for alg in ["none", "None", "NONE"] {
        let head = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "at+jwt", "kid": s.kid}).to_string());
        let body = URL_SAFE_NO_PAD.encode(s.claims.to_string());
        assert_rejected(&s.app, &format!("{head}.{body}."), "invalid_token").await;
        let signature = s.access.rsplit('.').next().expect("signature");
        assert_rejected(&s.app, &format!("{head}.{body}.{signature}"), "invalid_token").await;
    }
}

async fn hs256_keyed_with_the_public_key_is_refused(backend: Backend) {
    let s = signed(backend).await;
    let jwks = s.app.jwks().await.body;
    let x = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().expect("x")).expect("b64");
    let hs = header(Algorithm::HS256, &s.kid);
    for secret in [x.clone(), jwks.to_string().into_bytes(), jwks["keys"][0].to_string().into_bytes()] {
        assert_rejected(&s.app, &forge(&hs, &s.claims, &EncodingKey::from_secret(&secret)), "invalid_token").await;
    }
}

async fn a_revoked_session_is_refused(backend: Backend) {
    let s = signed(backend).await;
    assert_eq!(s.app.v1_sign_out(&s.access).await.status, 204);
    assert_rejected(&s.app, &s.access, "session_revoked").await;
}

async fn expired_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.access_token_ttl = Duration::from_secs(1)).await;
    app.v1_verified_user("gus@example.com").await;
    let tokens = app.v1_signed_in("gus@example.com").await;
    let (_, claims) = jwt_parts(&tokens.access);
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_rejected(&app, &tokens.access, "token_expired").await;
    // The refresh token still gets a fresh access token.
    assert_eq!(app.v1_refresh(&tokens.refresh).await.status, 200);
}

async fn tokens_of_another_issuer_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Same database, same secret, same keys, different LATCHKEY_PUBLIC_URL.
    let other = app.another_instance_with(|c| c.public_url = Some("https://elsewhere.example".into())).await;
    app.v1_verified_user("hal@example.com").await;
    let tokens = other.v1_signed_in("hal@example.com").await;
    assert_eq!(jwt_parts(&tokens.access).1["iss"], "https://elsewhere.example");
    assert_eq!(other.v1_me(&tokens.access).await.status, 200);
    assert_rejected(&app, &tokens.access, "invalid_token").await;
}

async fn rotated_keys_keep_verifying_for_one_generation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("ivy@example.com").await;
    let before = app.v1_signed_in("ivy@example.com").await;
    let old_kid = jwt_parts(&before.access).0["kid"].clone();

    let new_kid = app.rotate_keys();
    let jwks = app.jwks().await.body;
    let kids: Vec<&Value> = jwks["keys"].as_array().expect("keys").iter().map(|k| &k["kid"]).collect();
    assert_eq!(kids, [&json!(new_kid), &old_kid], "current first, then previous");
    assert_eq!(app.v1_me(&before.access).await.status, 200, "signed by the previous key: still valid");

    // A fresh instance signs with the new key, and the first instance verifies it.
    let second = app.another_instance().await;
    let after = second.v1_signed_in("ivy@example.com").await;
    assert_eq!(jwt_parts(&after.access).0["kid"], json!(new_kid));
    assert_eq!(app.v1_me(&after.access).await.status, 200);

    // Two rotations later the first key is gone, and so are its tokens.
    app.rotate_keys();
    let jwks = app.jwks().await.body;
    assert!(jwks["keys"].as_array().expect("keys").iter().all(|k| k["kid"] != old_kid));
    assert_rejected(&app, &before.access, "invalid_token").await;
}

/// PyJWT, given only the JWKS URL, verifies a token of each signing algorithm.
async fn a_jwks_verifier_in_another_language_accepts_latchkey_tokens(backend: Backend) {
    let python = std::env::var("LATCHKEY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pyjwt = std::process::Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pyjwt {
        if std::env::var("LATCHKEY_TEST_REQUIRE_PYJWT").is_ok_and(|v| v == "1") {
            panic!("LATCHKEY_TEST_REQUIRE_PYJWT=1 but `{python} -c 'import jwt, cryptography'` fails");
        }
        eprintln!("skipping the PyJWT test: install it with `pip install 'pyjwt[crypto]'`");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/jwks_verify.py");
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256, SigningAlgorithm::RS256] {
        let app = TestApp::spawn_with(backend, |c| c.jwt_alg = alg).await;
        app.v1_verified_user("jo@example.com").await;
        let tokens = app.v1_signed_in("jo@example.com").await;
        assert_eq!(jwt_parts(&tokens.access).0["alg"], alg.as_str());
        let jwks_url = app.url("/.well-known/jwks.json");
        for token in [&tokens.access, &tokens.id] {
            let out = tokio::process::Command::new(&python)
                .args([script, &jwks_url, token, &app.base, "v1"])
                .output()
                .await
                .expect("run python");
            assert!(out.status.success(), "{alg:?}: {}", String::from_utf8_lossy(&out.stderr));
            let claims: Value = serde_json::from_slice(&out.stdout).expect("claims");
            assert_eq!(claims, jwt_parts(token).1, "{alg:?}");
        }
        // And it refuses a token whose signature was tampered with.
        let mut bad = tokens.access.clone();
        let last = bad.pop().expect("non-empty");
        bad.push(if last == 'A' { 'B' } else { 'A' });
        let out = tokio::process::Command::new(&python)
            .args([script, &jwks_url, &bad, &app.base, "v1"])
            .output()
            .await
            .expect("run");
        assert!(!out.status.success(), "{alg:?}: PyJWT accepted a bad signature");
    }
}

on_both_backends!(
    a_wrong_signature_is_refused,
    an_unknown_kid_or_foreign_key_is_refused,
    alg_none_is_refused,
    hs256_keyed_with_the_public_key_is_refused,
    a_revoked_session_is_refused,
    expired_tokens_are_refused,
    tokens_of_another_issuer_are_refused,
    rotated_keys_keep_verifying_for_one_generation,
    a_jwks_verifier_in_another_language_accepts_latchkey_tokens,
);
