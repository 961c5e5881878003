//! The `v1` surface: every route, sessions and tokens as a client sees them.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, cookie_value, json, jwt_parts, set_cookie};
use crate::on_both_backends;

pub const PASSWORD: &str = "correct horse battery";

/// A v1 client session: the tokens of one sign-in.
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub id: String,
}

/// Signs up and verifies `email` through v1.
pub async fn verified_user(app: &TestApp, email: &str) {
    let (status, body) =
        json(app.post("/v1/signup", &json!({"email": email, "password": PASSWORD, "given_name": "Val"})).await).await;
    assert_eq!(status, 202, "{body}");
    let code = app.mail.next_mail(email).await.code();
    let (status, body) = json(app.post("/v1/email/verification", &json!({"email": email, "code": code})).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email_verified"], true);
}

pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> Tokens {
    let request = app.client.post(app.url("/v1/sessions")).header("user-agent", "latchkey-tests/1.0");
    let response = request.json(&json!({"email": email, "password": password})).send().await.expect("request");
    let (status, body) = json(response).await;
    assert_eq!(status, 200, "{body}");
    Tokens {
        access: body["access_token"].as_str().expect("access_token").into(),
        refresh: body["refresh_token"].as_str().expect("refresh_token").into(),
        id: body["id_token"].as_str().expect("id_token").into(),
    }
}

pub async fn get_with(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let response = app.client.get(app.url(path)).bearer_auth(token).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn send_with(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let response = req.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_problem(body: &Value, status: u16, code: &str) {
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:latchkey:problem:{code}"), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
}

async fn sign_up_verify_sign_in_and_me(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Not verified yet: the right password gets email_not_verified, a wrong one does not.
    let (status, _) = json(
        app.post("/v1/signup", &json!({"email": "vic@example.com", "password": PASSWORD, "family_name": "V"})).await,
    )
    .await;
    assert_eq!(status, 202);
    let code = app.mail.next_mail("vic@example.com").await.code();
    let (status, body) =
        json(app.post("/v1/sessions", &json!({"email": "vic@example.com", "password": PASSWORD})).await).await;
    assert_eq!(status, 403);
    assert_problem(&body, 403, "email_not_verified");
    let response = app.post("/v1/sessions", &json!({"email": "vic@example.com", "password": "wrong password"})).await;
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let (status, body) = json(response).await;
    assert_problem(&body, 401, "invalid_credentials");
    assert_eq!(status, 401);

    let wrong = if code == "111111" { "222222" } else { "111111" };
    let (status, body) =
        json(app.post("/v1/email/verification", &json!({"email": "vic@example.com", "code": wrong})).await).await;
    assert_eq!(status, 400);
    assert_problem(&body, 400, "code_mismatch");
    assert_eq!(body["attempts_left"], 4);
    let (status, body) = json(
        app.post(
            "/v1/email/verification",
            &json!({"email": "vic@example.com", "code": code.parse::<u64>().expect("digits")}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["family_name"], "V");

    let tokens = sign_in(&app, "VIC@example.com", PASSWORD).await;
    let (header, claims) = jwt_parts(&tokens.access);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["aud"], "v1");
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 15 * 60);
    let (_, id_claims) = jwt_parts(&tokens.id);
    assert_eq!(id_claims["email"], "vic@example.com");
    assert_eq!(id_claims["email_verified"], true);
    assert_eq!(id_claims["family_name"], "V");
    assert_eq!(id_claims["sid"], claims["sid"]);
    assert!(tokens.refresh.len() >= 43, "at least 256 bits");

    let (status, me) = get_with(&app, "/v1/me", &tokens.access).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], "vic@example.com");
    assert_eq!(me["id"], claims["sub"]);
    let (status, body) = get_with(&app, "/v1/me", &tokens.id).await;
    assert_eq!(status, 401, "an ID token is not an access token");
    assert_problem(&body, 401, "invalid_token");
    let response = app.get("/v1/me").await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, body) = json(response).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "missing_token");
}

