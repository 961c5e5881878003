//! The `projects` surface end to end (API.md `projects`, seed 002): owners, their API keys,
//! accounts in each owner's tenant, and the isolation between tenants.

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ApiResponse, Backend, PASSWORD, TestApp, captured_logs, jwt_parts, send, users_signup_body};
use crate::on_both_backends;

/// The surface's error shape with `status`.
fn assert_error(response: &ApiResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.body["success"], false, "{}", response.body);
    assert_eq!(response.body["sucess"], false, "{}", response.body);
    assert!(response.body["error"].as_str().is_some_and(|m| !m.is_empty()), "{}", response.body);
    assert_eq!(response.body.as_object().map(|o| o.len()), Some(3), "{}", response.body);
}

fn assert_uuid(value: &Value) -> String {
    let text = value.as_str().unwrap_or_else(|| panic!("not a string: {value}"));
    uuid::Uuid::parse_str(text).unwrap_or_else(|_| panic!("not a UUID: {text}"));
    text.to_owned()
}

fn assert_rfc3339(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("not a string: {value}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|_| panic!("not RFC 3339: {text}"));
}

/// The seed's flow: an owner signs up and gets a key, signs in; the key creates an account
/// and signs it in.
async fn the_seed_flow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let signed_up = app.projects_signup("verte.fra@example.com", PASSWORD).await.expect_status(201);
    assert_eq!(signed_up["success"], true);
    let user = &signed_up["createdUser"];
    let owner = assert_uuid(&user["ID"]);
    assert_rfc3339(&user["CreatedAt"]);
    assert_rfc3339(&user["UpdatedAt"]);
    assert_eq!(user["DeletedAt"], Value::Null);
    assert_eq!(user["email"], "verte.fra@example.com");
    assert_eq!(user["password"], "");
    let key = user["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("lk_") && key.len() == 46, "{key}");

    // Only a keyed hash of the key is stored; its first characters are the listing's hint.
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys WHERE hint = $1", &key[..9]).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys WHERE hint = $1", &key).await, 0);

    let login = app.projects_login("verte.fra@example.com", PASSWORD).await.expect_status(200);
    assert_eq!(login["success"], true);
    assert_eq!(login["userId"], owner.as_str());
    let (_, claims) = jwt_parts(login["token"].as_str().expect("token"));
    assert_eq!(claims["sub"], owner.as_str());
    assert_eq!(claims["tid"], "00000000-0000-0000-0000-000000000002", "owners live in their own tenant");

    let created = app.projects_account_signup(&owner, Some(&key), "new2@example.com").await.expect_status(201);
    assert_eq!((&created["success"], &created["sucess"]), (&json!(true), &json!(true)));
    let account = &created["createdAccount"];
    let account_id = assert_uuid(&account["ID"]);
    assert_rfc3339(&account["CreatedAt"]);
    assert_rfc3339(&account["UpdatedAt"]);
    assert_eq!(account["DeletedAt"], Value::Null);
    assert_eq!(account["username"], "new2@example.com");
    assert_eq!(account["password"], "");
    assert_eq!(account["ownerID"], owner.as_str());
    assert_uuid(&account["key"]);
    assert!(!created.to_string().contains(&key[3..]), "the key's text is never echoed");
    let token = account["token"].as_str().expect("token");
    let (_, claims) = jwt_parts(token);
    assert_eq!(claims["sub"], account_id.as_str());
    let tenant = claims["tid"].as_str().expect("tid").to_owned();
    assert!(!tenant.ends_with("000000000001") && !tenant.ends_with("000000000002"), "a tenant of its own: {tenant}");

    // Accounts need no verification: sign-in works at once, with a fresh token.
    let again = app.projects_account_login(&owner, Some(&key), "NEW2@example.com", PASSWORD).await.expect_status(200);
    assert_eq!((&again["success"], &again["sucess"]), (&json!(true), &json!(true)));
    assert_eq!(again["createdAccount"]["ID"], account_id.as_str());
    assert_eq!(again["createdAccount"]["ownerID"], owner.as_str());
    let fresh = again["createdAccount"]["token"].as_str().expect("token");
    assert_ne!(fresh, token);
    assert_eq!(jwt_parts(fresh).1["tid"], tenant.as_str());
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND $1 = $1", "").await, 3);

    // No key, token or password reached the log.
    let logs = captured_logs();
    for secret in [&key[3..], token, fresh, login["token"].as_str().expect("token"), PASSWORD] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

