//! Users brought from other services: their stored hashes, made by the original ecosystems'
//! libraries, sign in on the `v1` and `users` surfaces and are replaced by argon2id at the
//! first successful sign-in; so are argon2id hashes of parameters the server no longer uses.

use std::process::Output;

use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, jwt_parts};
use crate::on_both_backends;

/// Hashes with their plaintexts (`crates/core/tests/fixtures/make_foreign_hashes.py`: Python
/// bcrypt, Werkzeug, Django, argon2-cffi, hashlib.scrypt).
const FOREIGN: &str = include_str!("../../../core/tests/fixtures/foreign_hashes.jsonl");

struct Fixture {
    format: String,
    password: String,
    hash: String,
}

fn fixtures() -> Vec<Fixture> {
    FOREIGN
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("fixture line");
            let field = |name: &str| row[name].as_str().unwrap_or_else(|| panic!("{name} in {line}")).to_owned();
            Fixture { format: field("format"), password: field("password"), hash: field("hash") }
        })
        .collect()
}

async fn imported_hashes_sign_in_on_v1_and_users_and_are_upgraded_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The 10^6-iteration PBKDF2 rows (Werkzeug's and Django's defaults) are checked by core's
    // unit test; unoptimised test builds take seconds for each.
    let fixtures = fixtures();
    for (i, fixture) in fixtures.iter().filter(|f| !f.hash.contains("1000000$")).enumerate() {
        let email = format!("imported{i}@example.com");
        let what = format!("{} {}", fixture.format, fixture.hash);
        app.v1_verified_user(&email).await;

        // v1: a wrong password fails and leaves the imported hash; the right one signs in and
        // replaces it with Latchkey's argon2id.
        assert_eq!(app.store_password_hash(&email, &fixture.hash).await, 1);
        let wrong = app.v1_sign_in(&email, &format!("!{}", fixture.password)).await;
        assert_eq!(wrong.status, 401, "{what}: {}", wrong.body);
        assert_eq!(app.stored_password_hash(&email).await.as_deref(), Some(fixture.hash.as_str()), "{what}");
        let signed_in = app.v1_sign_in(&email, &fixture.password).await;
        assert_eq!(signed_in.status, 200, "{what}: {}", signed_in.body);
        let upgraded = app.stored_password_hash(&email).await.expect("a hash");
        assert!(upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{what}: {upgraded}");
        // Once: the next sign-in verifies the argon2id hash and keeps it.
        assert_eq!(app.v1_sign_in(&email, &fixture.password).await.status, 200, "{what}");
        assert_eq!(app.stored_password_hash(&email).await.as_deref(), Some(upgraded.as_str()), "{what}");

        // users (seed 001): the same, from the imported hash again.
        assert_eq!(app.store_password_hash(&email, &fixture.hash).await, 1);
        let wrong = app.signin(&email, &format!("!{}", fixture.password)).await;
        assert_eq!(wrong.status, 401, "{what}: {}", wrong.body);
        let signed_in = app.signin(&email, &fixture.password).await;
        assert_eq!(signed_in.status, 200, "{what}: {}", signed_in.body);
        let upgraded = app.stored_password_hash(&email).await.expect("a hash");
        assert!(upgraded.starts_with("$argon2id$"), "{what}: {upgraded}");
    }
    app.stop().await;
}

