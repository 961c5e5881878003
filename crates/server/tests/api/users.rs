//! The `users` surface (API.md `users`, seed 001), row by row, as a client sees it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, jwt_parts, users_signup_body};
use crate::on_both_backends;

fn assert_error(body: &Value, error_type: &str) {
    assert_eq!(body["errorType"], error_type, "{body}");
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("errors array: {body}"));
    assert!(!errors.is_empty(), "{body}");
    assert!(errors.iter().all(|e| e["message"].is_string()), "{body}");
}

async fn signup_mails_a_code_and_stores_an_inactive_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let signed_up = app.signup(&users_signup_body("ada@example.com")).await;
    let body = signed_up.body;
    assert_eq!(signed_up.status, 201, "{body}");
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
    // Stored with the user: the SRP verifier of its password and the pending code.
    for table in [
        "SELECT COUNT(*) FROM srp_verifiers v JOIN users u ON u.id = v.user_id WHERE u.email = $1",
        "SELECT COUNT(*) FROM one_time_codes c JOIN users u ON u.id = c.user_id WHERE u.email = $1",
    ] {
        assert_eq!(app.count(table, "ada@example.com").await, 1, "{table}");
    }
}

async fn signup_reports_every_invalid_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rejected = app
        .signup(&json!({"firstName": "", "lastName": 7, "email": "not-an-email", "address": "x", "password": "short", "profileURL": 3}))
        .await;
    assert_eq!(rejected.status, 422);
    assert_error(&rejected.body, "INPUT_VALIDATION_ERROR");
    let mut fields: Vec<&str> = rejected.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["contactNumber", "email", "firstName", "lastName", "password", "profileURL"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE address = $1", "x").await, 0);
    assert_eq!(app.mail.unread("not-an-email"), 0);

    // One of the most common passwords is refused, with a message saying so.
    let mut body = users_signup_body("common@example.com");
    body["password"] = json!("password123");
    let rejected = app.signup(&body).await;
    assert_eq!(rejected.status, 422);
    assert_error(&rejected.body, "INPUT_VALIDATION_ERROR");
    assert_eq!(rejected.body["errors"][0]["field"], "password");
    assert!(
        rejected.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("most common")),
        "{}",
        rejected.body
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "common@example.com").await, 0);

    // Too long a password is rejected, never truncated.
    let mut body = users_signup_body("long@example.com");
    body["password"] = json!("x".repeat(129));
    let rejected = app.signup(&body).await;
    assert_eq!(rejected.status, 422);
    assert_eq!(rejected.body["errors"][0]["field"], "password");
}

async fn signup_with_a_taken_email_is_existing_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.users_signed_up("bob@example.com").await;
    let again = app.signup(&users_signup_body("BOB@Example.com")).await;
    assert_eq!(again.status, 422);
    assert_error(&again.body, "EXISTING_USER");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email_normalized = $1", "bob@example.com").await, 1);
}

async fn concurrent_signups_with_one_email_create_one_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = users_signup_body("race@example.com");
    let attempts = (0..20).map(|_| app.signup(&body));
    let responses = futures::future::join_all(attempts).await;
    let mut created = 0;
    for response in responses {
        match response.status {
            201 => created += 1,
            422 => assert_error(&response.body, "EXISTING_USER"),
            other => panic!("unexpected {other}: {}", response.body),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email_normalized = $1", "race@example.com").await, 1);
}

async fn signin_before_activation_is_refused_only_after_the_password_matched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.users_signed_up("cy@example.com").await;
    let wrong_password = app.signin("cy@example.com", "wrong password").await;
    assert_eq!(wrong_password.status, 401);
    assert_error(&wrong_password.body, "NOT_AUTHERIZED");
    let unknown = app.signin("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status, 401);
    assert_error(&unknown.body, "NOT_AUTHERIZED");
    let not_activated = app.signin("cy@example.com", PASSWORD).await;
    assert!(not_activated.set_cookie("session").is_none());
    assert_eq!(not_activated.status, 401);
    assert_error(&not_activated.body, "NOT_ACTIVATED_ACCOUNT");
    let invalid = app.signin("cy@", PASSWORD).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.body["errors"][0]["field"], "email");
}

