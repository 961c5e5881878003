//! The `users` surface (API.md `users`, seed 001), row by row, as a client sees it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, cookie_value, json, jwt_parts, set_cookie};
use crate::on_both_backends;

const PASSWORD: &str = "correct horse battery";

fn signup_body(email: &str) -> Value {
    json!({
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": email,
        "contactNumber": "+44 20 7946 0000",
        "address": "12 St James's Square, London",
        "password": PASSWORD,
        "profileURL": "https://example.com/ada.png"
    })
}

/// Signs up and returns the mailed code.
async fn sign_up(app: &TestApp, email: &str) -> String {
    let (status, body) = json(app.post("/api/users/signup", &signup_body(email)).await).await;
    assert_eq!(status, 201, "{body}");
    app.mail.next_mail(email).await.code()
}

/// Signs up, activates and returns the session cookie (`session=<jwt>`).
async fn activated(app: &TestApp, email: &str) -> String {
    let code = sign_up(app, email).await;
    let response = app
        .patch("/api/users/activate", &json!({"email": email, "otpCode": code.parse::<u64>().expect("digits")}))
        .await;
    assert_eq!(response.status(), 200);
    format!("session={}", cookie_value(response.headers(), "session").expect("session cookie"))
}

fn assert_error(body: &Value, error_type: &str) {
    assert_eq!(body["errorType"], error_type, "{body}");
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("errors array: {body}"));
    assert!(!errors.is_empty(), "{body}");
    assert!(errors.iter().all(|e| e["message"].is_string()), "{body}");
}

async fn current_user(app: &TestApp, cookie: Option<&str>, bearer: Option<&str>) -> Value {
    let mut req = app.client.get(app.url("/api/users/currentuser"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let (status, body) = json(req.send().await.expect("request")).await;
    assert_eq!(status, 200);
    body
}

async fn signup_mails_a_code_and_stores_an_inactive_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = json(app.post("/api/users/signup", &signup_body("ada@example.com")).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["firstName"], "Ada");
    assert_eq!(body["lastName"], "Lovelace");
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["contactNumber"], "+44 20 7946 0000");
    assert_eq!(body["address"], "12 St James's Square, London");
    assert_eq!(body["profileURL"], "https://example.com/ada.png");
    assert_eq!(body["activeStatus"], false);
    assert!(uuid::Uuid::parse_str(body["userId"].as_str().expect("userId")).is_ok());
    assert!(body.get("password").is_none(), "the password never comes back");

    let mail = app.mail.next_mail("ada@example.com").await;
    assert_eq!(mail.subject(), "Your Latchkey verification code");
    let code = mail.code();
    assert_eq!(code.len(), 6);
    assert_ne!(&code[..1], "0");

    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "ada@example.com").await, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM users WHERE email = $1 AND password_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%'",
            "ada@example.com"
        )
        .await,
        1,
        "stored as argon2id with the documented parameters"
    );
}

async fn signup_reports_every_invalid_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = json(
        app.post("/api/users/signup", &json!({"firstName": "", "lastName": 7, "email": "not-an-email", "address": "x", "password": "short", "profileURL": 3}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_error(&body, "INPUT_VALIDATION_ERROR");
    let mut fields: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["contactNumber", "email", "firstName", "lastName", "password", "profileURL"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE address = $1", "x").await, 0);
    assert_eq!(app.mail.unread("not-an-email"), 0);

    // Too long a password is rejected, never truncated.
    let mut body = signup_body("long@example.com");
    body["password"] = json!("x".repeat(129));
    let (status, body) = json(app.post("/api/users/signup", &body).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "password");
}

async fn signup_with_a_taken_email_is_existing_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sign_up(&app, "bob@example.com").await;
    let (status, body) = json(app.post("/api/users/signup", &signup_body("BOB@Example.com")).await).await;
    assert_eq!(status, 422);
    assert_error(&body, "EXISTING_USER");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email_normalized = $1", "bob@example.com").await, 1);
}

async fn concurrent_signups_with_one_email_create_one_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = signup_body("race@example.com");
    let attempts = (0..20).map(|_| app.post("/api/users/signup", &body));
    let responses = futures::future::join_all(attempts).await;
    let mut created = 0;
    for response in responses {
        let (status, body) = json(response).await;
        match status {
            201 => created += 1,
            422 => assert_error(&body, "EXISTING_USER"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email_normalized = $1", "race@example.com").await, 1);
}

async fn signin_before_activation_is_refused_only_after_the_password_matched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sign_up(&app, "cy@example.com").await;
    let (status, body) =
        json(app.post("/api/users/signin", &json!({"email": "cy@example.com", "password": "wrong password"})).await)
            .await;
    assert_eq!(status, 401);
    assert_error(&body, "NOT_AUTHERIZED");
    let (status, body) =
        json(app.post("/api/users/signin", &json!({"email": "nobody@example.com", "password": PASSWORD})).await).await;
    assert_eq!(status, 401);
    assert_error(&body, "NOT_AUTHERIZED");
    let response = app.post("/api/users/signin", &json!({"email": "cy@example.com", "password": PASSWORD})).await;
    assert!(set_cookie(response.headers(), "session").is_none());
    let (status, body) = json(response).await;
    assert_eq!(status, 401);
    assert_error(&body, "NOT_ACTIVATED_ACCOUNT");
    let (status, body) =
        json(app.post("/api/users/signin", &json!({"email": "cy@", "password": PASSWORD})).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "email");
}

async fn requestactivation_sends_a_new_code_and_kills_the_old_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = sign_up(&app, "dee@example.com").await;
    let (status, body) =
        json(app.patch("/api/users/requestactivation", &json!({"email": "dee@example.com"})).await).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"message": "Send OTP Success. Please check your mail box"}));
    let new = app.mail.next_mail("dee@example.com").await.code();
    if old != new {
        let (status, body) =
            json(app.patch("/api/users/activate", &json!({"email": "dee@example.com", "otpCode": old})).await).await;
        assert_eq!(status, 422);
        assert_error(&body, "NOT_AUTHERIZED");
    }
    // A digit string is accepted as well as a number.
    let response = app.patch("/api/users/activate", &json!({"email": "dee@example.com", "otpCode": new})).await;
    assert_eq!(response.status(), 200);

    let (status, body) =
        json(app.patch("/api/users/requestactivation", &json!({"email": "dee@example.com"})).await).await;
    assert_eq!(status, 422);
    assert_error(&body, "ALREADY_ACTIVATED_ACCOUNT");
    let (status, body) =
        json(app.patch("/api/users/requestactivation", &json!({"email": "nobody@example.com"})).await).await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");
    let (status, body) = json(app.patch("/api/users/requestactivation", &json!({"email": 42})).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "email");
}

