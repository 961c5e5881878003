//! The audit trail end to end: events of two surfaces stored with the surface, the client
//! address (as the server determines it) and the user agent; `latchkey audit` listing them
//! with filters; `/metrics` counting them by kind and surface only.

use std::process::Output;

use latchkey_core::identity::TenantId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, login_frame, send};
use crate::on_both_backends;

const PASSWORD: &str = "k7#mq2vz-Tern-81";
const USERS_AGENT: &str = "audit-users/1.0";
const V1_AGENT: &str = "audit-v1/2.0";
const USERS_EMAIL: &str = "audit.users@example.com";
const V1_EMAIL: &str = "Audit.V1@example.com";

/// The JSON Lines of a successful `latchkey audit --json`.
fn lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

/// A sign-up, activation (a sign-in), a failed sign-in and a sign-out through `users`, and the
/// same through `v1` behind a trusted proxy: each event is stored with its surface, address and
/// user agent, in order, and `latchkey audit` lists and filters them.
async fn events_carry_their_surface_address_and_agent(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.trust_forwarded_for = true).await;

    // users: no X-Forwarded-For, so the TCP peer.
    let users = |method: Method, path: &str, body: Value| {
        app.request(method, path).header("user-agent", USERS_AGENT).json(&body)
    };
    let body = json!({
        "firstName": "Ada", "lastName": "Lovelace", "email": USERS_EMAIL, "contactNumber": "+44 20 7946 0000",
        "address": "12 St James's Square, London", "password": PASSWORD, "profileURL": "https://example.com/ada.png"
    });
    send(users(Method::POST, "/api/users/signup", body)).await.expect_status(201);
    let code = app.mail.next_mail(USERS_EMAIL).await.code();
    let activated =
        send(users(Method::PATCH, "/api/users/activate", json!({"email": USERS_EMAIL, "otpCode": code}))).await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    let cookie = format!("session={}", activated.cookie("session").expect("session cookie"));
    let wrong = json!({"email": USERS_EMAIL, "password": "Wr0ng-but-long-enough"});
    assert_eq!(send(users(Method::POST, "/api/users/signin", wrong)).await.status, 401);
    let out = send(users(Method::POST, "/api/users/signout", json!({})).header("cookie", &cookie)).await;
    assert_eq!(out.status, 200, "{}", out.body);

    // v1: behind the proxy, whose X-Forwarded-For entry is the client.
    let v1 = |method: Method, path: &str| {
        app.request(method, path).header("user-agent", V1_AGENT).header("x-forwarded-for", "203.0.113.9")
    };
    let signup = send(v1(Method::POST, "/v1/signup").json(&json!({"email": V1_EMAIL, "password": PASSWORD}))).await;
    assert_eq!(signup.status, 202, "{}", signup.body);
    let code = app.mail.next_mail(V1_EMAIL).await.code();
    let verified =
        send(v1(Method::POST, "/v1/email/verification").json(&json!({"email": V1_EMAIL, "code": code}))).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let wrong = json!({"email": V1_EMAIL, "password": "Wr0ng-but-long-enough"});
    assert_eq!(send(v1(Method::POST, "/v1/sessions").json(&wrong)).await.status, 401);
    let ghost = json!({"email": "Nobody.At.All@example.com", "password": PASSWORD});
    let unknown = send(v1(Method::POST, "/v1/sessions").json(&ghost)).await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    let signed = send(v1(Method::POST, "/v1/sessions").json(&json!({"email": V1_EMAIL, "password": PASSWORD}))).await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    let access = signed.body["access_token"].as_str().expect("access token").to_owned();
    let out = send(v1(Method::DELETE, "/v1/sessions/current").bearer_auth(&access)).await;
    assert_eq!(out.status, 204, "{}", out.body);

    app.auth.flush_audit().await;

    let users_events = lines(&app.latchkey_cli(&["audit", "--json", "--email", USERS_EMAIL]));
    assert_eq!(
        kinds(&users_events),
        ["sign_out", "sign_in_failed", "sign_in", "code_sent", "sign_up"],
        "newest first: {users_events:#?}"
    );
    for e in &users_events {
        assert_eq!((e["surface"].as_str(), e["ip"].as_str()), (Some("users"), Some("127.0.0.1")), "{e}");
        assert_eq!(e["user_agent"], USERS_AGENT, "{e}");
        assert_eq!(e["tenant"], TenantId::DEFAULT.to_string(), "{e}");
        assert!(e["user_id"].is_string(), "{e}");
    }
    assert_eq!(users_events[1]["detail"], "wrong_password");

    // The address as typed matches case-insensitively.
    let v1_events = lines(&app.latchkey_cli(&["audit", "--json", "--email", "audit.v1@EXAMPLE.com"]));
    assert_eq!(kinds(&v1_events), ["sign_out", "sign_in", "sign_in_failed", "code_sent", "sign_up"], "{v1_events:#?}");
    for e in &v1_events {
        assert_eq!((e["surface"].as_str(), e["ip"].as_str()), (Some("v1"), Some("203.0.113.9")), "{e}");
        assert_eq!(e["user_agent"], V1_AGENT, "{e}");
        assert_eq!(e["email"], V1_EMAIL, "as the account stores it: {e}");
    }
    let user_id = v1_events[0]["user_id"].as_str().expect("user id").to_owned();

    // An unknown address: as typed, no user id, the reason for operators only.
    let ghost = lines(&app.latchkey_cli(&["audit", "--json", "--email", "nobody.at.all@example.com"]));
    assert_eq!(ghost.len(), 1, "{ghost:#?}");
    assert_eq!(
        (ghost[0]["kind"].as_str(), ghost[0]["detail"].as_str()),
        (Some("sign_in_failed"), Some("unknown_user"))
    );
    assert_eq!((ghost[0]["email"].as_str(), &ghost[0]["user_id"]), (Some("Nobody.At.All@example.com"), &Value::Null));
    assert!(!unknown.text.contains("unknown_user"), "the wire learns nothing new: {}", unknown.text);

    // Filters: by user, by kinds, by time, by tenant, and a limit.
    let mine = lines(&app.latchkey_cli(&["audit", "--json", "--user", &user_id]));
    assert_eq!(mine.len(), 5, "{mine:#?}");
    let failed = lines(&app.latchkey_cli(&["audit", "--json", "--kind", "sign_in_failed", "--kind", "sign_out"]));
    assert_eq!(kinds(&failed), ["sign_out", "sign_in_failed", "sign_in_failed", "sign_out", "sign_in_failed"]);
    let recent = lines(&app.latchkey_cli(&["audit", "--json", "--since", "1h", "--limit", "2"]));
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["id"], v1_events[0]["id"], "the newest");
    assert!(lines(&app.latchkey_cli(&["audit", "--json", "--until", "1h"])).is_empty());
    assert!(lines(&app.latchkey_cli(&["audit", "--json", "--until", "2000-01-01T00:00:00Z"])).is_empty());
    let other = "0191d6a4-7c7e-7cc3-9d2e-1a2b3c4d5e6f";
    assert!(lines(&app.latchkey_cli(&["audit", "--json", "--tenant", other])).is_empty());
    assert_eq!(lines(&app.latchkey_cli(&["audit", "--json", "--tenant", "default"])).len(), 11);

    // The table: a heading and one line per event.
    let table = app.latchkey_cli(&["audit", "--email", USERS_EMAIL]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let heading = table.lines().next().expect("heading");
    for column in ["time", "kind", "surface", "tenant", "user", "ip", "detail"] {
        assert!(heading.contains(column), "{heading}");
    }
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.lines().nth(2).is_some_and(|l| l.contains("sign_in_failed") && l.contains("wrong_password")));

    // Bad filters: exit code 2 and one line naming the argument.
    for args in [
        ["audit", "--kind", "login"],
        ["audit", "--since", "yesterday"],
        ["audit", "--user", "ada"],
        ["audit", "--limit", "0"],
    ] {
        let out = app.latchkey_cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(args[1]), "{stderr}");
    }

    // A sign-out over a realtime socket, served in a task of its own, is the realtime
    // surface's.
    let tokens = app.v1_signed_in_with(V1_EMAIL, PASSWORD).await;
    let mut socket = app.ws_connect().await;
    let reply = socket.request(&login_frame("user-logout", V1_EMAIL, &tokens)).await;
    assert_eq!(reply["action"], "user-logout", "{reply}");
    app.auth.flush_audit().await;
    let out = lines(&app.latchkey_cli(&["audit", "--json", "--kind", "sign_out", "--user", &user_id, "--limit", "1"]));
    assert_eq!((out[0]["surface"].as_str(), out[0]["ip"].as_str()), (Some("realtime"), Some("127.0.0.1")), "{out:#?}");

    // Metrics: counted by kind and surface, never by account or address.
    let metrics = app.metrics().await.text;
    let audit: Vec<&str> = metrics.lines().filter(|l| l.starts_with("latchkey_audit_events_total{")).collect();
    for expected in [r#"kind="sign_in_failed",surface="users""#, r#"kind="sign_out",surface="v1""#] {
        assert!(audit.iter().any(|l| l.contains(expected)), "{expected} not in {audit:#?}");
    }
    for line in &audit {
        let labels = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(l, _)| l).expect("labels");
        let names: Vec<&str> = labels.split(',').filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
        assert_eq!(names.iter().filter(|n| **n != "kind" && **n != "surface").count(), 0, "{line}");
        assert!(!line.contains('@') && !line.contains("203.0.113.9"), "{line}");
    }
    app.stop().await;
}

on_both_backends!(events_carry_their_surface_address_and_agent);