async fn sign_up_does_not_reveal_registered_addresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "wes@example.com").await;
    let (status, body) =
        json(app.post("/v1/signup", &json!({"email": "WES@example.com", "password": "another password"})).await).await;
    assert_eq!(status, 202, "the same answer as for a new address: {body}");
    let notice = app.mail.next_mail("wes@example.com").await;
    assert!(notice.subject().contains("Sign-up attempt"), "{}", notice.subject());
    sign_in(&app, "wes@example.com", PASSWORD).await;

    for path in ["/v1/email/verification/request", "/v1/password/forgot"] {
        let (status, _) = json(app.post(path, &json!({"email": "nobody@example.com"})).await).await;
        assert_eq!(status, 202, "{path}");
    }
    let (status, body) =
        json(app.post("/v1/email/verification/request", &json!({"email": "wes@example.com"})).await).await;
    assert_eq!(status, 202, "verified already: same answer: {body}");
    assert_eq!(app.mail.unread("nobody@example.com"), 0);
    assert_eq!(app.mail.unread("wes@example.com"), 0);
    let (status, body) =
        json(app.post("/v1/email/verification", &json!({"email": "nobody@example.com", "code": "123456"})).await).await;
    assert_eq!(status, 400);
    assert_problem(&body, 400, "no_code_pending");

    let (status, body) =
        json(app.post("/v1/signup", &json!({"email": "bad", "password": "short", "picture": 5})).await).await;
    assert_eq!(status, 422);
    assert_problem(&body, 422, "invalid_body");
    assert_eq!(body["errors"][0]["field"], "picture");
    let (status, body) = json(app.post("/v1/signup", &json!({"email": "bad", "password": "short"})).await).await;
    assert_eq!(status, 422);
    assert_problem(&body, 422, "invalid_input");
    let fields: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["email", "password"]);
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_window = Duration::from_millis(500)).await;
    verified_user(&app, "xia@example.com").await;
    let t0 = sign_in(&app, "xia@example.com", PASSWORD).await;

    let (status, body) = json(app.post("/v1/token/refresh", &json!({"refresh_token": t0.refresh})).await).await;
    assert_eq!(status, 200, "{body}");
    let t1_refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
    let t1_access = body["access_token"].as_str().expect("access").to_owned();
    assert_ne!(t1_refresh, t0.refresh, "rotated");
    assert_eq!(get_with(&app, "/v1/me", &t1_access).await.0, 200);

    // Replay of the rotated token after the grace window: the whole session is revoked, so the
    // legitimate holder (t1) is signed out too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, body) = json(app.post("/v1/token/refresh", &json!({"refresh_token": t0.refresh})).await).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "refresh_token_reused");
    let (status, body) = get_with(&app, "/v1/me", &t1_access).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "session_revoked");
    let (status, body) = json(app.post("/v1/token/refresh", &json!({"refresh_token": t1_refresh})).await).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "session_revoked");

    let (status, body) = json(app.post("/v1/token/refresh", &json!({"refresh_token": "made-up"})).await).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "invalid_token");
    let (status, body) = json(app.post("/v1/token/refresh", &json!({})).await).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "missing_token");
}

async fn concurrent_refreshes_with_one_token_share_one_successor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "yan@example.com").await;
    let t0 = sign_in(&app, "yan@example.com", PASSWORD).await;
    let body = json!({"refresh_token": t0.refresh});
    let responses = futures::future::join_all((0..10).map(|_| app.post("/v1/token/refresh", &body))).await;
    let mut successors = Vec::new();
    let mut accesses = Vec::new();
    for response in responses {
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "nobody is signed out: {body}");
        successors.push(body["refresh_token"].as_str().expect("refresh").to_owned());
        accesses.push(body["access_token"].as_str().expect("access").to_owned());
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "all ten got the same successor");
    for access in &accesses {
        assert_eq!(get_with(&app, "/v1/me", access).await.0, 200);
    }
    // The successor works and rotates in turn.
    let (status, _) = json(app.post("/v1/token/refresh", &json!({"refresh_token": successors[0]})).await).await;
    assert_eq!(status, 200);
}

