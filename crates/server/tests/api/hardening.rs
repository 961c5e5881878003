//! The requests an attacker would send, and what they must get: no account enumeration by
//! answer or metric, no waiting on the mail relay, bounded passwords and hash queue, refresh
//! chains that cannot fork, rotated tokens purged without losing reuse detection, and a JWKS
//! that does not touch private keys per request.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ApiResponse, Backend, PASSWORD, TestApp, send, users_signup_body};
use crate::on_both_backends;

/// What a client can compare between two answers: status and body.
fn seen(response: &ApiResponse) -> (u16, Value) {
    (response.status, response.body.clone())
}

async fn wrong_codes_read_the_same_whatever_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // pending@ has a code waiting; verified@ has an account and no code; nobody@ has nothing.
    assert_eq!(app.v1_signup(&json!({"email": "pending@example.com", "password": PASSWORD})).await.status, 202);
    let pending_code = app.mail.next_mail("pending@example.com").await.code();
    app.v1_verified_user("verified@example.com").await;
    let wrong = if pending_code == "111111" { "222222" } else { "111111" };

    let answers: Vec<(u16, Value)> = [
        app.v1_verify_email("pending@example.com", wrong).await,
        app.v1_verify_email("verified@example.com", wrong).await,
        app.v1_verify_email("nobody@example.com", wrong).await,
    ]
    .iter()
    .map(seen)
    .collect();
    assert_eq!(answers[0].0, 400, "{:?}", answers[0]);
    assert_eq!(answers[0].1["code"], "invalid_code");
    assert!(answers.iter().all(|a| *a == answers[0]), "one answer for every account state: {answers:?}");

    assert_eq!(app.v1_forgot_password("verified@example.com").await.status, 202);
    let reset_code = app.mail.next_mail("verified@example.com").await.code();
    let wrong = if reset_code == "111111" { "222222" } else { "111111" };
    let answers: Vec<(u16, Value)> = [
        app.v1_reset_password("verified@example.com", wrong, "a new passphrase").await,
        app.v1_reset_password("pending@example.com", wrong, "a new passphrase").await,
        app.v1_reset_password("nobody@example.com", wrong, "a new passphrase").await,
    ]
    .iter()
    .map(seen)
    .collect();
    assert_eq!(answers[0].1["code"], "invalid_code");
    assert!(answers.iter().all(|a| *a == answers[0]), "one answer for every account state: {answers:?}");
}

async fn codes_go_to_the_stored_address_never_a_look_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("kevin@example.com").await;
    // KELVIN SIGN lower-cases to "k": the same account, but not the same mailbox.
    let look_alike = "\u{212A}evin@example.com";
    assert_eq!(app.v1_forgot_password(look_alike).await.status, 202);
    let mail = app.mail.next_mail("kevin@example.com").await;
    assert_eq!(mail.to, ["kevin@example.com"], "the account's stored address only");
    assert_eq!(app.mail.unread(look_alike), 0);
    assert_eq!(app.v1_reset_password("kevin@example.com", &mail.code(), "a new passphrase").await.status, 204);
}

async fn metrics_are_for_operators_and_tell_no_account_apart(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.trust_forwarded_for = true).await;
    let from = |ip: &str| app.request(Method::GET, "/metrics").header("x-forwarded-for", ip);
    let outside = send(from("203.0.113.5")).await;
    assert_eq!(outside.status, 404, "metrics are not on the public interface");
    assert_eq!(outside.body["code"], "not_found");
    let spoofed = send(from("127.0.0.1, 203.0.113.5")).await;
    assert_eq!(spoofed.status, 404, "the proxy's entry counts, not the client's claim");
    assert_eq!(app.metrics().await.status, 200, "loopback");

    app.v1_verified_user("known@example.com").await;
    assert_eq!(app.v1_forgot_password("known@example.com").await.status, 202);
    assert_eq!(app.v1_forgot_password("unknown@example.com").await.status, 202);
    assert_eq!(app.v1_request_verification("unknown@example.com").await.status, 202);
    assert_eq!(app.v1_signup(&json!({"email": "known@example.com", "password": PASSWORD})).await.status, 202);
    let text = app.metrics().await.text;
    for operation in ["request_password_reset", "resend_verification_quietly", "sign_up_quietly"] {
        let outcomes: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("latchkey_auth_outcomes_total") && l.contains(&format!("operation=\"{operation}\""))
            })
            .collect();
        assert!(!outcomes.is_empty(), "{operation} is counted");
        assert!(
            outcomes.iter().all(|l| l.contains("outcome=\"ok\"")),
            "{operation}: the same series for every account: {outcomes:?}"
        );
    }

    let allowed = TestApp::spawn_with(backend, |c| {
        c.trust_forwarded_for = true;
        c.metrics_allow = vec!["203.0.113.0/24".parse().expect("network")];
    })
    .await;
    let inside = ApiResponse::text(
        allowed.request(Method::GET, "/metrics").header("x-forwarded-for", "203.0.113.5").send().await.expect("send"),
    )
    .await;
    assert_eq!(inside.status, 200, "LATCHKEY_METRICS_ALLOW");
}