/// An operator who changes `LATCHKEY_ARGON2_MEMORY_KIB` / `LATCHKEY_ARGON2_ITERATIONS` keeps
/// every password: a hash of the old parameters still verifies, and is redone with the new
/// ones at its user's next successful sign-in (one instance after another on one database, as
/// in a rolling change).
async fn argon2_parameters_can_change_and_stored_hashes_follow_at_the_next_sign_in(backend: Backend) {
    const DEFAULT: &str = "$argon2id$v=19$m=19456,t=2,p=1$";
    const OWASP_7_MIB: &str = "$argon2id$v=19$m=7168,t=5,p=1$";
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("kept@example.com").await;
    let before = app.stored_password_hash("kept@example.com").await.expect("a hash");
    assert!(before.starts_with(DEFAULT), "{before}");

    let changed = app
        .another_instance_with(|c| {
            c.argon2_memory_kib = 7_168;
            c.argon2_iterations = 5;
        })
        .await;
    let wrong = changed.v1_sign_in("kept@example.com", "not the password").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(changed.stored_password_hash("kept@example.com").await.as_deref(), Some(before.as_str()));
    let signed_in = changed.v1_sign_in("kept@example.com", PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let redone = changed.stored_password_hash("kept@example.com").await.expect("a hash");
    assert!(redone.starts_with(OWASP_7_MIB), "{redone}");
    changed.v1_verified_user("new@example.com").await;
    let new = changed.stored_password_hash("new@example.com").await.expect("a hash");
    assert!(new.starts_with(OWASP_7_MIB), "{new}");

    // Back on the first instance's parameters, both sign in and are redone again.
    for email in ["kept@example.com", "new@example.com"] {
        let signed_in = app.signin(email, PASSWORD).await;
        assert_eq!(signed_in.status, 200, "{email}: {}", signed_in.body);
        let hash = app.stored_password_hash(email).await.expect("a hash");
        assert!(hash.starts_with(DEFAULT), "{email}: {hash}");
    }
    changed.stop().await;
    app.stop().await;
}

async fn a_stored_hash_of_absurd_cost_is_a_wrong_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("costly@example.com").await;
    let absurd = "$2b$31$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
    assert_eq!(app.store_password_hash("costly@example.com", absurd).await, 1);
    let started = std::time::Instant::now();
    let answer = app.v1_sign_in("costly@example.com", "any password at all").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the hash was not computed");
    assert_eq!(app.stored_password_hash("costly@example.com").await.as_deref(), Some(absurd));
    app.stop().await;
}

