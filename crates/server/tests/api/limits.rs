//! Rate limits: brute force against one account is cut off in each surface's own shape, and
//! with Redis the count is shared by every instance.

use serde_json::json;

use crate::helpers::{Backend, TestApp, json, redis_url};
use crate::on_both_backends;

async fn password_guessing_is_cut_off_in_the_surface_shape(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let email = format!("target-{}@example.com", uuid::Uuid::new_v4().simple());
    for _ in 0..10 {
        let (status, body) =
            json(app.post("/api/users/signin", &json!({"email": email, "password": "guess-guess"})).await).await;
        assert_eq!(status, 401, "{body}");
    }
    let response = app.post("/api/users/signin", &json!({"email": email, "password": "guess-guess"})).await;
    assert!(response.headers().get("retry-after").is_some());
    let (status, body) = json(response).await;
    assert_eq!(status, 429);
    assert_eq!(body["errorType"], "TOO_MANY_REQUESTS");

    // The same account through v1: the same count, v1's shape.
    let (status, body) =
        json(app.post("/v1/sessions", &json!({"email": email, "password": "guess-guess"})).await).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "rate_limited");
    assert!(body["retry_after"].as_u64().is_some_and(|s| s >= 1), "{body}");

    // Other accounts are unaffected.
    let (status, _) =
        json(app.post("/v1/sessions", &json!({"email": "other@example.com", "password": "guess-guess"})).await).await;
    assert_eq!(status, 401);
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
    let guess = json!({"email": email, "password": "guess-guess"});
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, body) = json(app.post("/v1/sessions", &guess).await).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    for app in [&a, &b] {
        let (status, body) = json(app.post("/v1/sessions", &guess).await).await;
        assert_eq!(status, 429, "{body}");
    }
}