async fn sessions_are_listed_and_revoked_one_or_all(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "zed@example.com").await;
    let phone = sign_in(&app, "zed@example.com", PASSWORD).await;
    let laptop = sign_in(&app, "zed@example.com", PASSWORD).await;
    let tablet = sign_in(&app, "zed@example.com", PASSWORD).await;
    assert_ne!(jwt_parts(&phone.access).1["sid"], jwt_parts(&laptop.access).1["sid"], "a new session per sign-in");

    let (status, list) = get_with(&app, "/v1/sessions", &laptop.access).await;
    assert_eq!(status, 200);
    let sessions = list["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    for s in sessions {
        for field in ["id", "created_at", "last_seen_at", "expires_at", "ip"] {
            assert!(s[field].is_string(), "{field} in {s}");
        }
        assert_eq!(s["user_agent"], "latchkey-tests/1.0", "{s}");
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
    }

    // Revoke the phone from the laptop.
    let phone_sid = jwt_parts(&phone.access).1["sid"].as_str().expect("sid").to_owned();
    let (status, _) = send_with(&app, Method::DELETE, &format!("/v1/sessions/{phone_sid}"), &laptop.access, None).await;
    assert_eq!(status, 204);
    assert_eq!(get_with(&app, "/v1/me", &phone.access).await.0, 401);
    let (status, body) =
        send_with(&app, Method::DELETE, &format!("/v1/sessions/{phone_sid}"), &laptop.access, None).await;
    assert_eq!(status, 404);
    assert_problem(&body, 404, "not_found");
    let (status, _) = send_with(&app, Method::DELETE, "/v1/sessions/not-a-uuid", &laptop.access, None).await;
    assert_eq!(status, 404);

    // Sign out this session only.
    let (status, _) = send_with(&app, Method::DELETE, "/v1/sessions/current", &laptop.access, None).await;
    assert_eq!(status, 204);
    assert_eq!(get_with(&app, "/v1/me", &laptop.access).await.0, 401);
    assert_eq!(get_with(&app, "/v1/me", &tablet.access).await.0, 200);

    // Sign out everywhere.
    let other = sign_in(&app, "zed@example.com", PASSWORD).await;
    let (status, _) = send_with(&app, Method::DELETE, "/v1/sessions", &tablet.access, None).await;
    assert_eq!(status, 204);
    assert_eq!(get_with(&app, "/v1/me", &tablet.access).await.0, 401);
    assert_eq!(get_with(&app, "/v1/me", &other.access).await.0, 401);
    let (status, _) = json(app.post("/v1/token/refresh", &json!({"refresh_token": other.refresh})).await).await;
    assert_eq!(status, 401);
}

