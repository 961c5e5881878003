//! The `v1` surface: every route, sessions and tokens as a client sees them.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, V1Auth, jwt_parts};
use crate::on_both_backends;

fn assert_problem(body: &Value, status: u16, code: &str) {
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:latchkey:problem:{code}"), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
}

async fn sign_up_verify_sign_in_and_me(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Not verified yet: the right password gets email_not_verified, a wrong one does not.
    let signed_up = app.v1_signup(&json!({"email": "vic@example.com", "password": PASSWORD, "family_name": "V"})).await;
    assert_eq!(signed_up.status, 202);
    let code = app.mail.next_mail("vic@example.com").await.code();
    let unverified = app.v1_sign_in("vic@example.com", PASSWORD).await;
    assert_eq!(unverified.status, 403);
    assert_problem(&unverified.body, 403, "email_not_verified");
    let wrong_password = app.v1_sign_in("vic@example.com", "wrong password").await;
    assert_eq!(wrong_password.headers["content-type"], "application/problem+json");
    assert_problem(&wrong_password.body, 401, "invalid_credentials");
    assert_eq!(wrong_password.status, 401);

    let wrong = if code == "111111" { "222222" } else { "111111" };
    let mismatch = app.v1_verify_email("vic@example.com", wrong).await;
    assert_eq!(mismatch.status, 400);
    assert_problem(&mismatch.body, 400, "invalid_code");
    assert!(mismatch.body.get("attempts_left").is_none(), "unauthenticated routes tell nothing more");
    let verified = app.v1_verify_email("vic@example.com", code.parse::<u64>().expect("digits")).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["family_name"], "V");

    let tokens = app.v1_signed_in("VIC@example.com").await;
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

    let me = app.v1_me(&tokens.access).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["email"], "vic@example.com");
    assert_eq!(me.body["id"], claims["sub"]);
    let with_id_token = app.v1_me(&tokens.id).await;
    assert_eq!(with_id_token.status, 401, "an ID token is not an access token");
    assert_problem(&with_id_token.body, 401, "invalid_token");
    let anonymous = app.v1_me(V1Auth::Anonymous).await;
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    assert_eq!(anonymous.status, 401);
    assert_problem(&anonymous.body, 401, "missing_token");
}

async fn sign_up_does_not_reveal_registered_addresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("wes@example.com").await;
    let again = app.v1_signup(&json!({"email": "WES@example.com", "password": "another password"})).await;
    assert_eq!(again.status, 202, "the same answer as for a new address: {}", again.body);
    let notice = app.mail.next_mail("wes@example.com").await;
    assert!(notice.subject().contains("Sign-up attempt"), "{}", notice.subject());
    app.v1_signed_in("wes@example.com").await;

    assert_eq!(app.v1_request_verification("nobody@example.com").await.status, 202, "/v1/email/verification/request");
    assert_eq!(app.v1_forgot_password("nobody@example.com").await.status, 202, "/v1/password/forgot");
    let verified_already = app.v1_request_verification("wes@example.com").await;
    assert_eq!(verified_already.status, 202, "verified already: same answer: {}", verified_already.body);
    assert_eq!(app.mail.unread("nobody@example.com"), 0);
    assert_eq!(app.mail.unread("wes@example.com"), 0);
    let unknown = app.v1_verify_email("nobody@example.com", "123456").await;
    assert_eq!(unknown.status, 400);
    assert_problem(&unknown.body, 400, "invalid_code");

    let wrong_type = app.v1_signup(&json!({"email": "bad", "password": "short", "picture": 5})).await;
    assert_eq!(wrong_type.status, 422);
    assert_problem(&wrong_type.body, 422, "invalid_body");
    assert_eq!(wrong_type.body["errors"][0]["field"], "picture");
    let invalid = app.v1_signup(&json!({"email": "bad", "password": "short"})).await;
    assert_eq!(invalid.status, 422);
    assert_problem(&invalid.body, 422, "invalid_input");
    let fields: Vec<&str> =
        invalid.body["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["email", "password"]);
    let common = app.v1_signup(&json!({"email": "common@example.com", "password": "qwertyuiop"})).await;
    assert_problem(&common.body, 422, "invalid_input");
    assert_eq!(common.body["errors"][0]["field"], "password");
    assert!(common.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("most common")), "{}", common.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "common@example.com").await, 0);
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_window = Duration::from_millis(500)).await;
    app.v1_verified_user("xia@example.com").await;
    let t0 = app.v1_signed_in("xia@example.com").await;

    let refreshed = app.v1_refresh(&t0.refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let t1_refresh = refreshed.body["refresh_token"].as_str().expect("refresh").to_owned();
    let t1_access = refreshed.body["access_token"].as_str().expect("access").to_owned();
    assert_ne!(t1_refresh, t0.refresh, "rotated");
    assert_eq!(app.v1_me(&t1_access).await.status, 200);

    // Replay of the rotated token after the grace window: the whole session is revoked, so the
    // legitimate holder (t1) is signed out too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let replayed = app.v1_refresh(&t0.refresh).await;
    assert_eq!(replayed.status, 401);
    assert_problem(&replayed.body, 401, "refresh_token_reused");
    let me = app.v1_me(&t1_access).await;
    assert_eq!(me.status, 401);
    assert_problem(&me.body, 401, "session_revoked");
    let successor = app.v1_refresh(&t1_refresh).await;
    assert_eq!(successor.status, 401);
    assert_problem(&successor.body, 401, "session_revoked");

    let made_up = app.v1_refresh("made-up").await;
    assert_eq!(made_up.status, 401);
    assert_problem(&made_up.body, 401, "invalid_token");
    let no_token = app.v1_refresh_with_cookie(None).await;
    assert_eq!(no_token.status, 401);
    assert_problem(&no_token.body, 401, "missing_token");
}

