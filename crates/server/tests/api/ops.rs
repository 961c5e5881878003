//! The always-on endpoints, logging hygiene, the command line and graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TEST_SECRET, TestApp, captured_logs, jwt_parts, send, users_signup_body};
use crate::on_both_backends;

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = app.healthz().await;
    assert_eq!((health.status, health.body), (200, json!({"status": "ok"})));
    let ready = app.readyz().await;
    assert_eq!((ready.status, ready.body), (200, json!({"status": "ready"})));

    let _ = app.signin("nobody@example.com", "whatever1").await;
    let metrics = app.metrics().await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").expect("ascii").starts_with("text/plain"));
    let text = metrics.text;
    assert!(
        text.lines().any(|l| l.starts_with("latchkey_http_requests_total")
            && l.contains("route=\"/api/users/signin\"")
            && l.contains("status=\"401\"")),
        "{text}"
    );
    assert!(text.contains("latchkey_http_request_duration_seconds_bucket"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("latchkey_auth_outcomes_total")
            && l.contains("operation=\"sign_in\"")
            && l.contains("outcome=\"invalid_credentials\"")),
        "{text}"
    );
}

async fn jwks_publishes_the_key_that_signs_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jwks = app.jwks().await;
    assert_eq!(jwks.status, 200);
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "never the private part");

    let discovery = app.openid_configuration().await;
    assert_eq!(discovery.status, 200);
    assert_eq!(discovery.body["issuer"], app.base);
    assert_eq!(discovery.body["jwks_uri"], format!("{}/.well-known/jwks.json", app.base));
    assert_eq!(discovery.body["id_token_signing_alg_values_supported"], json!(["EdDSA"]));

    // A user signs up, reads the mail and activates: the session is signed with that key.
    app.signup(&users_signup_body("jay@example.com")).await;
    let code = app.mail.next_mail("jay@example.com").await.code();
    let token = app.activate("jay@example.com", &code).await.cookie("session").expect("cookie");
    assert_eq!(jwt_parts(&token).0["kid"], keys[0]["kid"]);
}

async fn no_secret_reaches_the_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let password = "log-canary-password-7319";
    let email = "kim@example.com";
    let mut profile = users_signup_body(email);
    profile["password"] = json!(password);
    app.signup(&profile).await;
    let code = app.mail.next_mail(email).await.code();
    let wrong = if code == "111111" { "222222" } else { "111111" };
    app.activate(email, wrong).await;
    let token = app.activate(email, &code).await.cookie("session").expect("cookie");
    let token2 = app.signin(email, password).await.cookie("session").expect("cookie");
    app.signin(email, "wrong-canary-password").await;

    let logs = captured_logs();
    assert!(logs.contains("user created"), "the capture works");
    for secret in
        [password, "wrong-canary-password", code.as_str(), wrong, token.as_str(), token2.as_str(), TEST_SECRET]
    {
        assert!(!logs.contains(secret), "a secret reached the log: {secret:?}");
    }
    // Not even a fragment of a token's signature.
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(&signature[..20]));
}

/// Two processes on one database behave as one server: what one does, the other sees at once.
async fn two_instances_share_users_sessions_and_keys(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a.another_instance().await;
    assert_eq!(a.signup(&users_signup_body("max@example.com")).await.status, 201);
    let code = a.mail.next_mail("max@example.com").await.code();
    assert_eq!(b.activate("max@example.com", &code).await.status, 200);

    let cookie = a.users_signed_in("max@example.com").await;
    assert_eq!(b.current_user(Some(&cookie), None).await.body["email"], "max@example.com", "B accepts A's session");
    assert_eq!(b.signout(Some(&cookie)).await.status, 200);
    assert_eq!(a.current_user(Some(&cookie), None).await.body, Value::Null, "A rejects the session B revoked, at once");

    let jwks_a = a.jwks().await.body;
    let jwks_b = b.jwks().await.body;
    assert_eq!(jwks_a, jwks_b, "one key ring");

    // A key rotated through A's database is served by B at once.
    let new_kid = a.rotate_keys();
    let jwks_b = b.jwks().await.body;
    assert_eq!(jwks_b["keys"][0]["kid"], new_kid.as_str());
    assert_eq!(jwks_b["keys"][1]["kid"], jwks_a["keys"][0]["kid"]);
}