/// Standard output and standard error of a command, as text.
fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `latchkey import` of a dump with good rows (one per fixture hash, one without a hash) and
/// bad ones: the bad rows are reported by line and reason, the good ones imported, the
/// existing account untouched, a dry run stores nothing, a second run changes nothing, and
/// the imported users sign in with the other service's passwords, keeping their ids.
async fn import_reports_bad_rows_keeps_existing_accounts_and_is_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("existing@example.com").await;
    let existing_hash = app.stored_password_hash("existing@example.com").await;

    let fixtures: Vec<Fixture> = fixtures().into_iter().filter(|f| !f.hash.contains("1000000$")).collect();
    let kept_id = "0190a0c1-0000-7000-8000-00000000beef";
    let mut lines: Vec<String> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut row = json!({"email": format!("user{i}@example.com"), "email_verified": true,
                "password_hash": f.hash, "given_name": "Imported", "created_at": "2020-01-02T03:04:05Z"});
            if i == 0 {
                row["id"] = json!(kept_id);
            }
            row.to_string()
        })
        .collect();
    let good = lines.len() + 1;
    lines.push(json!({"email": "nohash@example.com", "email_verified": true}).to_string());
    lines.push(String::new());
    let bad = [
        ("{not json", "not an import row"),
        (r#"{"email": "not an email", "email_verified": true}"#, "email:"),
        (
            r#"{"email": "md5@example.com", "password_hash": "md5$abc$def"}"#,
            "password_hash: unknown password hash format",
        ),
        (
            r#"{"email": "costly@example.com", "password_hash": "$2b$31$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie"}"#,
            "password_hash: bcrypt hash cost too high",
        ),
        (
            r#"{"email": "EXISTING@example.com", "password_hash": "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie"}"#,
            "email: a user with this email already exists",
        ),
        (r#"{"email": "typo@example.com", "emial_verified": true}"#, "unknown field"),
    ];
    let first_bad = lines.len() + 1;
    lines.extend(bad.iter().map(|(line, _)| (*line).to_owned()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.jsonl");
    // And a last line that is not UTF-8.
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    bytes.extend_from_slice(b"{\"email\": \"\xff@example.com\"}\n");
    std::fs::write(&path, bytes).expect("write");
    let not_utf8 = format!("line {}: not an import row", first_bad + bad.len());
    let path = path.to_str().expect("utf-8 path");
    let users = || app.count("SELECT COUNT(*) FROM users WHERE email <> $1", "existing@example.com");

    // A dry run reports the same rows and stores nothing.
    let dry = app.latchkey_cli(&["import", "--dry-run", path]);
    let (stdout, stderr) = texts(&dry);
    assert!(!dry.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("would import {good}, unchanged 0, failed {}", bad.len() + 1), "{stderr}");
    assert_eq!(users().await, 0);

    let out = app.latchkey_cli(&["import", path]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success(), "a failed row fails the command");
    assert_eq!(stdout.trim(), format!("imported {good}, unchanged 0, failed {}", bad.len() + 1), "{stderr}");
    assert!(stderr.contains(&not_utf8), "{stderr}");
    for (i, (_, reason)) in bad.iter().enumerate() {
        let line = format!("line {}: ", first_bad + i);
        let reported = stderr.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("{line} in {stderr}"));
        assert!(reported.contains(reason), "{reported:?} should say {reason:?}");
    }
    assert_eq!(users().await, i64::try_from(good).expect("small"));
    assert_eq!(app.stored_password_hash("existing@example.com").await, existing_hash, "never overwritten");
    assert_eq!(app.v1_sign_in("existing@example.com", PASSWORD).await.status, 200);

    // The same file again changes nothing.
    let again = app.latchkey_cli(&["import", path]);
    let (stdout, stderr) = texts(&again);
    assert_eq!(stdout.trim(), format!("imported 0, unchanged {good}, failed {}", bad.len() + 1), "{stderr}");
    assert_eq!(users().await, i64::try_from(good).expect("small"));

    // The imported users sign in with their old passwords; the id was kept.
    for (i, f) in fixtures.iter().enumerate() {
        let email = format!("user{i}@example.com");
        let answer =
            if i % 2 == 0 { app.v1_sign_in(&email, &f.password).await } else { app.signin(&email, &f.password).await };
        assert_eq!(answer.status, 200, "{} {}: {}", f.format, f.hash, answer.body);
        if i == 0 {
            let (_, claims) = jwt_parts(answer.body["access_token"].as_str().expect("access token"));
            assert_eq!(claims["sub"], kept_id);
        }
        let stored = app.stored_password_hash(&email).await.expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
    }
    // Without a hash, only a password reset lets the user in; `v1` says so.
    let nohash = app.v1_sign_in("nohash@example.com", PASSWORD).await;
    assert_eq!(
        (nohash.status, nohash.body["code"].as_str()),
        (403, Some("password_reset_required")),
        "{}",
        nohash.body
    );
    app.stop().await;
}

/// Export, then import into an empty database: the users sign in there with the same
/// passwords, whether their hash was upgraded to argon2id or is still the imported one, keep
/// their ids, and a disabled user stays disabled.
async fn export_then_import_into_an_empty_database_keeps_every_password(backend: Backend) {
    let source = TestApp::spawn(backend).await;
    let fixtures: Vec<Fixture> = fixtures().into_iter().filter(|f| !f.hash.contains("1000000$")).collect();
    let dump: Vec<String> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({"email": format!("user{i}@example.com"), "email_verified": true, "password_hash": f.hash,
            "username": format!("user{i}"), "family_name": "Exported"})
            .to_string()
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, dump.join("\n")).expect("write");
    let imported = source.latchkey_cli(&["import", first.to_str().expect("path")]);
    assert!(imported.status.success(), "{}", texts(&imported).1);
    // user0 signs in (upgraded to argon2id); user1 is disabled; the others keep their hash.
    assert_eq!(source.v1_sign_in("user0@example.com", &fixtures[0].password).await.status, 200);
    assert!(source.latchkey_cli(&["user", "disable", "user1@example.com"]).status.success());

    let exported = source.latchkey_cli(&["export"]);
    let (stdout, stderr) = texts(&exported);
    assert!(exported.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("exported {}", fixtures.len())), "{stderr}");
    let rows: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(rows.len(), fixtures.len());
    let row = |email: &str| rows.iter().find(|r| r["email"] == email).unwrap_or_else(|| panic!("{email} exported"));
    assert!(row("user0@example.com")["password_hash"].as_str().is_some_and(|h| h.starts_with("$argon2id$")));
    assert_eq!(row("user1@example.com")["disabled"], true);
    for (i, f) in fixtures.iter().enumerate().skip(1) {
        let r = row(&format!("user{i}@example.com"));
        assert_eq!(r["password_hash"], f.hash.as_str(), "an imported hash is exported as it is");
        assert_eq!(r["family_name"], "Exported");
        assert_eq!(r["username"], format!("user{i}"));
    }
    let ids: Vec<String> = (0..fixtures.len())
        .map(|i| row(&format!("user{i}@example.com"))["id"].as_str().expect("id").to_owned())
        .collect();
    source.stop().await;

    let target = TestApp::spawn(backend).await;
    let second = dir.path().join("second.jsonl");
    std::fs::write(&second, &stdout).expect("write");
    let out = target.latchkey_cli(&["import", second.to_str().expect("path")]);
    let (summary, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(summary.trim(), format!("imported {}, unchanged 0, failed 0", fixtures.len()));
    for (i, f) in fixtures.iter().enumerate() {
        let email = format!("user{i}@example.com");
        let answer = target.v1_sign_in(&email, &f.password).await;
        if i == 1 {
            assert_ne!(answer.status, 200, "still disabled: {}", answer.body);
            continue;
        }
        assert_eq!(answer.status, 200, "{} {}: {}", f.format, f.hash, answer.body);
        let (_, claims) = jwt_parts(answer.body["access_token"].as_str().expect("access token"));
        assert_eq!(claims["sub"], ids[i].as_str(), "the id is kept");
    }
    // Importing the export again, after those sign-ins upgraded the hashes: the rows name
    // their users by id, so nothing changes and nothing fails.
    let again = target.latchkey_cli(&["import", second.to_str().expect("path")]);
    let (summary, stderr) = texts(&again);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(summary.trim(), format!("imported 0, unchanged {}, failed 0", fixtures.len()));
    target.stop().await;
}

/// CSV: a header naming some of the fields in any order, quoted cells (a comma and a line
/// break in an address), empty cells as absent values; bad records reported by their line.
async fn csv_rows_import_and_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fixtures: Vec<Fixture> = fixtures().into_iter().filter(|f| !f.hash.contains("1000000$")).collect();
    let mut csv = String::from("password_hash,email,email_verified,address,given_name\n");
    for (i, f) in fixtures.iter().enumerate() {
        // PHC strings hold commas, so the hash is quoted like the address.
        csv.push_str(&format!("\"{}\",csv{i}@example.com,true,\"1 Main St,\nSpringfield\",\n", f.hash));
    }
    // After the header line and two lines (the address's line break) per row.
    let first_bad = 2 * fixtures.len() + 2;
    csv.push_str(",not an email,true,,\n");
    csv.push_str("only,three,cells\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.csv");
    std::fs::write(&path, &csv).expect("write");
    let out = app.latchkey_cli(&["import", "--format", "csv", path.to_str().expect("path")]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert_eq!(stdout.trim(), format!("imported {}, unchanged 0, failed 2", fixtures.len()), "{stderr}");
    assert!(stderr.contains(&format!("line {first_bad}: email:")), "{stderr}");
    assert!(stderr.contains(&format!("line {}: not a CSV record", first_bad + 1)), "{stderr}");
    for (i, f) in fixtures.iter().enumerate() {
        let answer = app.v1_sign_in(&format!("csv{i}@example.com"), &f.password).await;
        assert_eq!(answer.status, 200, "{} {}: {}", f.format, f.hash, answer.body);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE address = $1", "1 Main St,\nSpringfield").await,
        i64::try_from(fixtures.len()).expect("small")
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE given_name IS NULL AND email LIKE $1", "csv%").await,
        i64::try_from(fixtures.len()).expect("small")
    );
    app.stop().await;
}

/// An export of more users than one page holds, many created at the same instant, lists each
/// user exactly once (keyset paging by creation time, then id).
async fn export_pages_list_every_user_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let total = 2345;
    let rows: Vec<String> = (0..total)
        .map(|i| {
            let created = format!("2020-01-0{}T00:00:00Z", 1 + i % 3);
            json!({"email": format!("many{i}@example.com"), "email_verified": true, "created_at": created}).to_string()
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.jsonl");
    std::fs::write(&path, rows.join("\n")).expect("write");
    let out = app.latchkey_cli(&["import", path.to_str().expect("path")]);
    assert!(out.status.success(), "{}", texts(&out).1);

    let exported = app.latchkey_cli(&["export"]);
    let (stdout, stderr) = texts(&exported);
    assert!(exported.status.success(), "{stderr}");
    let emails: std::collections::BTreeSet<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["email"].as_str().expect("email").to_owned())
        .collect();
    assert_eq!(stdout.lines().count(), total);
    assert_eq!(emails.len(), total, "no user twice");
    let dates: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["created_at"].as_str().expect("date").to_owned())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    app.stop().await;
}