/// Every error row of API.md's table, in the surface's shape.
async fn every_error_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.projects_owner("owner@example.com").await;

    assert_error(&app.projects_signup("owner@example.com", PASSWORD).await, 409);
    assert_error(&app.projects_signup("OWNER@example.com", "another password").await, 409);
    assert_error(&app.projects_signup("not-an-email", PASSWORD).await, 422);
    assert_error(&app.projects_signup("short@example.com", "verte").await, 422);
    assert_error(&app.projects_signup("common@example.com", "iloveyou123").await, 422);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "common@example.com").await, 0);
    assert_error(
        &app.send_json(Method::POST, "/projects/api/users/signup", &json!({"email": "x@example.com"})).await,
        422,
    );

    assert_error(&app.projects_login("owner@example.com", "wrong password").await, 401);
    assert_error(&app.projects_login("nobody@example.com", PASSWORD).await, 401);
    assert_error(&app.projects_login("owner@example.com", &"x".repeat(200)).await, 422);

    let id = owner.id.as_str();
    let key = Some(owner.key.as_str());
    // Missing or wrong key: 401, before anything else is looked at.
    assert_error(&app.projects_account_signup(id, None, "a@example.com").await, 401);
    assert_error(&app.projects_account_signup(id, Some("aQ8{71D7"), "a@example.com").await, 401);
    assert_error(&app.projects_account_signup(id, Some(&format!("{}x", owner.key)), "a@example.com").await, 401);
    assert_error(&app.projects_account_login(id, None, "a@example.com", PASSWORD).await, 401);
    // No such owner: 404.
    let stranger = uuid::Uuid::new_v4().to_string();
    assert_error(&app.projects_account_signup(&stranger, key, "a@example.com").await, 404);
    assert_error(&app.projects_account_signup("1", key, "a@example.com").await, 404);
    assert_error(&app.projects_account_login(&stranger, key, "a@example.com", PASSWORD).await, 404);
    // Invalid input: 422; taken: 409.
    assert_error(&app.projects_account_signup(id, key, "not-an-email").await, 422);
    assert_error(&send(app.projects_account_request(id, "signup", key, "a@example.com", "short")).await, 422);
    app.projects_account_signup(id, key, "a@example.com").await.expect_status(201);
    assert_error(&app.projects_account_signup(id, key, "A@example.com").await, 409);
    // Sign-in: unknown account and wrong password alike.
    assert_error(&app.projects_account_login(id, key, "a@example.com", "wrong password").await, 401);
    assert_error(&app.projects_account_login(id, key, "b@example.com", PASSWORD).await, 401);
    assert_eq!(app.projects_account_login(id, key, "a@example.com", PASSWORD).await.status, 200);
}

/// Malformed JSON, wrong types, arrays, oversized bodies, other media types, unknown routes
/// and methods: 4xx in the surface's shape.
async fn bad_input_is_answered_in_the_surface_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.projects_owner("shape@example.com").await;
    let signup = "/projects/api/users/signup";
    let account = format!("/projects/api/users/{}/accounts/signup", owner.id);
    for path in [signup, account.as_str()] {
        let raw = |body: &str| app.send_raw(Method::POST, path, "application/json", body.as_bytes().to_vec());
        let with_key = |ct: &str, body: Vec<u8>| {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
            client.post(app.url(path)).header("content-type", ct).header("key", &owner.key).body(body)
        };
        if path == signup {
            assert_error(&raw("{\"email\":").await, 400);
            assert_error(&raw("[1,2,3]").await, 400);
            assert_error(&raw("null").await, 400);
            assert_error(&raw("{\"email\": 7, \"password\": [\"x\"]}").await, 422);
            assert_error(&app.send_raw(Method::POST, path, "text/plain", b"{}".to_vec()).await, 415);
            assert_error(&app.send_raw(Method::POST, path, "application/json", vec![b' '; 70 * 1024]).await, 413);
        } else {
            assert_error(&send(with_key("application/json", b"{\"email\":".to_vec())).await, 400);
            assert_error(&send(with_key("application/json", b"[]".to_vec())).await, 400);
            assert_error(&send(with_key("application/json", b"{\"email\": true}".to_vec())).await, 422);
            assert_error(&send(with_key("text/plain", b"{}".to_vec())).await, 415);
            assert_error(&send(with_key("application/json", vec![b' '; 70 * 1024])).await, 413);
        }
    }
    assert_error(&app.get("/projects/api/users/nowhere").await, 404);
    assert_error(&app.get("/projects/api/users").await, 404);
    assert_error(&app.get("/projects/api/users/").await, 404);
    assert_error(&app.get("/projects/api/users/%FF%FE/keys").await, 404);
    assert_error(&app.send_json(Method::POST, "/projects/api/users/%FF/accounts/signup", &json!({})).await, 404);
    assert_error(&app.get("/projects/api/users/signup").await, 405);
    assert_error(&app.send_json(Method::PUT, &account, &json!({})).await, 405);
    assert_error(&app.get(&format!("/projects/api/users/{}/accounts/signup/extra", owner.id)).await, 404);
}