/// Session checks are answered from a short-lived cache, and a revocation is still refused by
/// the next request on the instance that made it, and by every other instance within a second.
/// On PostgreSQL the revocation bus carries it: B's cache is set to keep entries for a minute,
/// so only the bus can end B's entry in time. On SQLite (no bus between processes) B's entry
/// ends with the cache's one-second TTL.
async fn a_revoked_session_is_refused_at_once_here_and_within_a_second_elsewhere(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a
        .another_instance_with(|c| {
            if backend == Backend::Postgres {
                c.session_cache_ttl = Duration::from_secs(60);
            }
        })
        .await;
    assert_eq!(a.signup(&users_signup_body("nia@example.com")).await.status, 201);
    let code = a.mail.next_mail("nia@example.com").await.code();
    assert_eq!(a.activate("nia@example.com", &code).await.status, 200);
    let cookie = a.users_signed_in("nia@example.com").await;
    let bearer =
        a.v1_sign_in("nia@example.com", PASSWORD).await.body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(a.current_user(Some(&cookie), None).await.body["email"], "nia@example.com");
    assert_eq!(a.v1_me(bearer.as_str()).await.status, 200);
    let cached = Instant::now();
    assert_eq!(b.current_user(Some(&cookie), None).await.body["email"], "nia@example.com");
    assert_eq!(b.v1_me(bearer.as_str()).await.status, 200);

    assert_eq!(a.signout(Some(&cookie)).await.status, 200);
    assert_eq!(a.v1_sign_out(bearer.as_str()).await.status, 204);
    assert_eq!(a.current_user(Some(&cookie), None).await.body, Value::Null, "the next request on A");
    assert_eq!(a.v1_me(bearer.as_str()).await.status, 401, "the next request on A");

    // B: refused within a second of the moment it cached them (plus a request's time on a
    // loaded machine).
    loop {
        let user = b.current_user(Some(&cookie), None).await.body;
        let me = b.v1_me(bearer.as_str()).await.status;
        if user == Value::Null && me == 401 {
            break;
        }
        assert!(cached.elapsed() < Duration::from_millis(1_500), "B still accepts after {:?}", cached.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `v1` operation documents the responses the shared extractors and the core give before
/// or around its handler, and the server really gives them: a schema-driven client (CI runs
/// schemathesis against `/openapi.json`) must find each status it meets in the document.
async fn the_openapi_document_lists_the_responses_every_operation_can_give(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = app.get("/openapi.json").await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            let problem = |status: &str| {
                let content =
                    &responses.get(status).unwrap_or_else(|| panic!("{method} {path}: no {status}"))["content"];
                assert!(content.get("application/problem+json").is_some(), "{method} {path} {status}: {content}");
            };
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    problem(status);
                }
            }
            if op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
                problem("401");
            }
        }
    }
    assert!(operations >= 15, "{operations} operations");
    // Every reference resolves (a client skips what it cannot resolve).
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(doc["components"]["schemas"].get(name).is_some(), "unresolvable reference to {name}");
    }
    for (method, path) in [("post", "/v1/signup"), ("post", "/v1/sessions"), ("post", "/v1/password/change")] {
        let overloaded = &doc["paths"][path][method]["responses"]["503"];
        assert!(overloaded["headers"].get("Retry-After").is_some(), "{method} {path}: {overloaded}");
    }

    // The documented rejections are the server's real answers.
    let documented = |path: &str, method: &str, status: u16| {
        doc["paths"][path][method]["responses"].get(status.to_string()).is_some()
    };
    let not_json = app.send_raw(reqwest::Method::POST, "/v1/signup", "text/plain", b"{}".to_vec()).await;
    assert_eq!(not_json.status, 415);
    assert!(documented("/v1/signup", "post", not_json.status));
    let malformed =
        app.send_raw(reqwest::Method::POST, "/v1/sessions", "application/json", b"{\"email\":".to_vec()).await;
    assert_eq!(malformed.status, 400);
    assert!(documented("/v1/sessions", "post", malformed.status));
    let too_large =
        app.send_raw(reqwest::Method::POST, "/v1/password/forgot", "application/json", vec![b' '; 128 * 1024]).await;
    assert_eq!(too_large.status, 413);
    assert!(documented("/v1/password/forgot", "post", too_large.status));
    let no_token = app.get("/v1/sessions").await;
    assert_eq!(no_token.status, 401);
    assert!(documented("/v1/sessions", "get", no_token.status));
}