async fn concurrent_refreshes_with_one_token_share_one_successor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("yan@example.com").await;
    let t0 = app.v1_signed_in("yan@example.com").await;
    let responses = futures::future::join_all((0..10).map(|_| app.v1_refresh(&t0.refresh))).await;
    let mut successors = Vec::new();
    let mut accesses = Vec::new();
    for response in responses {
        let body = response.body;
        assert_eq!(response.status, 200, "nobody is signed out: {body}");
        successors.push(body["refresh_token"].as_str().expect("refresh").to_owned());
        accesses.push(body["access_token"].as_str().expect("access").to_owned());
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "all ten got the same successor");
    for access in &accesses {
        assert_eq!(app.v1_me(access).await.status, 200);
    }
    // The successor works and rotates in turn.
    assert_eq!(app.v1_refresh(&successors[0]).await.status, 200);
}

async fn sessions_are_listed_and_revoked_one_or_all(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("zed@example.com").await;
    let phone = app.v1_signed_in("zed@example.com").await;
    let laptop = app.v1_signed_in("zed@example.com").await;
    let tablet = app.v1_signed_in("zed@example.com").await;
    assert_ne!(jwt_parts(&phone.access).1["sid"], jwt_parts(&laptop.access).1["sid"], "a new session per sign-in");

    let list = app.v1_sessions(&laptop.access).await;
    assert_eq!(list.status, 200);
    let sessions = list.body["sessions"].as_array().expect("sessions");
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
    let phone_sid = phone.sid();
    assert_eq!(app.v1_revoke_session(&laptop.access, &phone_sid).await.status, 204);
    assert_eq!(app.v1_me(&phone.access).await.status, 401);
    let again = app.v1_revoke_session(&laptop.access, &phone_sid).await;
    assert_eq!(again.status, 404);
    assert_problem(&again.body, 404, "not_found");
    assert_eq!(app.v1_revoke_session(&laptop.access, "not-a-uuid").await.status, 404);

    // Sign out this session only.
    assert_eq!(app.v1_sign_out(&laptop.access).await.status, 204);
    assert_eq!(app.v1_me(&laptop.access).await.status, 401);
    assert_eq!(app.v1_me(&tablet.access).await.status, 200);

    // Sign out everywhere.
    let other = app.v1_signed_in("zed@example.com").await;
    assert_eq!(app.v1_sign_out_everywhere(&tablet.access).await.status, 204);
    assert_eq!(app.v1_me(&tablet.access).await.status, 401);
    assert_eq!(app.v1_me(&other.access).await.status, 401);
    assert_eq!(app.v1_refresh(&other.refresh).await.status, 401);
}

