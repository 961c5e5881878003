//! The operator's command line (`latchkey tenant|user|session ...`), run as a separate process
//! on a test server's database while the server runs, and on a database no server uses.

use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, TEST_SECRET, TestApp};
use crate::on_both_backends;

/// Standard output of a command that must succeed.
fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard output of a `--json` command that must succeed, parsed.
fn json(out: &Output) -> Value {
    let text = stdout(out);
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// A failed command: non-zero exit, nothing on standard output, one line on standard error
/// that contains `expected`.
fn assert_one_line_error(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "{expected:?} not in {stderr:?}");
}

/// A tenant made by the operator serves accounts through `projects` with its key; keys are
/// created, listed and revoked, users listed page by page, disabled, enabled and deleted, and
/// sessions revoked, each taking effect on the running server at once.
async fn operators_manage_tenants_keys_users_and_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = json(&app.latchkey_cli(&["--json", "tenant", "create", "--name", "Acme"]));
    let tenant = created["tenant"]["id"].as_str().expect("tenant id").to_owned();
    let first = created["key"]["key"].as_str().expect("key").to_owned();
    let first_id = created["key"]["id"].as_str().expect("key id").to_owned();
    assert_eq!(created["tenant"]["require_email_verification"], false);

    // The key opens the tenant's account routes, with the tenant id in the URL.
    for email in ["u1@example.com", "u2@example.com", "u3@example.com"] {
        app.projects_account_signup(&tenant, Some(&first), email).await.expect_status(201);
    }
    assert_eq!(app.projects_account_login(&tenant, Some(&first), "u1@example.com", PASSWORD).await.status, 200);

    let table = stdout(&app.latchkey_cli(&["tenant", "list"]));
    let acme = table.lines().find(|l| l.contains("Acme")).expect("Acme listed");
    assert!(acme.starts_with(&tenant) && acme.contains("not required"), "{table}");
    assert!(table.lines().next().is_some_and(|h| h.starts_with("id") && h.contains("name")), "{table}");
    let listed = json(&app.latchkey_cli(&["tenant", "list", "--json"]));
    assert!(listed.as_array().expect("tenants").iter().any(|t| t["id"] == tenant.as_str()));

    // A second key; then the first revoked: the running server refuses it at once.
    let second = json(&app.latchkey_cli(&["--json", "tenant", "key", "create", "--tenant", &tenant]));
    let second = second["key"]["key"].as_str().expect("key").to_owned();
    let keys_out = app.latchkey_cli(&["tenant", "key", "list", "--tenant", &tenant, "--json"]);
    let keys = json(&keys_out);
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(!String::from_utf8_lossy(&keys_out.stdout).contains(&first[3..]), "never a key's text");
    stdout(&app.latchkey_cli(&["tenant", "key", "revoke", "--tenant", &tenant, &first_id]));
    let refused = app.projects_account_login(&tenant, Some(&first), "u1@example.com", PASSWORD).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(app.projects_account_login(&tenant, Some(&second), "u1@example.com", PASSWORD).await.status, 200);
    let table = stdout(&app.latchkey_cli(&["tenant", "key", "list", "--tenant", &tenant]));
    assert!(table.lines().any(|l| l.starts_with(&first_id) && !l.trim_end().ends_with('-')), "revoked: {table}");

    // Users, page by page, oldest first.
    let page = json(&app.latchkey_cli(&["--json", "user", "list", "--tenant", &tenant, "--limit", "2", "--page", "2"]));
    let emails: Vec<&str> =
        page["users"].as_array().expect("users").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, ["u3@example.com"]);
    let table = stdout(&app.latchkey_cli(&["user", "list", "--tenant", &tenant]));
    assert_eq!(table.lines().count(), 4, "a heading and three users: {table}");

    // Disable, enable, revoke sessions and delete, in that tenant only.
    stdout(&app.latchkey_cli(&["user", "disable", "u2@example.com", "--tenant", &tenant]));
    assert_eq!(app.projects_account_login(&tenant, Some(&second), "u2@example.com", PASSWORD).await.status, 401);
    stdout(&app.latchkey_cli(&["user", "enable", "u2@example.com", "--tenant", &tenant]));
    assert_eq!(app.projects_account_login(&tenant, Some(&second), "u2@example.com", PASSWORD).await.status, 200);
    let revoked =
        json(&app.latchkey_cli(&["--json", "session", "revoke", "--user", "u2@example.com", "--tenant", &tenant]));
    assert_eq!(revoked["revoked"], 1, "the sign-in's since enabling (disabling ended the others)");
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND $1 = $1", "").await, 4);
    assert_one_line_error(&app.latchkey_cli(&["user", "delete", "u3@example.com"]), "user not found");
    stdout(&app.latchkey_cli(&["users", "delete", "u3@example.com", "--tenant", &tenant]));
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "u3@example.com").await, 0);

    // An owner disabled suspends their projects; deleted, takes them along.
    let owner = app.projects_owner("boss@example.com").await;
    app.projects_account(&owner, "staff@example.com").await;
    let login = || app.projects_account_login(&owner.id, Some(&owner.key), "staff@example.com", PASSWORD);
    stdout(&app.latchkey_cli(&["user", "disable", "boss@example.com", "--tenant", "project-owners"]));
    assert_eq!(login().await.status, 401);
    stdout(&app.latchkey_cli(&["user", "enable", &owner.id, "--tenant", "project-owners"]));
    assert_eq!(login().await.status, 200);
    stdout(&app.latchkey_cli(&["user", "delete", "boss@example.com", "--tenant", "project-owners"]));
    assert_eq!(login().await.status, 404);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", "staff@example.com").await, 0);

    // The default tenant is the default: a v1 user's sessions end at once.
    app.v1_verified_user("dan@example.com").await;
    let signed_in = app.v1_signed_in("dan@example.com").await;
    let revoked = json(&app.latchkey_cli(&["session", "revoke", "--user", "DAN@example.com", "--json"]));
    assert_eq!(revoked["revoked"], 1);
    assert_eq!(app.v1_me(&signed_in.access).await.status, 401);
}

