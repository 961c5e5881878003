//! The always-on endpoints, logging hygiene, the command line and graceful shutdown.

use std::process::Command;

use serde_json::json;

use crate::helpers::{Backend, TestApp, captured_logs, cookie_value, json, jwt_parts};
use crate::on_both_backends;

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = json(app.get("/healthz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = json(app.get("/readyz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));

    let _ = app.post("/api/users/signin", &json!({"email": "nobody@example.com", "password": "whatever1"})).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let text = response.text().await.expect("body");
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
    let (status, jwks) = json(app.get("/.well-known/jwks.json").await).await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "never the private part");

    let (status, discovery) = json(app.get("/.well-known/openid-configuration").await).await;
    assert_eq!(status, 200);
    assert_eq!(discovery["issuer"], app.base);
    assert_eq!(discovery["jwks_uri"], format!("{}/.well-known/jwks.json", app.base));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["EdDSA"]));

    app.post("/api/users/signup", &json!({"firstName":"J","lastName":"K","email":"jay@example.com","contactNumber":"1","address":"a","password":"correct horse battery"}))
        .await;
    let code = app.mail.next_mail("jay@example.com").await.code();
    let response = app.patch("/api/users/activate", &json!({"email": "jay@example.com", "otpCode": code})).await;
    let token = cookie_value(response.headers(), "session").expect("cookie");
    assert_eq!(jwt_parts(&token).0["kid"], keys[0]["kid"]);
}

async fn no_secret_reaches_the_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let password = "log-canary-password-7319";
    let email = "kim@example.com";
    app.post(
        "/api/users/signup",
        &json!({"firstName":"K","lastName":"M","email":email,"contactNumber":"1","address":"a","password":password}),
    )
    .await;
    let code = app.mail.next_mail(email).await.code();
    let wrong = if code == "111111" { "222222" } else { "111111" };
    app.patch("/api/users/activate", &json!({"email": email, "otpCode": wrong})).await;
    let response = app.patch("/api/users/activate", &json!({"email": email, "otpCode": code})).await;
    let token = cookie_value(response.headers(), "session").expect("cookie");
    let response = app.post("/api/users/signin", &json!({"email": email, "password": password})).await;
    let token2 = cookie_value(response.headers(), "session").expect("cookie");
    app.post("/api/users/signin", &json!({"email": email, "password": "wrong-canary-password"})).await;

    let logs = captured_logs();
    assert!(logs.contains("user created"), "the capture works");
    for secret in [
        password,
        "wrong-canary-password",
        code.as_str(),
        wrong,
        token.as_str(),
        token2.as_str(),
        crate::helpers::TEST_SECRET,
    ] {
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
    let user = json!({"firstName":"M","lastName":"N","email":"max@example.com","contactNumber":"1","address":"a","password":"correct horse battery"});
    assert_eq!(a.post("/api/users/signup", &user).await.status(), 201);
    let code = a.mail.next_mail("max@example.com").await.code();
    assert_eq!(
        b.patch("/api/users/activate", &json!({"email": "max@example.com", "otpCode": code})).await.status(),
        200
    );

    let response =
        a.post("/api/users/signin", &json!({"email": "max@example.com", "password": "correct horse battery"})).await;
    assert_eq!(response.status(), 200);
    let cookie = format!("session={}", cookie_value(response.headers(), "session").expect("cookie"));
    let me = |app: &TestApp| {
        let request = app.client.get(app.url("/api/users/currentuser")).header("cookie", cookie.clone()).send();
        async move { json(request.await.expect("request")).await.1 }
    };
    assert_eq!(me(&b).await["email"], "max@example.com", "B accepts A's session");
    let response = b.send_json(reqwest::Method::POST, "/api/users/signout", &json!({}), Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(me(&a).await, serde_json::Value::Null, "A rejects the session B revoked, at once");

    let (_, jwks_a) = json(a.get("/.well-known/jwks.json").await).await;
    let (_, jwks_b) = json(b.get("/.well-known/jwks.json").await).await;
    assert_eq!(jwks_a, jwks_b, "one key ring");

    // A key rotated through A's database is served by B at once.
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["keys", "rotate"])
        .env("LATCHKEY_DATABASE_URL", &a.database_url)
        .env("LATCHKEY_SECRET", crate::helpers::TEST_SECRET)
        .env("LATCHKEY_LOG", "warn")
        .output()
        .expect("run latchkey keys rotate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_kid = String::from_utf8_lossy(&out.stdout).trim().rsplit(' ').next().expect("kid").to_owned();
    let (_, jwks_b) = json(b.get("/.well-known/jwks.json").await).await;
    assert_eq!(jwks_b["keys"][0]["kid"], new_kid.as_str());
    assert_eq!(jwks_b["keys"][1]["kid"], jwks_a["keys"][0]["kid"]);
}

on_both_backends!(
    health_readiness_and_metrics,
    jwks_publishes_the_key_that_signs_sessions,
    no_secret_reaches_the_log,
    two_instances_share_users_sessions_and_keys
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_graceful_shutdown() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    let (client, url, mail, port) = (app.client.clone(), app.url("/api/users/signup"), app.mail.clone(), app.port);
    // The sink keeps its reply back, so the sign-up is provably inside the server (in its
    // SMTP transaction) when the shutdown begins.
    mail.hold();
    let request = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"firstName":"L","lastName":"M","email":"lou@example.com","contactNumber":"1","address":"a","password":"correct horse battery"}))
            .send()
            .await
    });
    let _ = mail.next_mail("lou@example.com").await;
    app.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!request.is_finished(), "the request waits for the mail relay");
    mail.release();
    let response = request.await.expect("task").expect("the in-flight request got its answer");
    assert_eq!(response.status(), 201);
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the listener is closed after shutdown"
    );
}

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
        crate::v1::verified_user(&app, "pat@example.com").await;
        let response = app
            .client
            .post(app.url("/v1/sessions"))
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.7")
            .json(&json!({"email": "pat@example.com", "password": crate::v1::PASSWORD}))
            .send()
            .await
            .expect("sign in");
        let (_, body) = json(response).await;
        let access = body["access_token"].as_str().expect("access token");
        let (_, list) = crate::v1::get_with(&app, "/v1/sessions", access).await;
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