async fn password_reset_revokes_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "amy@example.com").await;
    let before = sign_in(&app, "amy@example.com", PASSWORD).await;
    let (status, _) = json(app.post("/v1/password/forgot", &json!({"email": "amy@example.com"})).await).await;
    assert_eq!(status, 202);
    let mail = app.mail.next_mail("amy@example.com").await;
    assert_eq!(mail.subject(), "Your Latchkey password reset code");
    let code = mail.code();

    let (status, body) = json(
        app.post("/v1/password/reset", &json!({"email": "amy@example.com", "code": code, "new_password": "short"}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "new_password");
    let (status, body) = json(
        app.post(
            "/v1/password/reset",
            &json!({"email": "amy@example.com", "code": code, "new_password": "a brand new passphrase"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(get_with(&app, "/v1/me", &before.access).await.0, 401, "every session ended");
    let (status, _) =
        json(app.post("/v1/sessions", &json!({"email": "amy@example.com", "password": PASSWORD})).await).await;
    assert_eq!(status, 401, "the old password is gone");
    sign_in(&app, "amy@example.com", "a brand new passphrase").await;
    let (status, body) = json(
        app.post(
            "/v1/password/reset",
            &json!({"email": "amy@example.com", "code": code, "new_password": "yet another one"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "a code works once: {body}");
}

async fn password_change_keeps_this_session_and_ends_the_others(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "ben@example.com").await;
    let here = sign_in(&app, "ben@example.com", PASSWORD).await;
    let there = sign_in(&app, "ben@example.com", PASSWORD).await;
    let body = json!({"current_password": "not it", "new_password": "a new passphrase"});
    let (status, problem) = send_with(&app, Method::POST, "/v1/password/change", &here.access, Some(body)).await;
    assert_eq!(status, 401);
    assert_problem(&problem, 401, "invalid_credentials");
    let body = json!({"current_password": PASSWORD, "new_password": "a new passphrase"});
    let (status, _) = send_with(&app, Method::POST, "/v1/password/change", &here.access, Some(body)).await;
    assert_eq!(status, 204);
    assert_eq!(get_with(&app, "/v1/me", &here.access).await.0, 200);
    assert_eq!(get_with(&app, "/v1/me", &there.access).await.0, 401);
    sign_in(&app, "ben@example.com", "a new passphrase").await;
}

async fn email_change_commits_only_after_the_new_address_is_verified(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "cal@example.com").await;
    verified_user(&app, "taken@example.com").await;
    let t = sign_in(&app, "cal@example.com", PASSWORD).await;
    let (status, body) =
        send_with(&app, Method::POST, "/v1/email/change", &t.access, Some(json!({"new_email": "taken@example.com"})))
            .await;
    assert_eq!(status, 409);
    assert_problem(&body, 409, "email_taken");
    let (status, _) =
        send_with(&app, Method::POST, "/v1/email/change", &t.access, Some(json!({"new_email": "cal@new.example"})))
            .await;
    assert_eq!(status, 202);
    let code = app.mail.next_mail("cal@new.example").await.code();

    // Until confirmed, the old address is in force.
    assert_eq!(get_with(&app, "/v1/me", &t.access).await.1["email"], "cal@example.com");
    sign_in(&app, "cal@example.com", PASSWORD).await;
    let (status, _) =
        json(app.post("/v1/sessions", &json!({"email": "cal@new.example", "password": PASSWORD})).await).await;
    assert_eq!(status, 401);

    let (status, body) =
        send_with(&app, Method::POST, "/v1/email/change/confirm", &t.access, Some(json!({"code": code}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], "cal@new.example");
    assert_eq!(body["email_verified"], true);
    sign_in(&app, "cal@new.example", PASSWORD).await;
    let (status, _) =
        json(app.post("/v1/sessions", &json!({"email": "cal@example.com", "password": PASSWORD})).await).await;
    assert_eq!(status, 401);
}

async fn deleted_and_disabled_users_lose_their_sessions_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "dan@example.com").await;
    let t = sign_in(&app, "dan@example.com", PASSWORD).await;

    // Disabled by an operator, from another process.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env("LATCHKEY_DATABASE_URL", &app.database_url)
            .env("LATCHKEY_SECRET", crate::helpers::TEST_SECRET)
            .env("LATCHKEY_LOG", "warn")
            .output()
            .expect("run latchkey")
    };
    let out = run(&["users", "disable", "dan@example.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = get_with(&app, "/v1/me", &t.access).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "session_revoked");
    let (status, body) =
        json(app.post("/v1/sessions", &json!({"email": "dan@example.com", "password": PASSWORD})).await).await;
    assert_eq!(status, 403);
    assert_problem(&body, 403, "user_disabled");
    let out = run(&["users", "enable", "dan@example.com"]);
    assert!(out.status.success());
    let t = sign_in(&app, "dan@example.com", PASSWORD).await;

    // Deleted by the user.
    let (status, body) =
        send_with(&app, Method::POST, "/v1/me/delete", &t.access, Some(json!({"password": "wrong"}))).await;
    assert_eq!(status, 401);
    assert_problem(&body, 401, "invalid_credentials");
    let (status, _) =
        send_with(&app, Method::POST, "/v1/me/delete", &t.access, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, 204);
    assert_eq!(get_with(&app, "/v1/me", &t.access).await.0, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "dan@example.com").await, 0);
    let out = run(&["users", "disable", "dan@example.com"]);
    assert!(!out.status.success(), "no such user any more");
}

async fn cookie_mode_keeps_tokens_out_of_the_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "eli@example.com").await;
    let response =
        app.post("/v1/sessions", &json!({"email": "eli@example.com", "password": PASSWORD, "use_cookies": true})).await;
    let access = cookie_value(response.headers(), "lk_access").expect("access cookie");
    let refresh_set = set_cookie(response.headers(), "lk_refresh").expect("refresh cookie");
    assert!(refresh_set.contains("Path=/v1/token") && refresh_set.contains("HttpOnly"), "{refresh_set}");
    let refresh = cookie_value(response.headers(), "lk_refresh").expect("refresh cookie");
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    assert!(body["id_token"].is_string());

    let me =
        app.client.get(app.url("/v1/me")).header("cookie", format!("lk_access={access}")).send().await.expect("me");
    assert_eq!(me.status(), 200);
    let response =
        app.send_json(Method::POST, "/v1/token/refresh", &json!({}), Some(&format!("lk_refresh={refresh}"))).await;
    assert_eq!(response.status(), 200);
    let new_access = cookie_value(response.headers(), "lk_access").expect("rotated access cookie");
    assert!(cookie_value(response.headers(), "lk_refresh").is_some_and(|r| r != refresh), "rotated refresh cookie");
    let response = app
        .client
        .delete(app.url("/v1/sessions/current"))
        .header("cookie", format!("lk_access={new_access}"))
        .send()
        .await
        .expect("sign out");
    assert_eq!(response.status(), 204);
    assert!(set_cookie(response.headers(), "lk_access").is_some_and(|c| c.contains("Max-Age=0")));
}

async fn openapi_describes_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, doc) = json(app.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/signup", &["post"][..]),
        ("/v1/email/verification/request", &["post"]),
        ("/v1/email/verification", &["post"]),
        ("/v1/sessions", &["post", "get", "delete"]),
        ("/v1/sessions/current", &["delete"]),
        ("/v1/sessions/{id}", &["delete"]),
        ("/v1/token/refresh", &["post"]),
        ("/v1/me", &["get"]),
        ("/v1/me/delete", &["post"]),
        ("/v1/password/forgot", &["post"]),
        ("/v1/password/reset", &["post"]),
        ("/v1/password/change", &["post"]),
        ("/v1/email/change", &["post"]),
        ("/v1/email/change/confirm", &["post"]),
    ] {
        for method in methods {
            let op = &paths[path][*method];
            assert!(op.is_object(), "{method} {path} missing");
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: a success response");
            assert!(responses.keys().any(|s| s.starts_with('4')), "{method} {path}: an error response");
        }
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("Latchkey v1"), "the viewer embeds the document");
}

async fn bad_input_gets_problem_documents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    verified_user(&app, "kit@example.com").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let send = |method: Method, path: &str, content_type: &str, body: Vec<u8>| {
        client.request(method, app.url(path)).header("content-type", content_type).body(body).send()
    };
    for (status, code, response) in [
        (400, "invalid_body", send(Method::POST, "/v1/sessions", "application/json", b"{\"email\":".to_vec()).await),
        (400, "invalid_body", send(Method::POST, "/v1/sessions", "application/json", b"[]".to_vec()).await),
        (
            422,
            "invalid_body",
            send(Method::POST, "/v1/sessions", "application/json", b"{\"password\":[]}".to_vec()).await,
        ),
        (415, "unsupported_media_type", send(Method::POST, "/v1/sessions", "text/plain", b"{}".to_vec()).await),
        (413, "payload_too_large", send(Method::POST, "/v1/signup", "application/json", vec![b' '; 1024 * 1024]).await),
        (404, "not_found", send(Method::GET, "/v1/nothing-here", "application/json", Vec::new()).await),
        (405, "method_not_allowed", send(Method::PUT, "/v1/me", "application/json", Vec::new()).await),
    ] {
        let response = response.expect("send");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let (got, body) = json(response).await;
        assert_eq!(got, status, "{body}");
        assert_problem(&body, status, code);
    }
    sign_in(&app, "kit@example.com", PASSWORD).await;
}

on_both_backends!(
    bad_input_gets_problem_documents,
    sign_up_verify_sign_in_and_me,
    sign_up_does_not_reveal_registered_addresses,
    refresh_rotates_and_reuse_revokes_the_session,
    concurrent_refreshes_with_one_token_share_one_successor,
    sessions_are_listed_and_revoked_one_or_all,
    password_reset_revokes_every_session,
    password_change_keeps_this_session_and_ends_the_others,
    email_change_commits_only_after_the_new_address_is_verified,
    deleted_and_disabled_users_lose_their_sessions_at_once,
    cookie_mode_keeps_tokens_out_of_the_body,
    openapi_describes_every_route,
);