/// Tenants are isolated: the same email in two tenants is two users; a password, a key or a
/// token of one tenant never works in another.
async fn tenants_are_isolated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.projects_owner("a@owners.example.com").await;
    let b = app.projects_owner("b@owners.example.com").await;

    let in_a = app.projects_account(&a, "same@example.com").await;
    // Not in B until created there, and then with a password of its own.
    assert_error(&app.projects_account_login(&b.id, Some(&b.key), "same@example.com", PASSWORD).await, 401);
    let in_b =
        send(app.projects_account_request(&b.id, "signup", Some(&b.key), "same@example.com", "b's own password"))
            .await
            .expect_status(201);
    assert_ne!(in_a["createdAccount"]["ID"], in_b["createdAccount"]["ID"]);
    assert_error(&app.projects_account_login(&b.id, Some(&b.key), "same@example.com", PASSWORD).await, 401);
    assert_eq!(app.projects_account_login(&a.id, Some(&a.key), "same@example.com", PASSWORD).await.status, 200);
    let b_login = app.projects_account_login(&b.id, Some(&b.key), "same@example.com", "b's own password").await;
    assert_eq!(b_login.status, 200);

    // A's key with B's id in the URL: 401, on every account route.
    assert_error(&app.projects_account_signup(&b.id, Some(&a.key), "new@example.com").await, 401);
    assert_error(&app.projects_account_login(&b.id, Some(&a.key), "same@example.com", "b's own password").await, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "new@example.com").await, 0);

    // A's owner token on B's key routes, and account tokens on any key route: 401.
    assert_error(&app.projects_keys(Method::GET, &b.id, "", Some(&a.token)).await, 401);
    assert_error(&app.projects_keys(Method::POST, &b.id, "", Some(&a.token)).await, 401);
    let account_token = in_a["createdAccount"]["token"].as_str().expect("token");
    assert_error(&app.projects_keys(Method::GET, &a.id, "", Some(account_token)).await, 401);
    let account_id = in_a["createdAccount"]["ID"].as_str().expect("ID");
    assert_error(&app.projects_keys(Method::GET, account_id, "", Some(account_token)).await, 401);

    // Tokens of projects tenants are refused by the default tenant's surfaces.
    for token in [account_token, a.token.as_str()] {
        assert_eq!(app.current_user(None, Some(token)).await.body, Value::Null);
        assert_eq!(app.v1_me(token).await.status, 401);
    }

    // An owner's email in the default tenant is someone else altogether.
    assert_eq!(app.signup(&users_signup_body("a@owners.example.com")).await.status, 201);
    assert_eq!(app.signup(&users_signup_body("same@example.com")).await.status, 201);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "same@example.com").await, 3);
}