async fn requestactivation_sends_a_new_code_and_kills_the_old_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = app.users_signed_up("dee@example.com").await;
    let requested = app.request_activation("dee@example.com").await;
    assert_eq!(requested.status, 200);
    assert_eq!(requested.body, json!({"message": "Send OTP Success. Please check your mail box"}));
    let new = app.mail.next_mail("dee@example.com").await.code();
    if old != new {
        let stale = app.activate("dee@example.com", &old).await;
        assert_eq!(stale.status, 422);
        assert_error(&stale.body, "NOT_AUTHERIZED");
    }
    // A digit string is accepted as well as a number.
    let activated = app.activate("dee@example.com", &new).await;
    assert_eq!(activated.status, 200);

    let again = app.request_activation("dee@example.com").await;
    assert_eq!(again.status, 422);
    assert_error(&again.body, "ALREADY_ACTIVATED_ACCOUNT");
    let unknown = app.request_activation("nobody@example.com").await;
    assert_eq!(unknown.status, 404);
    assert_error(&unknown.body, "NOT_FOUND");
    let not_an_address = app.send_json(Method::PATCH, "/api/users/requestactivation", &json!({"email": 42})).await;
    assert_eq!(not_an_address.status, 422);
    assert_eq!(not_an_address.body["errors"][0]["field"], "email");
}

async fn activate_checks_the_code_and_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let code = app.users_signed_up("eve@example.com").await;
    let wrong = if code == "111111" { 222_222 } else { 111_111 };

    let unknown = app.activate("nobody@example.com", wrong).await;
    assert_eq!(unknown.status, 404);
    assert_error(&unknown.body, "NOT_FOUND");
    let wrong_code = app.activate("eve@example.com", wrong).await;
    assert_eq!(wrong_code.status, 422);
    assert_error(&wrong_code.body, "NOT_AUTHERIZED");
    let no_code = app.send_json(Method::PATCH, "/api/users/activate", &json!({"email": "eve@example.com"})).await;
    assert_eq!(no_code.status, 422);
    assert_eq!(no_code.body["errors"][0]["field"], "otpCode");
    assert_eq!(app.activate("eve@example.com", true).await.status, 422);

    let activated = app.activate("eve@example.com", code.parse::<u64>().expect("digits")).await;
    let set = activated.set_cookie("session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http issuer: no Secure attribute: {set}");
    let token = activated.cookie("session").expect("value");
    let body = activated.body;
    assert_eq!(activated.status, 200);
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

    let again = app.activate("eve@example.com", &code).await;
    assert_eq!(again.status, 422);
    assert_error(&again.body, "ALREADY_ACTIVATED_ACCOUNT");
}

async fn five_wrong_codes_burn_the_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let code = app.users_signed_up("fay@example.com").await;
    let wrong = if code == "111111" { "222222" } else { "111111" };
    for _ in 0..5 {
        let guess = app.activate("fay@example.com", wrong).await;
        assert_eq!(guess.status, 422);
        assert_error(&guess.body, "NOT_AUTHERIZED");
    }
    let burnt = app.activate("fay@example.com", &code).await;
    assert_eq!(burnt.status, 404, "the right code no longer works once burnt");
    assert_error(&burnt.body, "NOT_FOUND");
}