async fn no_answer_waits_for_the_mail_relay() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.v1_verified_user("slow@example.com").await;
    // From now on the relay keeps every reply back until released.
    app.mail.hold();
    let answered = tokio::time::timeout(Duration::from_secs(5), app.v1_forgot_password("slow@example.com")).await;
    assert_eq!(answered.expect("answered while the relay holds the mail").status, 202);
    let signed_up =
        tokio::time::timeout(Duration::from_secs(5), app.signup(&users_signup_body("new@example.com"))).await;
    assert_eq!(signed_up.expect("answered while the relay holds the mail").status, 201);
    app.mail.release();
    let code = app.mail.next_mail("slow@example.com").await.code();
    assert_eq!(app.v1_reset_password("slow@example.com", &code, "a new passphrase").await.status, 204);
    app.mail.next_mail("new@example.com").await.code();
}

async fn a_refused_mail_is_retried() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.mail.refuse_next(1);
    assert_eq!(app.v1_signup(&json!({"email": "retry@example.com", "password": PASSWORD})).await.status, 202);
    let code = app.mail.next_mail("retry@example.com").await.code();
    assert_eq!(app.v1_verify_email("retry@example.com", &code).await.status, 200);
}

async fn oversized_passwords_are_invalid_input_before_any_hashing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.v1_verified_user("big@example.com").await;
    let huge = "x".repeat(30_000);
    let v1 = app.v1_sign_in("big@example.com", &huge).await;
    assert_eq!(v1.status, 422, "{}", v1.body);
    assert_eq!(v1.body["code"], "invalid_input");
    assert_eq!(v1.body["errors"][0]["field"], "password");
    let users = app.signin("big@example.com", &"y".repeat(129)).await;
    assert_eq!(users.status, 422, "{}", users.body);
    assert_eq!(users.body["errorType"], "INPUT_VALIDATION_ERROR");
    let tokens = app.v1_signed_in("big@example.com").await;
    let reauth = app.v1_delete_me(&tokens.access, &huge).await;
    assert_eq!(reauth.status, 422, "{}", reauth.body);
    assert_eq!(app.v1_me(&tokens.access).await.status, 200, "nothing happened");
}

async fn a_flood_of_wrong_reauthentications_is_refused_at_once() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.rate_limit = true).await;
    app.v1_verified_user("flood@example.com").await;
    app.v1_verified_user("bystander@example.com").await;
    let tokens = app.v1_signed_in("flood@example.com").await;
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let request = app
            .request(Method::POST, "/v1/me/delete")
            .bearer_auth(&tokens.access)
            .json(&json!({"password": "not the password"}));
        flood.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    let bystander = app.v1_sign_in("bystander@example.com", PASSWORD).await;
    let mut statuses = Vec::new();
    while let Some(done) = flood.join_next().await {
        statuses.push(done.expect("task").expect("response"));
    }
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429 || **s == 503).count();
    assert!(evaluated <= 10, "at most the failure quota is hashed: {evaluated}");
    assert_eq!(evaluated + refused, 300, "{statuses:?}");
    assert_eq!(bystander.status, 200, "another user's sign-in completes during the flood: {}", bystander.body);
    assert_eq!(app.v1_me(&tokens.access).await.status, 200, "the account is still there");
}

async fn an_unverified_account_belongs_to_whoever_proves_the_mailbox(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let squatter = json!({"email": "mine@example.com", "password": "the squatter's password", "given_name": "Squat"});
    assert_eq!(app.v1_signup(&squatter).await.status, 202);
    let _ = app.mail.next_mail("mine@example.com").await;
    let owner = json!({"email": "Mine@example.com", "password": PASSWORD, "given_name": "Owner"});
    assert_eq!(app.v1_signup(&owner).await.status, 202, "the same answer");
    let code = app.mail.next_mail("mine@example.com").await.code();
    let verified = app.v1_verify_email("mine@example.com", &code).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["given_name"], "Owner");
    app.v1_signed_in("mine@example.com").await;
    assert_eq!(app.v1_sign_in("mine@example.com", "the squatter's password").await.status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email_normalized = $1", "mine@example.com").await, 1);
}