async fn activate_checks_the_code_and_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let code = sign_up(&app, "eve@example.com").await;
    let wrong = if code == "111111" { 222_222 } else { 111_111 };

    let (status, body) =
        json(app.patch("/api/users/activate", &json!({"email": "nobody@example.com", "otpCode": wrong})).await).await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");
    let (status, body) =
        json(app.patch("/api/users/activate", &json!({"email": "eve@example.com", "otpCode": wrong})).await).await;
    assert_eq!(status, 422);
    assert_error(&body, "NOT_AUTHERIZED");
    let (status, body) = json(app.patch("/api/users/activate", &json!({"email": "eve@example.com"})).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "otpCode");
    let (status, _) =
        json(app.patch("/api/users/activate", &json!({"email": "eve@example.com", "otpCode": true})).await).await;
    assert_eq!(status, 422);

    let response = app
        .patch(
            "/api/users/activate",
            &json!({"email": "eve@example.com", "otpCode": code.parse::<u64>().expect("digits")}),
        )
        .await;
    let set = set_cookie(response.headers(), "session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http issuer: no Secure attribute: {set}");
    let token = cookie_value(response.headers(), "session").expect("value");
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["activeStatus"], true);
    assert_eq!(body["email"], "eve@example.com");

    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());
    assert_eq!(claims["sub"], body["userId"]);
    assert_eq!(claims["iss"], app.base);
    for claim in ["aud", "exp", "iat", "jti", "sid", "tid"] {
        assert!(!claims[claim].is_null(), "{claim} in {claims}");
    }
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 30 * 86_400, "the session JWT lives as long as the session");

    let (status, body) =
        json(app.patch("/api/users/activate", &json!({"email": "eve@example.com", "otpCode": code})).await).await;
    assert_eq!(status, 422);
    assert_error(&body, "ALREADY_ACTIVATED_ACCOUNT");
}

async fn five_wrong_codes_burn_the_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let code = sign_up(&app, "fay@example.com").await;
    let wrong = if code == "111111" { "222222" } else { "111111" };
    for _ in 0..5 {
        let (status, body) =
            json(app.patch("/api/users/activate", &json!({"email": "fay@example.com", "otpCode": wrong})).await).await;
        assert_eq!(status, 422);
        assert_error(&body, "NOT_AUTHERIZED");
    }
    let (status, body) =
        json(app.patch("/api/users/activate", &json!({"email": "fay@example.com", "otpCode": code})).await).await;
    assert_eq!(status, 404, "the right code no longer works once burnt");
    assert_error(&body, "NOT_FOUND");
}