/// An owner lists, creates and revokes keys; a revoked key stops at once, on every instance.
async fn keys_rotate_without_downtime(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other_instance = app.another_instance().await;
    let owner = app.projects_owner("rotate@example.com").await;
    let token = Some(owner.token.as_str());

    let listed = app.projects_keys(Method::GET, &owner.id, "", token).await.expect_status(200);
    assert_eq!(listed["success"], true);
    let keys = listed["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let first_id = assert_uuid(&keys[0]["ID"]);
    assert_eq!(keys[0]["hint"], &owner.key[..9]);
    assert_eq!((&keys[0]["LastUsedAt"], &keys[0]["RevokedAt"]), (&Value::Null, &Value::Null));
    assert!(!listed.to_string().contains(&owner.key), "a listing never shows a key");

    let created = app.projects_keys(Method::POST, &owner.id, "", token).await.expect_status(201);
    let second = created["key"]["key"].as_str().expect("new key").to_owned();
    let second_id = assert_uuid(&created["key"]["ID"]);
    assert_ne!(second, owner.key);

    // Both keys work meanwhile, on both instances.
    app.projects_account_signup(&owner.id, Some(&owner.key), "one@example.com").await.expect_status(201);
    other_instance.projects_account_signup(&owner.id, Some(&second), "two@example.com").await.expect_status(201);
    let listed = app.projects_keys(Method::GET, &owner.id, "", token).await.expect_status(200);
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(2));
    assert_rfc3339(&listed["keys"][0]["LastUsedAt"]);

    // Revoke the first: refused at once by both instances; the second goes on.
    let revoked = app.projects_keys(Method::DELETE, &owner.id, &format!("/{first_id}"), token).await;
    assert_eq!(revoked.expect_status(200), json!({"success": true}));
    for instance in [&app, &other_instance] {
        assert_error(
            &instance.projects_account_login(&owner.id, Some(&owner.key), "one@example.com", PASSWORD).await,
            401,
        );
        assert_eq!(
            instance.projects_account_login(&owner.id, Some(&second), "one@example.com", PASSWORD).await.status,
            200
        );
    }
    let listed = app.projects_keys(Method::GET, &owner.id, "", token).await.expect_status(200);
    assert_rfc3339(&listed["keys"][0]["RevokedAt"]);
    assert_eq!(listed["keys"][1]["RevokedAt"], Value::Null);

    // Revoking again, an unknown key or something that is no id: 404.
    assert_error(&app.projects_keys(Method::DELETE, &owner.id, &format!("/{first_id}"), token).await, 404);
    let unknown = format!("/{}", uuid::Uuid::new_v4());
    assert_error(&app.projects_keys(Method::DELETE, &owner.id, &unknown, token).await, 404);
    assert_error(&app.projects_keys(Method::DELETE, &owner.id, "/not-an-id", token).await, 404);

    // Another owner cannot touch this owner's keys, even with the key id.
    let stranger = app.projects_owner("stranger@example.com").await;
    let path = format!("/{second_id}");
    assert_error(&app.projects_keys(Method::DELETE, &owner.id, &path, Some(&stranger.token)).await, 401);
    assert_error(&app.projects_keys(Method::DELETE, &stranger.id, &path, Some(&stranger.token)).await, 404);
    assert_eq!(app.projects_account_login(&owner.id, Some(&second), "one@example.com", PASSWORD).await.status, 200);

    // Without a token, or with a key where a token belongs: 401.
    assert_error(&app.projects_keys(Method::GET, &owner.id, "", None).await, 401);
    assert_error(&app.projects_keys(Method::GET, &owner.id, "", Some(&second)).await, 401);
    assert_error(&app.projects_keys(Method::GET, "not-an-id", "", token).await, 401);

    // At most ten active keys: the eleventh waits for a revocation.
    for _ in 0..9 {
        app.projects_keys(Method::POST, &owner.id, "", token).await.expect_status(201);
    }
    assert_error(&app.projects_keys(Method::POST, &owner.id, "", token).await, 422);
    assert_eq!(app.projects_keys(Method::DELETE, &owner.id, &format!("/{second_id}"), token).await.status, 200);
    app.projects_keys(Method::POST, &owner.id, "", token).await.expect_status(201);
}

/// Twenty concurrent sign-ups with one email give exactly one account, and twenty owner
/// sign-ups with one email exactly one owner (with one tenant).
async fn concurrent_sign_ups_give_exactly_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.projects_owner("race-owner@example.com").await;
    let accounts = (0..20).map(|_| {
        send(app.projects_account_request(&owner.id, "signup", Some(&owner.key), "race@example.com", PASSWORD))
    });
    let answers = futures::future::join_all(accounts).await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
    for answer in answers.iter().filter(|a| a.status != 201) {
        assert_error(answer, 409);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "race@example.com").await, 1);

    let owners = (0..20).map(|_| send(app.projects_signup_request("twenty@example.com", PASSWORD)));
    let answers = futures::future::join_all(owners).await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
    for answer in answers.iter().filter(|a| a.status != 201) {
        assert_error(answer, 409);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "twenty@example.com").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM tenants WHERE name = $1", "twenty@example.com").await, 1);
}

/// Guessing keys is limited per client address: past the limit even the right key waits.
async fn wrong_keys_are_limited_per_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let owner = app.projects_owner("limited@example.com").await;
    for i in 0..20 {
        let guess = format!("lk_guess{i}");
        assert_error(&app.projects_account_signup(&owner.id, Some(&guess), "x@example.com").await, 401);
    }
    let refused = app.projects_account_signup(&owner.id, Some("lk_guess20"), "x@example.com").await;
    assert_error(&refused, 429);
    assert!(refused.header("retry-after").is_some());
    assert_error(&app.projects_account_signup(&owner.id, Some(&owner.key), "x@example.com").await, 429);
}

on_both_backends!(
    the_seed_flow,
    every_error_row,
    bad_input_is_answered_in_the_surface_shape,
    tenants_are_isolated,
    keys_rotate_without_downtime,
    concurrent_sign_ups_give_exactly_one,
    wrong_keys_are_limited_per_address,
);