async fn password_reset_revokes_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("amy@example.com").await;
    let before = app.v1_signed_in("amy@example.com").await;
    assert_eq!(app.v1_forgot_password("amy@example.com").await.status, 202);
    let mail = app.mail.next_mail("amy@example.com").await;
    assert_eq!(mail.subject(), "Your Latchkey password reset code");
    let code = mail.code();

    let too_short = app.v1_reset_password("amy@example.com", &code, "short").await;
    assert_eq!(too_short.status, 422);
    assert_eq!(too_short.body["errors"][0]["field"], "new_password");
    let common = app.v1_reset_password("amy@example.com", &code, "12345678").await;
    assert_eq!((common.status, &common.body["errors"][0]["field"]), (422, &json!("new_password")), "{}", common.body);
    let reset = app.v1_reset_password("amy@example.com", &code, "a brand new passphrase").await;
    assert_eq!(reset.status, 204, "{}", reset.body);
    assert_eq!(app.v1_me(&before.access).await.status, 401, "every session ended");
    assert_eq!(app.v1_sign_in("amy@example.com", PASSWORD).await.status, 401, "the old password is gone");
    app.v1_signed_in_with("amy@example.com", "a brand new passphrase").await;
    let reused = app.v1_reset_password("amy@example.com", &code, "yet another one").await;
    assert_eq!(reused.status, 400, "a code works once: {}", reused.body);
}

async fn password_change_keeps_this_session_and_ends_the_others(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("ben@example.com").await;
    let here = app.v1_signed_in("ben@example.com").await;
    let there = app.v1_signed_in("ben@example.com").await;
    let refused = app.v1_change_password(&here.access, "not it", "a new passphrase").await;
    assert_eq!(refused.status, 401);
    assert_problem(&refused.body, 401, "invalid_credentials");
    assert_eq!(app.v1_change_password(&here.access, PASSWORD, "a new passphrase").await.status, 204);
    assert_eq!(app.v1_me(&here.access).await.status, 200);
    assert_eq!(app.v1_me(&there.access).await.status, 401);
    app.v1_signed_in_with("ben@example.com", "a new passphrase").await;
}

async fn email_change_commits_only_after_the_new_address_is_verified(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("cal@example.com").await;
    app.v1_verified_user("taken@example.com").await;
    let t = app.v1_signed_in("cal@example.com").await;
    let other_device = app.v1_signed_in("cal@example.com").await;

    // The current password is required; a wrong or missing one sends nothing.
    let wrong = app.v1_change_email(&t.access, "not my password", "cal@new.example").await;
    assert_eq!(wrong.status, 401);
    assert_problem(&wrong.body, 401, "invalid_credentials");
    let missing = app.send_json(Method::POST, "/v1/email/change", &json!({"new_email": "cal@new.example"})).await;
    assert_eq!(missing.status, 401, "no token, no password: {}", missing.body);
    assert_eq!(app.mail.unread("cal@new.example"), 0);

    // A taken address is accepted like a free one; the conflict shows at confirmation.
    let taken = app.v1_change_email(&t.access, PASSWORD, "taken@example.com").await;
    assert_eq!(taken.status, 202, "{}", taken.body);
    let taken_code = app.mail.next_mail("taken@example.com").await.code();
    let conflict = app.v1_confirm_email_change(&t.access, &taken_code).await;
    assert_eq!(conflict.status, 409);
    assert_problem(&conflict.body, 409, "email_taken");

    assert_eq!(app.v1_change_email(&t.access, PASSWORD, "cal@new.example").await.status, 202);
    let code = app.mail.next_mail("cal@new.example").await.code();

    // Until confirmed, the old address is in force.
    assert_eq!(app.v1_me(&t.access).await.body["email"], "cal@example.com");
    app.v1_signed_in("cal@example.com").await;
    assert_eq!(app.v1_sign_in("cal@new.example", PASSWORD).await.status, 401);

    let confirmed = app.v1_confirm_email_change(&t.access, &code).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["email"], "cal@new.example");
    assert_eq!(confirmed.body["email_verified"], true);
    let notice = app.mail.next_mail("cal@example.com").await;
    assert!(notice.body().contains("cal@new.example"), "the old address learns where the account went");
    assert_eq!(app.v1_me(&t.access).await.status, 200, "this session stays");
    assert_eq!(app.v1_me(&other_device.access).await.status, 401, "the other sessions end");
    app.v1_signed_in("cal@new.example").await;
    assert_eq!(app.v1_sign_in("cal@example.com", PASSWORD).await.status, 401);
}