async fn signin_currentuser_and_signout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    activated(&app, "gil@example.com").await;

    let response = app.post("/api/users/signin", &json!({"email": "Gil@Example.com", "password": PASSWORD})).await;
    let token = cookie_value(response.headers(), "session").expect("session cookie");
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["email"], "gil@example.com");
    assert_eq!(body["activeStatus"], true);
    let cookie = format!("session={token}");

    let me = current_user(&app, Some(&cookie), None).await;
    assert_eq!(me, json!({"id": body["userId"], "email": "gil@example.com"}));
    assert_eq!(current_user(&app, None, Some(&token)).await, me, "bearer works too");
    assert_eq!(current_user(&app, None, None).await, Value::Null);
    assert_eq!(current_user(&app, Some("session=garbage"), None).await, Value::Null);
    assert_eq!(current_user(&app, None, Some("not.a.jwt")).await, Value::Null);

    let sid = jwt_parts(&token).1["sid"].as_str().expect("sid").to_owned();
    let response = app.send_json(Method::POST, "/api/users/signout", &json!({}), Some(&cookie)).await;
    let cleared = set_cookie(response.headers(), "session").expect("cookie cleared");
    assert!(cleared.starts_with("session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let (status, body) = json(response).await;
    assert_eq!((status, body), (200, json!({})));

    // The old cookie and bearer are dead at once, and the database says why.
    assert_eq!(current_user(&app, Some(&cookie), None).await, Value::Null);
    assert_eq!(current_user(&app, None, Some(&token)).await, Value::Null);
    let revoked = match backend {
        Backend::Sqlite => {
            app.count(
                "SELECT COUNT(*) FROM sessions WHERE lower(hex(id)) = replace($1, '-', '') AND revoked_at IS NOT NULL",
                &sid,
            )
            .await
        }
        Backend::Postgres => {
            app.count("SELECT COUNT(*) FROM sessions WHERE id = $1::uuid AND revoked_at IS NOT NULL", &sid).await
        }
    };
    assert_eq!(revoked, 1);

    // Signing out without a session still answers 200 {}.
    let (status, body) = json(app.post("/api/users/signout", &json!({})).await).await;
    assert_eq!((status, body), (200, json!({})));

    // Each sign-in is its own session: another sign-in still works.
    let response = app.post("/api/users/signin", &json!({"email": "gil@example.com", "password": PASSWORD})).await;
    assert_eq!(response.status(), 200);
}

async fn a_mail_failure_still_creates_the_user_who_can_ask_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.mail.refuse_next(1);
    let (status, body) = json(app.post("/api/users/signup", &signup_body("hal@example.com")).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.mail.unread("hal@example.com"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "hal@example.com").await, 1);

    let (status, _) = json(app.patch("/api/users/requestactivation", &json!({"email": "hal@example.com"})).await).await;
    assert_eq!(status, 200);
    let code = app.mail.next_mail("hal@example.com").await.code();
    let response = app.patch("/api/users/activate", &json!({"email": "hal@example.com", "otpCode": code})).await;
    assert_eq!(response.status(), 200);
}

async fn bad_input_gets_the_surface_shape_and_loses_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cookie = activated(&app, "ida@example.com").await;

    // A fresh connection per request: the server answers an oversized body before reading
    // all of it and closes that connection, which a pooled client could try to reuse.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let raw = |method: Method, path: &str, content_type: &str, body: Vec<u8>| {
        client.request(method, app.url(path)).header("content-type", content_type).body(body).send()
    };
    let cases: Vec<(u16, reqwest::Response)> = vec![
        (422, raw(Method::POST, "/api/users/signup", "application/json", b"{\"email\":".to_vec()).await.expect("send")),
        (422, raw(Method::POST, "/api/users/signin", "application/json", b"[1,2,3]".to_vec()).await.expect("send")),
        (422, raw(Method::POST, "/api/users/signin", "application/json", b"null".to_vec()).await.expect("send")),
        (415, raw(Method::POST, "/api/users/signin", "text/plain", b"{}".to_vec()).await.expect("send")),
        (413, raw(Method::POST, "/api/users/signup", "application/json", vec![b' '; 1024 * 1024]).await.expect("send")),
        (
            422,
            raw(
                Method::PATCH,
                "/api/users/activate",
                "application/json",
                b"{\"email\":\"ida@example.com\",\"otpCode\":1e400}".to_vec(),
            )
            .await
            .expect("send"),
        ),
        (404, app.get("/api/users/nope").await),
        (405, app.get("/api/users/signin").await),
    ];
    for (expected, response) in cases {
        let (status, body) = json(response).await;
        assert_eq!(status, expected, "{body}");
        assert!(body["errorType"].is_string() && body["errors"].is_array(), "{body}");
    }
    let (status, body) = json(app.get("/definitely/not/here").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404, "outside the surfaces: problem+json");

    // Nothing stored was lost: the session and the account still work.
    assert_eq!(current_user(&app, Some(&cookie), None).await["email"], "ida@example.com");
    let response = app.post("/api/users/signin", &json!({"email": "ida@example.com", "password": PASSWORD})).await;
    assert_eq!(response.status(), 200);
}

on_both_backends!(
    signup_mails_a_code_and_stores_an_inactive_user,
    signup_reports_every_invalid_field,
    signup_with_a_taken_email_is_existing_user,
    concurrent_signups_with_one_email_create_one_user,
    signin_before_activation_is_refused_only_after_the_password_matched,
    requestactivation_sends_a_new_code_and_kills_the_old_one,
    activate_checks_the_code_and_signs_in,
    five_wrong_codes_burn_the_code,
    signin_currentuser_and_signout,
    a_mail_failure_still_creates_the_user_who_can_ask_again,
    bad_input_gets_the_surface_shape_and_loses_nothing,
);