async fn a_forked_refresh_chain_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("fork@example.com").await;
    let r0 = app.v1_signed_in("fork@example.com").await.refresh;
    let r1 = app.v1_refresh(&r0).await.expect_status(200)["refresh_token"].as_str().expect("r1").to_owned();
    let r2 = app.v1_refresh(&r1).await.expect_status(200)["refresh_token"].as_str().expect("r2").to_owned();
    // r0 again, inside the grace window, after its successor r1 was used: a fork, so reuse.
    let forked = app.v1_refresh(&r0).await;
    assert_eq!(forked.status, 401, "{}", forked.body);
    assert_eq!(forked.body["code"], "refresh_token_reused");
    assert_eq!(app.v1_refresh(&r2).await.status, 401, "the whole session is revoked");
}

async fn rotated_refresh_rows_are_purged_and_a_replay_still_revokes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_window = Duration::from_millis(300)).await;
    app.v1_verified_user("purge@example.com").await;
    let r0 = app.v1_signed_in("purge@example.com").await.refresh;
    let r1 = app.v1_refresh(&r0).await.expect_status(200)["refresh_token"].as_str().expect("r1").to_owned();
    // The reuse window is wall-clock time on a running server.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let purged = app.auth.purge_expired(Duration::from_secs(24 * 3600)).await.expect("purge");
    assert_eq!(purged.refresh_tokens, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL AND $1 = $1", "").await, 0);
    let replay = app.v1_refresh(&r0).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert_eq!(replay.body["code"], "refresh_token_reused", "still recognised without its row");
    assert_eq!(app.v1_refresh(&r1).await.status, 401, "the session is revoked");
}

async fn the_jwks_is_served_from_the_cached_ring(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.jwks().await.expect_status(200);
    // Break the stored keys: a reload would now fail to decode them.
    assert!(app.execute("UPDATE signing_keys SET alg = 'broken' WHERE kid <> $1", "").await >= 1);
    for _ in 0..3 {
        assert_eq!(app.jwks().await.expect_status(200), before, "served without re-reading the private keys");
    }
}

async fn graceful_shutdown_finishes_requests_and_delivers_queued_mail() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    let (mail, port) = (app.mail.clone(), app.port);
    // The relay refuses the first attempt, so the code mail is still queued at shutdown.
    mail.refuse_next(1);
    let body = serde_json::to_vec(&users_signup_body("lou@example.com")).expect("json");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /api/users/signup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&body[..10]).await.expect("half a body");
    // Connections are accepted in order: once a later one is answered, this one is in.
    let mut probe = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.expect("probe");
    let mut probed = String::new();
    probe.read_to_string(&mut probed).await.expect("probe answer");
    assert!(probed.starts_with("HTTP/1.1 200"), "{probed}");
    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&body[10..]).await.expect("the rest");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "the in-flight request got its answer: {answer}");
    app.stop().await;
    assert_eq!(mail.unread("lou@example.com"), 1, "the queued mail went out before the process stopped");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the listener is closed after shutdown"
    );
}

mod single {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_answer_waits_for_the_mail_relay() {
        super::no_answer_waits_for_the_mail_relay().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_mail_is_retried() {
        super::a_refused_mail_is_retried().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_passwords_are_invalid_input_before_any_hashing() {
        super::oversized_passwords_are_invalid_input_before_any_hashing().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_wrong_reauthentications_is_refused_at_once() {
        super::a_flood_of_wrong_reauthentications_is_refused_at_once().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graceful_shutdown_finishes_requests_and_delivers_queued_mail() {
        super::graceful_shutdown_finishes_requests_and_delivers_queued_mail().await;
    }
}

on_both_backends!(
    wrong_codes_read_the_same_whatever_the_account,
    codes_go_to_the_stored_address_never_a_look_alike,
    metrics_are_for_operators_and_tell_no_account_apart,
    an_unverified_account_belongs_to_whoever_proves_the_mailbox,
    a_forked_refresh_chain_revokes_the_session,
    rotated_refresh_rows_are_purged_and_a_replay_still_revokes,
    the_jwks_is_served_from_the_cached_ring,
);