on_both_backends!(
    health_readiness_and_metrics,
    the_openapi_document_lists_the_responses_every_operation_can_give,
    jwks_publishes_the_key_that_signs_sessions,
    no_secret_reaches_the_log,
    two_instances_share_users_sessions_and_keys,
    a_revoked_session_is_refused_at_once_here_and_within_a_second_elsewhere
);

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .env("LATCHKEY_CODE_TTL", "ten minutes")
        .env("LATCHKEY_DATABASE_URL", "sqlite::memory:")
        .output()
        .expect("run latchkey");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LATCHKEY_CODE_TTL"), "{stderr}");
}

#[test]
fn help_documents_every_subcommand_and_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey")).arg("--help").output().expect("run latchkey");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for word in ["serve", "migrate", "keys", "check-config", "--config"] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
    for key in latchkey_server::config::KEYS {
        assert!(help.contains(key.env), "{} missing from --help", key.env);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_recorded() {
    for (trust, expected) in [(true, "198.51.100.7"), (false, "127.0.0.1")] {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.trust_forwarded_for = trust).await;
        app.v1_verified_user("pat@example.com").await;
        let through_proxy =
            app.v1_sign_in_request("pat@example.com", PASSWORD).header("x-forwarded-for", "203.0.113.9, 198.51.100.7");
        let signed_in = send(through_proxy).await;
        let access = signed_in.body["access_token"].as_str().expect("access token");
        let list = app.v1_sessions(access).await.body;
        assert_eq!(list["sessions"][0]["ip"], expected, "trust_forwarded_for = {trust}");
    }
}

#[test]
fn a_toml_file_configures_and_the_environment_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latchkey.toml");
    std::fs::write(
        &path,
        "code_ttl = \"5m\"\njwt_alg = \"ES256\"\nclient_ids = [\"web\", \"ios\"]\nsurfaces = \"users\"\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["--config", path.to_str().expect("utf-8"), "check-config"])
        .env("LATCHKEY_SURFACES", "v1")
        .env("LATCHKEY_SECRET", "s".repeat(40))
        .output()
        .expect("run latchkey");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("code_ttl: 300s"), "{stdout}");
    assert!(stdout.contains("ES256"), "{stdout}");
    // Surface settings are the surfaces' to print: check-config names the key only.
    assert!(stdout.contains("\"client_ids\"") && !stdout.contains("\"web\""), "{stdout}");
    assert!(stdout.contains("\"v1\",") && !stdout.contains("\"users\","), "the environment wins: {stdout}");
    assert!(!stdout.contains(&"s".repeat(40)), "secrets are redacted");

    std::fs::write(&path, "session_ttl = \"forever\"\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["--config", path.to_str().expect("utf-8"), "check-config"])
        .output()
        .expect("run latchkey");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LATCHKEY_SESSION_TTL"), "{stderr}");
}

/// On PostgreSQL every statement is planned for the tables as they are when it runs: a
/// generic plan cached while `refresh_tokens` held a few rows would otherwise scan the whole
/// table on every later refresh, until an ANALYZE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_plan_each_statement_for_the_tables_as_they_are() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let database = latchkey_store::Database::connect(&app.database_url, &latchkey_store::Options::default())
        .await
        .expect("connect the store");
    let pool = database.postgres().expect("a PostgreSQL store").pool();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(pool).await.expect("SHOW");
    assert_eq!(mode, "force_custom_plan");
    database.close().await;
}
