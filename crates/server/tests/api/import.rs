//! Users brought from other services: their stored hashes, made by the original ecosystems'
//! libraries, sign in on the `v1` and `users` surfaces and are replaced by argon2id at the
//! first successful sign-in.

use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

/// Hashes with their plaintexts (`crates/core/tests/fixtures/make_foreign_hashes.py`: Python
/// bcrypt, Werkzeug, Django, argon2-cffi, hashlib.scrypt).
const FOREIGN: &str = include_str!("../../../core/tests/fixtures/foreign_hashes.jsonl");

struct Fixture {
    format: String,
    password: String,
    hash: String,
}

fn fixtures() -> Vec<Fixture> {
    FOREIGN
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("fixture line");
            let field = |name: &str| row[name].as_str().unwrap_or_else(|| panic!("{name} in {line}")).to_owned();
            Fixture { format: field("format"), password: field("password"), hash: field("hash") }
        })
        .collect()
}

async fn imported_hashes_sign_in_on_v1_and_users_and_are_upgraded_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The 10^6-iteration PBKDF2 rows (Werkzeug's and Django's defaults) are checked by core's
    // unit test; unoptimised test builds take seconds for each.
    let fixtures = fixtures();
    for (i, fixture) in fixtures.iter().filter(|f| !f.hash.contains("1000000$")).enumerate() {
        let email = format!("imported{i}@example.com");
        let what = format!("{} {}", fixture.format, fixture.hash);
        app.v1_verified_user(&email).await;

        // v1: a wrong password fails and leaves the imported hash; the right one signs in and
        // replaces it with Latchkey's argon2id.
        assert_eq!(app.store_password_hash(&email, &fixture.hash).await, 1);
        let wrong = app.v1_sign_in(&email, &format!("!{}", fixture.password)).await;
        assert_eq!(wrong.status, 401, "{what}: {}", wrong.body);
        assert_eq!(app.stored_password_hash(&email).await.as_deref(), Some(fixture.hash.as_str()), "{what}");
        let signed_in = app.v1_sign_in(&email, &fixture.password).await;
        assert_eq!(signed_in.status, 200, "{what}: {}", signed_in.body);
        let upgraded = app.stored_password_hash(&email).await.expect("a hash");
        assert!(upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{what}: {upgraded}");
        // Once: the next sign-in verifies the argon2id hash and keeps it.
        assert_eq!(app.v1_sign_in(&email, &fixture.password).await.status, 200, "{what}");
        assert_eq!(app.stored_password_hash(&email).await.as_deref(), Some(upgraded.as_str()), "{what}");

        // users (seed 001): the same, from the imported hash again.
        assert_eq!(app.store_password_hash(&email, &fixture.hash).await, 1);
        let wrong = app.signin(&email, &format!("!{}", fixture.password)).await;
        assert_eq!(wrong.status, 401, "{what}: {}", wrong.body);
        let signed_in = app.signin(&email, &fixture.password).await;
        assert_eq!(signed_in.status, 200, "{what}: {}", signed_in.body);
        let upgraded = app.stored_password_hash(&email).await.expect("a hash");
        assert!(upgraded.starts_with("$argon2id$"), "{what}: {upgraded}");
    }
    app.stop().await;
}

async fn a_stored_hash_of_absurd_cost_is_a_wrong_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("costly@example.com").await;
    let absurd = "$2b$31$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
    assert_eq!(app.store_password_hash("costly@example.com", absurd).await, 1);
    let started = std::time::Instant::now();
    let answer = app.v1_sign_in("costly@example.com", "any password at all").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the hash was not computed");
    assert_eq!(app.stored_password_hash("costly@example.com").await.as_deref(), Some(absurd));
    app.stop().await;
}

on_both_backends!(
    imported_hashes_sign_in_on_v1_and_users_and_are_upgraded_once,
    a_stored_hash_of_absurd_cost_is_a_wrong_password
);