async fn deleted_and_disabled_users_lose_their_sessions_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("dan@example.com").await;
    let t = app.v1_signed_in("dan@example.com").await;

    // Disabled by an operator, from another process.
    let out = app.latchkey_cli(&["users", "disable", "dan@example.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let me = app.v1_me(&t.access).await;
    assert_eq!(me.status, 401);
    assert_problem(&me.body, 401, "session_revoked");
    let disabled = app.v1_sign_in("dan@example.com", PASSWORD).await;
    assert_eq!(disabled.status, 403);
    assert_problem(&disabled.body, 403, "user_disabled");
    let out = app.latchkey_cli(&["users", "enable", "dan@example.com"]);
    assert!(out.status.success());
    let t = app.v1_signed_in("dan@example.com").await;

    // Deleted by the user.
    let refused = app.v1_delete_me(&t.access, "wrong").await;
    assert_eq!(refused.status, 401);
    assert_problem(&refused.body, 401, "invalid_credentials");
    assert_eq!(app.v1_delete_me(&t.access, PASSWORD).await.status, 204);
    assert_eq!(app.v1_me(&t.access).await.status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "dan@example.com").await, 0);
    let out = app.latchkey_cli(&["users", "disable", "dan@example.com"]);
    assert!(!out.status.success(), "no such user any more");
}

async fn cookie_mode_keeps_tokens_out_of_the_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("eli@example.com").await;
    let signed_in = app.v1_sign_in_with_cookies("eli@example.com", PASSWORD).await;
    let access = signed_in.cookie("lk_access").expect("access cookie");
    let refresh_set = signed_in.set_cookie("lk_refresh").expect("refresh cookie");
    assert!(refresh_set.contains("Path=/v1/token") && refresh_set.contains("HttpOnly"), "{refresh_set}");
    let refresh = signed_in.cookie("lk_refresh").expect("refresh cookie");
    let body = signed_in.body;
    assert_eq!(signed_in.status, 200);
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    assert!(body["id_token"].is_string());

    assert_eq!(app.v1_me(V1Auth::Cookie(&format!("lk_access={access}"))).await.status, 200);
    let refreshed = app.v1_refresh_with_cookie(Some(&format!("lk_refresh={refresh}"))).await;
    assert_eq!(refreshed.status, 200);
    let new_access = refreshed.cookie("lk_access").expect("rotated access cookie");
    assert!(refreshed.cookie("lk_refresh").is_some_and(|r| r != refresh), "rotated refresh cookie");
    let signed_out = app.v1_sign_out(V1Auth::Cookie(&format!("lk_access={new_access}"))).await;
    assert_eq!(signed_out.status, 204);
    assert!(signed_out.set_cookie("lk_access").is_some_and(|c| c.contains("Max-Age=0")));
}

async fn openapi_describes_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let openapi = app.openapi().await;
    assert_eq!(openapi.status, 200);
    let doc = openapi.body;
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
    let docs = app.docs("").await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains("swagger-ui-bundle.js"), "the viewer's page: {}", docs.text);
    let boot = app.docs("swagger-initializer.js").await;
    assert!(boot.text.contains("\"url\": \"/openapi.json\""), "the viewer reads this document: {}", boot.text);
}

async fn bad_input_gets_problem_documents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("kit@example.com").await;
    for (status, code, response) in [
        (
            400,
            "invalid_body",
            app.send_raw(Method::POST, "/v1/sessions", "application/json", b"{\"email\":".to_vec()).await,
        ),
        (400, "invalid_body", app.send_raw(Method::POST, "/v1/sessions", "application/json", b"[]".to_vec()).await),
        (
            422,
            "invalid_body",
            app.send_raw(Method::POST, "/v1/sessions", "application/json", b"{\"password\":[]}".to_vec()).await,
        ),
        (415, "unsupported_media_type", app.send_raw(Method::POST, "/v1/sessions", "text/plain", b"{}".to_vec()).await),
        (
            413,
            "payload_too_large",
            app.send_raw(Method::POST, "/v1/signup", "application/json", vec![b' '; 1024 * 1024]).await,
        ),
        (404, "not_found", app.send_raw(Method::GET, "/v1/nothing-here", "application/json", Vec::new()).await),
        (405, "method_not_allowed", app.send_raw(Method::PUT, "/v1/me", "application/json", Vec::new()).await),
    ] {
        assert_eq!(response.headers["content-type"], "application/problem+json");
        let body = response.body;
        assert_eq!(response.status, status, "{body}");
        assert_problem(&body, status, code);
    }
    app.v1_signed_in("kit@example.com").await;
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
