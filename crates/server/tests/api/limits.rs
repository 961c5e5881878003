//! Rate limits: brute force against one account is cut off in each surface's own shape, and
//! with Redis the count is shared by every instance.

use crate::helpers::{Backend, TestApp, redis_url};
use crate::on_both_backends;

async fn password_guessing_is_cut_off_in_the_surface_shape(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let email = format!("target-{}@example.com", uuid::Uuid::new_v4().simple());
    for _ in 0..10 {
        let guess = app.signin(&email, "guess-guess").await;
        assert_eq!(guess.status, 401, "{}", guess.body);
    }
    let cut_off = app.signin(&email, "guess-guess").await;
    assert!(cut_off.headers.get("retry-after").is_some());
    assert_eq!(cut_off.status, 429);
    assert_eq!(cut_off.body["errorType"], "TOO_MANY_REQUESTS");

    // The same account through v1: the same count, v1's shape.
    let through_v1 = app.v1_sign_in(&email, "guess-guess").await;
    assert_eq!(through_v1.status, 429);
    assert_eq!(through_v1.body["code"], "rate_limited");
    assert!(through_v1.body["retry_after"].as_u64().is_some_and(|s| s >= 1), "{}", through_v1.body);

    // Other accounts are unaffected.
    assert_eq!(app.v1_sign_in("other@example.com", "guess-guess").await.status, 401);
}

on_both_backends!(password_guessing_is_cut_off_in_the_surface_shape);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_limits_through_redis() {
    let Some(redis) = redis_url().await else { return };
    let a = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit = true;
        c.redis_url = Some(redis.clone().into());
    })
    .await;
    let b = a
        .another_instance_with(|c| {
            c.rate_limit = true;
            c.redis_url = Some(redis.clone().into());
        })
        .await;
    let email = format!("shared-{}@example.com", uuid::Uuid::new_v4().simple());
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        let guess = app.v1_sign_in(&email, "guess-guess").await;
        assert_eq!(guess.status, 401, "attempt {i}: {}", guess.body);
    }
    for app in [&a, &b] {
        let guess = app.v1_sign_in(&email, "guess-guess").await;
        assert_eq!(guess.status, 429, "{}", guess.body);
    }
}

/// The daily cap on wrong codes must not tell accounts apart: an attacker who asks for fresh
/// codes and guesses wrong (20 failures a day per account, across reissued codes) for an
/// address with a pending account and for one with no account sees the same answers, the
/// cut-off included.
async fn the_daily_code_failure_cap_tells_no_account_apart(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let pending = "pending@example.com";
    let signup = app.v1_signup(&serde_json::json!({"email": pending, "password": crate::helpers::PASSWORD})).await;
    assert_eq!(signup.status, 202);
    app.mail.next_mail(pending).await;
    let mut seen = Vec::new();
    for address in [pending, "nobody@example.com"] {
        let mut answers = Vec::new();
        let mut code = String::new();
        for _round in 0..4 {
            assert_eq!(app.v1_request_verification(address).await.status, 202);
            if address == pending {
                code = app.mail.next_mail(pending).await.code();
            }
            let guesses = ["111111", "222222", "333333", "444444", "555555", "666666"];
            for guess in guesses.into_iter().filter(|g| *g != code).take(5) {
                let answer = app.v1_verify_email(address, guess).await;
                answers.push((answer.status, answer.body["code"].clone()));
            }
        }
        let last = app.v1_verify_email(address, if code == "777777" { "888888" } else { "777777" }).await;
        answers.push((last.status, last.body["code"].clone()));
        seen.push(answers);
    }
    assert_eq!(seen[0].len(), 21);
    assert_eq!(seen[0][0], (400, serde_json::json!("invalid_code")));
    assert_eq!(seen[0][20], (429, serde_json::json!("rate_limited")), "{:?}", seen[0]);
    assert_eq!(seen[0], seen[1], "the same answers for a pending account and no account");
}

on_both_backends!(the_daily_code_failure_cap_tells_no_account_apart);