/// Bad input: non-zero exit with one clear line.
async fn bad_input_is_one_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = json(&app.latchkey_cli(&["--json", "tenant", "create", "--name", "Bad"]))["tenant"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let stranger = uuid::Uuid::new_v4().to_string();
    assert_one_line_error(&app.latchkey_cli(&["tenant", "create", "--name", " "]), "name must not be empty");
    assert_one_line_error(&app.latchkey_cli(&["tenant", "key", "list", "--tenant", "acme"]), "--tenant");
    assert_one_line_error(&app.latchkey_cli(&["tenant", "key", "list", "--tenant", &stranger]), "tenant not found");
    assert_one_line_error(&app.latchkey_cli(&["tenant", "key", "create", "--tenant", "default"]), "system tenants");
    assert_one_line_error(&app.latchkey_cli(&["tenant", "key", "revoke", "--tenant", &tenant, "k1"]), "key id");
    assert_one_line_error(
        &app.latchkey_cli(&["tenant", "key", "revoke", "--tenant", &tenant, &stranger]),
        "no such key",
    );
    assert_one_line_error(&app.latchkey_cli(&["user", "list", "--tenant", &tenant, "--limit", "0"]), "--limit");
    assert_one_line_error(&app.latchkey_cli(&["user", "list", "--tenant", &tenant, "--page", "x"]), "--page");
    assert_one_line_error(&app.latchkey_cli(&["user", "list"]), "--tenant");
    assert_one_line_error(&app.latchkey_cli(&["user", "disable", "nobody"]), "email address");
    assert_one_line_error(&app.latchkey_cli(&["session", "revoke", "--user", "x@example.com"]), "user not found");
    assert_one_line_error(&app.latchkey_cli(&["tenant", "frobnicate"]), "frobnicate");
    // Nothing of the above was stored: one tenant beside the system ones, with its one key.
    assert_eq!(app.count("SELECT COUNT(*) FROM tenants WHERE $1 = $1", "").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys WHERE $1 = $1", "").await, 1);
}

on_both_backends!(operators_manage_tenants_keys_users_and_sessions, bad_input_is_one_line);

#[test]
fn commands_work_without_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("offline.db").display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env("LATCHKEY_DATABASE_URL", &url)
            .env("LATCHKEY_SECRET", TEST_SECRET)
            .env("LATCHKEY_LOG", "warn")
            .output()
            .expect("run latchkey")
    };
    let created = json(&run(&["--json", "tenant", "create", "--name", "Offline"]));
    assert_eq!(created["tenant"]["require_email_verification"], false);
    let key = created["key"]["key"].as_str().expect("key");
    assert!(key.starts_with("lk_") && key.len() == 46, "{key}");
    let tenants = json(&run(&["--json", "tenant", "list"]));
    let names: Vec<&str> = tenants.as_array().expect("tenants").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["default", "project-owners", "Offline"]);
}