/// `--format cognito`: `aws cognito-idp list-users` output (two documents in a row, dates as
/// the CLI's ISO strings and the API's epoch seconds) imports with `sub` as the id, the
/// verified flag and `Enabled`; a bad email and a non-object are reported; the users, who have
/// no password, sign in after a password reset, with their Cognito `sub` as the token subject.
async fn cognito_list_users_output_imports_with_sub_as_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let attrs = |sub: &str, email: &str| {
        json!([{"Name": "sub", "Value": sub}, {"Name": "email", "Value": email},
               {"Name": "email_verified", "Value": "true"}, {"Name": "given_name", "Value": "Cog"}])
    };
    let first = json!({"Users": [
        {"Username": "ana", "Attributes": attrs("7d8a4c1e-2b3f-4a5b-8c6d-9e0f1a2b3c4d", "ana@example.com"),
         "UserCreateDate": "2021-02-18T12:31:48.282000+00:00", "UserLastModifiedDate": "2021-02-18T12:31:48.282000+00:00",
         "Enabled": true, "UserStatus": "CONFIRMED"},
        {"Username": "ben", "Attributes": attrs("8e9b5d2f-3c4a-4b6c-9d7e-0f1a2b3c4d5e", "ben@example.com"),
         "UserCreateDate": "2021-02-19T12:31:48+00:00", "Enabled": false, "UserStatus": "CONFIRMED"}
    ], "PaginationToken": "abc"});
    let second = json!({"Users": [
        {"Username": "cy", "Attributes": attrs("9fac6e3a-4d5b-4c7d-8e8f-1a2b3c4d5e6f", "cy@example.com"),
         "UserCreateDate": 1613651508.282, "Enabled": true, "UserStatus": "RESET_REQUIRED"},
        {"Username": "bad", "Attributes": attrs("aaaaaaaa-4d5b-4c7d-8e8f-1a2b3c4d5e6f", "not an email"), "Enabled": true},
        42
    ]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cognito.json");
    std::fs::write(&path, format!("{first:#}\n{second}\n")).expect("write");
    let out = app.latchkey_cli(&["import", "--format", "cognito", path.to_str().expect("path")]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert_eq!(stdout.trim(), "imported 3, unchanged 0, failed 2", "{stderr}");
    assert!(stderr.contains("user 4 (bad): email:"), "{stderr}");
    assert!(stderr.contains("user 5: not a Cognito user"), "{stderr}");
    // Input cut inside a document fails the command (the users before the cut are kept).
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, r#"{"Users": [{"Username": "dee", "Attributes": []}, {"Username": "#).expect("write");
    let out = app.latchkey_cli(&["import", "--format", "cognito", cut.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(texts(&out).1.contains("not `aws cognito-idp list-users` output"), "{}", texts(&out).1);

    let listed = app.latchkey_cli(&["--json", "user", "list", "--tenant", "default"]);
    let listed: Value = serde_json::from_slice(&listed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&listed.stderr)));
    let user = |email: &str| {
        listed["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == email)
            .cloned()
            .unwrap_or_else(|| panic!("{email}: {listed}"))
    };
    assert_eq!(user("ana@example.com")["id"], "7d8a4c1e-2b3f-4a5b-8c6d-9e0f1a2b3c4d");
    assert_eq!(user("ana@example.com")["email_verified"], true);
    assert_eq!(user("ana@example.com")["created_at"], "2021-02-18T12:31:48.282Z");
    assert_eq!(user("ben@example.com")["disabled"], true);
    assert_eq!(user("cy@example.com")["created_at"], "2021-02-18T12:31:48.282Z");

    // No password: a sign-in is told to reset it, until a reset sets one.
    let before = app.v1_sign_in("ana@example.com", PASSWORD).await;
    assert_eq!(
        (before.status, before.body["code"].as_str()),
        (403, Some("password_reset_required")),
        "{}",
        before.body
    );
    assert_eq!(app.v1_forgot_password("ana@example.com").await.status, 202);
    let code = app.mail.next_mail("ana@example.com").await.code();
    let reset = app.v1_reset_password("ana@example.com", code, PASSWORD).await;
    assert_eq!(reset.status, 204, "{}", reset.body);
    let signed_in = app.v1_sign_in("ana@example.com", PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let (_, claims) = jwt_parts(signed_in.body["access_token"].as_str().expect("access token"));
    assert_eq!(claims["sub"], "7d8a4c1e-2b3f-4a5b-8c6d-9e0f1a2b3c4d");
    app.stop().await;
}

/// A verified user imported without a hash: `v1` answers `password_reset_required` (its wire
/// contract has it), the seed surfaces their wrong-password answer, byte for byte the one a
/// wrong password of an existing user gets; a reset lets the user in everywhere.
async fn users_without_a_hash_are_told_to_reset_only_where_the_wire_contract_says_so(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, password) = ("hashless@example.com", "k7#mq2vz-Tern-81");
    app.v1_verified_user("has-one@example.com").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.jsonl");
    std::fs::write(&path, json!({"email": email, "email_verified": true}).to_string()).expect("write");
    let out = app.latchkey_cli(&["import", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{:?}", texts(&out));

    let v1 = app.v1_sign_in(email, password).await;
    assert_eq!(v1.status, 403, "{}", v1.body);
    assert_eq!(v1.body["code"], "password_reset_required");
    assert_eq!(v1.header("content-type"), Some("application/problem+json"));
    // `users`, `projects` and `graphql` read as a wrong password of an existing user does.
    let wrong = app.signin("has-one@example.com", password).await;
    let users = app.signin(email, password).await;
    assert_eq!((users.status, &users.body), (401, &wrong.body));
    assert_eq!(users.body["errorType"], "NOT_AUTHERIZED");
    let wrong = app.projects_login("has-one@example.com", password).await;
    let projects = app.projects_login(email, password).await;
    assert_eq!((projects.status, &projects.body), (401, &wrong.body));
    let app = &app;
    let login = |who: &str| {
        let document =
            format!("mutation {{ loginUser(email: \"{who}\", password: \"{password}\") {{ exitcode msg }} }}");
        let body = json!({ "query": document });
        async move { app.send_json(reqwest::Method::POST, "/graphql", &body).await }
    };
    let (wrong, graphql) = (login("has-one@example.com").await, login(email).await);
    assert_eq!(graphql.body["data"]["loginUser"], wrong.body["data"]["loginUser"], "{}", graphql.body);
    assert_eq!(graphql.body["data"]["loginUser"]["exitcode"], 3);

    // A reset sets the password; then every surface signs in.
    assert_eq!(app.v1_forgot_password(email).await.status, 202);
    let code = app.mail.next_mail(email).await.code();
    assert_eq!(app.v1_reset_password(email, code, password).await.status, 204);
    assert_eq!(app.v1_sign_in(email, password).await.status, 200);
    assert_eq!(app.signin(email, password).await.status, 200);
    assert!(app.stored_password_hash(email).await.is_some_and(|h| h.starts_with("$argon2id$")));
}

/// More rows than one batch holds, with clashes inside a batch and across batches: the
/// outcome and the report are those of importing the rows one by one, in order.
async fn batches_import_like_rows_one_by_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.v1_verified_user("already@example.com").await;
    let hash = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
    let mut lines: Vec<Value> = (0..1203)
        .map(|i| {
            json!({"email": format!("bulk{i}@example.com"), "email_verified": true, "password_hash": hash,
                        "username": format!("bulk-{i}"), "external_id": format!("E{i}")})
        })
        .collect();
    // Clashes (line = index + 1): within the first batch, across batches, and with a stored user.
    lines[9] = json!({"email": "BULK3@example.com", "password_hash": hash}); // same email and hash as line 4
    lines[19] = json!({"email": "other19@example.com", "username": "bulk-5"}); // username of line 6
    lines[699] = json!({"email": "other699@example.com", "username": "bulk-1"}); // across batches
    lines[1099] = json!({"email": "other1099@example.com", "external_id": "E2"}); // across batches
    lines[1100] = json!({"email": "already@example.com"}); // a stored user, another hash
    lines[1101] = json!({"email": "bulk1102@example.com", "email_verified": true, "password_hash": hash,
                         "username": "bulk-1102", "external_id": "E1102"}); // line 1103 repeats it
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bulk.jsonl");
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n")).expect("write");
    let path = path.to_str().expect("utf-8 path");

    let out = app.latchkey_cli(&["import", path]);
    let (stdout, stderr) = texts(&out);
    let expected = [
        "line 20: username: already taken",
        "line 700: username: already taken",
        "line 1100: external_id: already taken",
        "line 1101: email: a user with this email already exists",
    ];
    assert_eq!(stdout.trim(), "imported 1197, unchanged 2, failed 4", "{stderr}");
    let reported: Vec<&str> = stderr.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(reported, expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email LIKE $1", "bulk%").await, 1197);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE username = $1", "bulk-5").await, 1);

    // Again: nothing changes, the same rows fail.
    let again = app.latchkey_cli(&["import", path]);
    let (stdout, stderr) = texts(&again);
    assert_eq!(stdout.trim(), "imported 0, unchanged 1199, failed 4", "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("line ")).collect::<Vec<_>>(), expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email LIKE $1", "bulk%").await, 1197);
    app.stop().await;
}

on_both_backends!(
    users_without_a_hash_are_told_to_reset_only_where_the_wire_contract_says_so,
    batches_import_like_rows_one_by_one,
    imported_hashes_sign_in_on_v1_and_users_and_are_upgraded_once,
    argon2_parameters_can_change_and_stored_hashes_follow_at_the_next_sign_in,
    a_stored_hash_of_absurd_cost_is_a_wrong_password,
    import_reports_bad_rows_keeps_existing_accounts_and_is_idempotent,
    export_then_import_into_an_empty_database_keeps_every_password,
    csv_rows_import_and_sign_in,
    export_pages_list_every_user_once,
    cognito_list_users_output_imports_with_sub_as_id,
);
