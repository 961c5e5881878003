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