async fn signin_currentuser_and_signout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.users_activated("gil@example.com").await;

    let signed_in = app.signin("Gil@Example.com", PASSWORD).await;
    let token = signed_in.cookie("session").expect("session cookie");
    let body = signed_in.body;
    assert_eq!(signed_in.status, 200);
    assert_eq!(body["email"], "gil@example.com");
    assert_eq!(body["activeStatus"], true);
    let cookie = format!("session={token}");

    let me = app.current_user(Some(&cookie), None).await.expect_status(200);
    assert_eq!(me, json!({"id": body["userId"], "email": "gil@example.com"}));
    assert_eq!(app.current_user(None, Some(&token)).await.expect_status(200), me, "bearer works too");
    assert_eq!(app.current_user(None, None).await.expect_status(200), Value::Null);
    assert_eq!(app.current_user(Some("session=garbage"), None).await.expect_status(200), Value::Null);
    assert_eq!(app.current_user(None, Some("not.a.jwt")).await.expect_status(200), Value::Null);

    let sid = jwt_parts(&token).1["sid"].as_str().expect("sid").to_owned();
    let signed_out = app.signout(Some(&cookie)).await;
    let cleared = signed_out.set_cookie("session").expect("cookie cleared");
    assert!(cleared.starts_with("session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!((signed_out.status, signed_out.body), (200, json!({})));

    // The old cookie and bearer are dead at once, and the database says why.
    assert_eq!(app.current_user(Some(&cookie), None).await.expect_status(200), Value::Null);
    assert_eq!(app.current_user(None, Some(&token)).await.expect_status(200), Value::Null);
    assert_eq!(app.revoked_sessions(&sid).await, 1);

    // Signing out without a session still answers 200 {}.
    let signed_out = app.signout(None).await;
    assert_eq!((signed_out.status, signed_out.body), (200, json!({})));

    // Each sign-in is its own session: another sign-in still works.
    assert_eq!(app.signin("gil@example.com", PASSWORD).await.status, 200);
}

async fn a_mail_failure_still_creates_the_user_who_can_ask_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.mail.refuse_next(1);
    let signed_up = app.signup(&users_signup_body("hal@example.com")).await;
    assert_eq!(signed_up.status, 201, "{}", signed_up.body);
    assert_eq!(app.mail.unread("hal@example.com"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "hal@example.com").await, 1);

    assert_eq!(app.request_activation("hal@example.com").await.status, 200);
    let code = app.mail.next_mail("hal@example.com").await.code();
    assert_eq!(app.activate("hal@example.com", &code).await.status, 200);
}

async fn bad_input_gets_the_surface_shape_and_loses_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cookie = app.users_activated("ida@example.com").await;

    let cases = [
        (422, app.send_raw(Method::POST, "/api/users/signup", "application/json", b"{\"email\":".to_vec()).await),
        (422, app.send_raw(Method::POST, "/api/users/signin", "application/json", b"[1,2,3]".to_vec()).await),
        (422, app.send_raw(Method::POST, "/api/users/signin", "application/json", b"null".to_vec()).await),
        (415, app.send_raw(Method::POST, "/api/users/signin", "text/plain", b"{}".to_vec()).await),
        (413, app.send_raw(Method::POST, "/api/users/signup", "application/json", vec![b' '; 1024 * 1024]).await),
        (
            422,
            app.send_raw(
                Method::PATCH,
                "/api/users/activate",
                "application/json",
                b"{\"email\":\"ida@example.com\",\"otpCode\":1e400}".to_vec(),
            )
            .await,
        ),
        (404, app.get("/api/users/nope").await),
        (405, app.get("/api/users/signin").await),
    ];
    for (expected, response) in cases {
        let body = response.body;
        assert_eq!(response.status, expected, "{body}");
        assert!(body["errorType"].is_string() && body["errors"].is_array(), "{body}");
    }
    let elsewhere = app.get("/definitely/not/here").await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.body["status"], 404, "outside the surfaces: problem+json");

    // Nothing stored was lost: the session and the account still work.
    assert_eq!(app.current_user(Some(&cookie), None).await.expect_status(200)["email"], "ida@example.com");
    assert_eq!(app.signin("ida@example.com", PASSWORD).await.status, 200);
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
