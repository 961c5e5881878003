//! The `realtime` surface (`GET /ws`): the seed's three actions over a real WebSocket, every
//! error a client can provoke, and the push that tells sockets their session was revoked,
//! wherever it was revoked.

use latchkey_server::config::Config;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    Backend, Ended, Socket, TestApp, Tokens, captured_logs, login_frame, signup_frame, silent_socket_until_dropped,
};
use crate::on_both_backends;

/// A server whose sockets may send many frames at once (the tests send bursts).
async fn spawn_unthrottled(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.surface_settings.insert("realtime_frames_per_second", "1000")).await
}

/// Asserts an error reply: the socket's sender, the action (or null) and the code.
fn assert_error(frame: &Value, action: Option<&str>, code: &str) {
    assert!(frame["sender"].as_str().is_some_and(|s| !s.is_empty()), "{frame}");
    assert_eq!(frame["action"], action.map_or(Value::Null, |a| Value::String(a.into())), "{frame}");
    assert_eq!(frame["error"]["code"], code, "{frame}");
    assert!(frame["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{frame}");
    assert!(frame.get("message").is_none(), "{frame}");
}

/// Asserts the push of a revoked session.
fn assert_revoked(frame: &Value, sender: &Value, sid: &str) {
    assert_eq!(frame, &json!({"sender": sender, "action": "session-revoked", "message": {"sid": sid}}));
}

/// Signs `socket` in with `tokens` (`user-login`) and checks the reply.
async fn logged_in(socket: &mut Socket, email: &str, tokens: &Tokens) -> Value {
    let reply = socket.request(&login_frame("user-login", email, tokens)).await;
    assert_eq!(reply["message"]["message"], "user logged in", "{reply}");
    reply["sender"].clone()
}

async fn profile_rows(app: &TestApp, email: &str, logged_in: bool) -> i64 {
    let sql = if logged_in {
        "SELECT COUNT(*) FROM realtime_profiles WHERE email = $1 AND logged_in = TRUE"
    } else {
        "SELECT COUNT(*) FROM realtime_profiles WHERE email = $1 AND logged_in = FALSE"
    };
    app.count(sql, email).await
}

async fn the_seeds_signup_login_and_logout(backend: Backend) {
    let app = spawn_unthrottled(backend).await;
    let email = "ada@example.com";
    let (tokens, cog_id) = app.realtime_user(email).await;
    assert!(cog_id.starts_with("local-1:"), "{cog_id}");
    let mut socket = app.ws_connect().await;

    let created = socket.request(&signup_frame(&cog_id, email, &tokens)).await;
    let sender = created["sender"].clone();
    assert!(sender.as_str().is_some_and(|s| s.len() >= 16), "{created}");
    let user = json!({"cogId": cog_id, "username": email, "email": email, "loggedIn": true});
    assert_eq!(
        created,
        json!({"sender": sender, "action": "user-signup", "message": {"message": "user created", "user": user}})
    );
    assert_eq!(profile_rows(&app, email, true).await, 1, "the profile is stored, logged in");
    for token in [&tokens.access, &tokens.id, &tokens.refresh] {
        let stored = app
            .count(
                "SELECT COUNT(*) FROM realtime_profiles WHERE identity_id = $1 OR username = $1 OR email = $1",
                token,
            )
            .await;
        assert_eq!(stored, 0, "tokens are not stored");
    }

    let logs = captured_logs();
    for token in [&tokens.access, &tokens.id, &tokens.refresh] {
        assert!(!logs.contains(token.as_str()), "a token was logged");
    }

    let again = socket.request(&login_frame("user-login", email, &tokens)).await;
    assert_eq!(
        again,
        json!({"sender": sender, "action": "user-login", "message": {"message": "user logged in", "user": user}})
    );

    // Another socket of the same session; a third socket of another session of the user.
    let mut other_tab = app.ws_connect().await;
    let other_sender = logged_in(&mut other_tab, email, &tokens).await;
    assert_ne!(other_sender, sender, "every connection has its own sender id");
    let second = app.v1_signed_in(email).await;
    let mut other_session = app.ws_connect().await;
    logged_in(&mut other_session, email, &second).await;

    let out = socket.request(&login_frame("user-logout", email, &tokens)).await;
    let user_out = json!({"cogId": cog_id, "username": email, "email": email, "loggedIn": false});
    assert_eq!(
        out,
        json!({"sender": sender, "action": "user-logout", "message": {"message": "user logged out", "user": user_out}})
    );
    assert_eq!(app.revoked_sessions(&tokens.sid()).await, 1, "the session is revoked");
    assert_eq!(app.v1_me(&tokens.access).await.status, 401);
    assert_eq!(profile_rows(&app, email, false).await, 1);
    assert_eq!(profile_rows(&app, email, true).await, 0);

    assert_revoked(&other_tab.next_frame().await, &other_sender, &tokens.sid());
    // The other session is untouched: its socket still works and got no push.
    let still = other_session.request(&login_frame("user-login", email, &second)).await;
    assert_eq!(still["message"]["message"], "user logged in", "{still}");
    // The revoked tokens now get an error, and the socket stays open.
    let refused = socket.request(&login_frame("user-login", email, &tokens)).await;
    assert_error(&refused, Some("user-login"), "session_revoked");
    assert_eq!(socket.request(&login_frame("user-login", email, &second)).await["action"], "user-login");
    assert!(socket.close().await, "the server answers a close with a close");
}

async fn forged_foreign_and_stale_tokens_get_errors(backend: Backend) {
    let app = spawn_unthrottled(backend).await;
    let (mine, cog_id) = app.realtime_user("bea@example.com").await;
    let (theirs, their_cog_id) = app.realtime_user("cal@example.com").await;
    let mut socket = app.ws_connect().await;
    let email = "bea@example.com";

    let with = |change: &dyn Fn(&mut Tokens)| {
        let mut tokens = mine.clone();
        change(&mut tokens);
        tokens
    };
    // One character in the middle of the signature changed.
    let mut forged = mine.access.clone();
    let at = forged.rfind('.').expect("signature") + 10;
    let swapped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, swapped);
    let cases: Vec<(&str, Value)> = vec![
        ("forged access token", signup_frame(&cog_id, email, &with(&|t| t.access = forged.clone()))),
        ("an ID token as access token", signup_frame(&cog_id, email, &with(&|t| t.access = t.id.clone()))),
        ("another user's tokens", signup_frame(&cog_id, email, &theirs)),
        ("another user's cogId", signup_frame(&their_cog_id, email, &mine)),
        ("another user's email", signup_frame(&cog_id, "cal@example.com", &mine)),
        ("tokens of two sessions", signup_frame(&cog_id, email, &with(&|t| t.id = theirs.id.clone()))),
        (
            "another session's refresh token",
            signup_frame(&cog_id, email, &with(&|t| t.refresh = theirs.refresh.clone())),
        ),
        ("a made-up refresh token", signup_frame(&cog_id, email, &with(&|t| t.refresh = "x".repeat(86)))),
    ];
    for (what, frame) in &cases {
        let reply = socket.request(frame).await;
        assert_eq!(reply["error"]["code"], "invalid_token", "{what}: {reply}");
        assert_error(&reply, Some("user-signup"), "invalid_token");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM realtime_profiles WHERE email = $1", email).await, 0);

    // Presenting the refresh token here does not rotate it: v1 still refreshes with it.
    let accepted = socket.request(&login_frame("user-login", email, &mine)).await;
    assert_eq!(accepted["message"]["message"], "user logged in", "{accepted}");
    let refreshed = app.v1_refresh(&mine.refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    // Once rotated, the old refresh token is refused here (and nothing is revoked for it).
    let stale = socket.request(&login_frame("user-login", email, &mine)).await;
    assert_error(&stale, Some("user-login"), "invalid_token");
    assert_eq!(app.revoked_sessions(&mine.sid()).await, 0, "a read-only check revokes nothing");
    let current = Tokens { refresh: refreshed.body["refresh_token"].as_str().expect("refresh").into(), ..mine.clone() };
    assert_eq!(socket.request(&login_frame("user-login", email, &current)).await["action"], "user-login");

    // A revoked session's tokens.
    assert_eq!(app.v1_sign_out(&theirs.access).await.status, 204);
    let revoked = socket.request(&login_frame("user-login", "cal@example.com", &theirs)).await;
    assert_error(&revoked, Some("user-login"), "session_revoked");
    // The email is compared case-insensitively.
    let upper = socket.request(&login_frame("user-login", "BEA@Example.com", &current)).await;
    assert_eq!(upper["message"]["user"]["email"], email, "{upper}");
}

async fn malformed_frames_get_errors_and_the_socket_stays_open(backend: Backend) {
    let app = spawn_unthrottled(backend).await;
    let (tokens, cog_id) = app.realtime_user("dan@example.com").await;
    let mut socket = app.ws_connect().await;
    let texts: &[(&str, Option<&str>, &str)] = &[
        ("not json", None, "malformed_frame"),
        ("[1,2]", None, "malformed_frame"),
        ("\"user-login\"", None, "malformed_frame"),
        ("{}", None, "malformed_frame"),
        (r#"{"action": 7}"#, None, "malformed_frame"),
        (r#"{"action": "user-delete", "message": {}}"#, Some("user-delete"), "unknown_action"),
        (r#"{"action": "user-login"}"#, Some("user-login"), "invalid_input"),
        (r#"{"action": "user-login", "message": "hi"}"#, Some("user-login"), "invalid_input"),
        (r#"{"action": "user-login", "message": {}}"#, Some("user-login"), "invalid_input"),
        (r#"{"action": "user-login", "message": {"email": "dan@example.com"}}"#, Some("user-login"), "invalid_input"),
        (
            r#"{"action": "user-login", "message": {"email": 5, "accessToken": "x"}}"#,
            Some("user-login"),
            "invalid_input",
        ),
        (
            r#"{"action": "user-login", "message": {"email": "not-an-email", "accessToken": "x"}}"#,
            Some("user-login"),
            "invalid_input",
        ),
        (
            r#"{"action": "user-signup", "message": {"email": "dan@example.com", "accessToken": "x", "idToken": "y"}}"#,
            Some("user-signup"),
            "invalid_input",
        ),
        (
            r#"{"action": "user-logout", "message": {"email": "dan@example.com", "accessToken": "garbage"}}"#,
            Some("user-logout"),
            "invalid_token",
        ),
    ];
    for (text, action, code) in texts {
        socket.send(Message::Text((*text).into())).await;
        let reply = socket.next_frame().await;
        assert_error(&reply, *action, code);
    }
    socket.send(Message::Binary(vec![1, 2, 3].into())).await;
    assert_error(&socket.next_frame().await, None, "malformed_frame");
    // A username other than the email is refused.
    let mut frame = signup_frame(&cog_id, "dan@example.com", &tokens);
    frame["message"]["username"] = json!("someone-else");
    assert_error(&socket.request(&frame).await, Some("user-signup"), "invalid_input");
    // A frame of exactly 64 KiB is read (and refused as JSON), not closed.
    socket.send(Message::Text("x".repeat(64 * 1024).into())).await;
    assert_error(&socket.next_frame().await, None, "malformed_frame");
    // Still open and working.
    let ok = socket.request(&signup_frame(&cog_id, "dan@example.com", &tokens)).await;
    assert_eq!(ok["message"]["message"], "user created", "{ok}");
    // One byte over closes with 1009.
    socket.send(Message::Text("x".repeat(64 * 1024 + 1).into())).await;
    assert!(matches!(socket.ended().await, Ended::Closed(1009)));
}

async fn revocations_anywhere_are_pushed(backend: Backend) {
    let app = spawn_unthrottled(backend).await;
    let email = "eve@example.com";
    let (first, _) = app.realtime_user(email).await;
    let mut socket = app.ws_connect().await;
    let sender = logged_in(&mut socket, email, &first).await;

    // v1 sign-out of this session.
    assert_eq!(app.v1_sign_out(&first.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &first.sid());

    // v1 sign-out everywhere: every socket of every session is told.
    let (a, b) = (app.v1_signed_in(email).await, app.v1_signed_in(email).await);
    let mut socket_b = app.ws_connect().await;
    let sender_b = logged_in(&mut socket_b, email, &b).await;
    logged_in(&mut socket, email, &a).await;
    assert_eq!(app.v1_sign_out_everywhere(&b.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &a.sid());
    assert_revoked(&socket_b.next_frame().await, &sender_b, &b.sid());

    // Refresh token reuse revokes the session: pushed too.
    let c = app.v1_signed_in(email).await;
    logged_in(&mut socket, email, &c).await;
    let rotated = app.v1_refresh(&c.refresh).await;
    assert_eq!(rotated.status, 200);
    let successor = rotated.body["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(app.v1_refresh(&successor).await.status, 200);
    assert_eq!(app.v1_refresh(&c.refresh).await.status, 401, "the replay of a used token");
    assert_revoked(&socket.next_frame().await, &sender, &c.sid());

    // A password reset ends every session.
    let d = app.v1_signed_in(email).await;
    logged_in(&mut socket, email, &d).await;
    assert_eq!(app.v1_forgot_password(email).await.status, 202);
    let code = app.mail.next_mail(email).await.code();
    assert_eq!(app.v1_reset_password(email, code, "a brand new password").await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &d.sid());

    // Only the signed-in session's revocation is pushed: signing out another one is not.
    let e = app.v1_signed_in_with(email, "a brand new password").await;
    let f = app.v1_signed_in_with(email, "a brand new password").await;
    logged_in(&mut socket, email, &e).await;
    assert_eq!(app.v1_sign_out(&f.access).await.status, 204);
    assert_eq!(app.v1_sign_out(&e.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &e.sid());
}

async fn the_cli_reaches_running_instances(backend: Backend) {
    // On SQLite the CLI's process has no channel to the server: its revocation reaches the
    // socket at the next ping, when the session row is read again.
    let app = TestApp::spawn_with(backend, |c| {
        if backend == Backend::Sqlite {
            c.surface_settings.insert("realtime_ping_interval", "200ms");
        }
    })
    .await;
    let email = "fay@example.com";
    let (tokens, _) = app.realtime_user(email).await;
    let mut socket = app.ws_connect().await;
    let sender = logged_in(&mut socket, email, &tokens).await;
    let out = tokio::task::block_in_place(|| app.latchkey_cli(&["users", "disable", email]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_revoked(&socket.next_frame().await, &sender, &tokens.sid());
}

async fn a_revocation_on_one_instance_reaches_sockets_on_another(backend: Backend) {
    // On PostgreSQL with the default 30 s ping, only a NOTIFY can bring the push in time; on
    // SQLite (no channel between processes) the next ping's session check does.
    let tweak = |c: &mut Config| {
        if backend == Backend::Sqlite {
            c.surface_settings.insert("realtime_ping_interval", "200ms");
        }
    };
    let a = TestApp::spawn_with(backend, tweak).await;
    let b = a.another_instance_with(tweak).await;
    let email = "gus@example.com";
    let (tokens, cog_id) = a.realtime_user(email).await;
    let mut socket = b.ws_connect().await;
    let created = socket.request(&signup_frame(&cog_id, email, &tokens)).await;
    assert_eq!(created["message"]["message"], "user created", "{created}");
    let sender = created["sender"].clone();
    assert_eq!(a.v1_sign_out_everywhere(&tokens.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &tokens.sid());
}

async fn shutdown_closes_sockets_with_1001(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let mut socket = app.ws_connect().await;
    // The connection is served: it answers a frame.
    assert_error(&socket.request(&json!({})).await, None, "malformed_frame");
    app.begin_shutdown();
    assert!(matches!(socket.ended().await, Ended::Closed(1001)));
    app.stop().await;
}

async fn idle_sockets_are_pinged_and_silent_ones_dropped(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.surface_settings.insert("realtime_ping_interval", "100ms")).await;
    // A client that answers pings stays: after several intervals it is still served.
    let mut live = app.ws_connect().await;
    live.pings(4).await;
    assert_error(&live.request(&json!({})).await, None, "malformed_frame");
    // One that never answers is dropped (its read reaches the end of the stream).
    let sent = silent_socket_until_dropped(&app).await;
    assert!(sent > 0, "the upgrade answer and pings arrived before the drop");
}

async fn limits_per_socket_and_per_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.surface_settings.insert("realtime_sockets_per_address", "2");
        c.surface_settings.insert("realtime_frames_per_second", "1");
    })
    .await;
    let mut first = app.ws_connect().await;
    let mut second = app.ws_connect().await;
    assert_eq!(app.ws_try_connect().await.err(), Some(429), "a third socket from one address");
    // A closed socket gives its place back.
    assert!(second.close().await);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let _third = loop {
        match app.ws_try_connect().await {
            Ok(socket) => break socket,
            Err(status) => assert_eq!(status, 429),
        }
        assert!(tokio::time::Instant::now() < deadline, "the closed socket's place never came back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(app.ws_try_connect().await.err(), Some(429), "still two at most");

    // A burst beyond twice the per-second rate is answered rate_limited, unverified.
    for _ in 0..6 {
        first.send_json(&json!({})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(first.next_frame().await["error"]["code"].as_str().expect("code").to_owned());
    }
    assert!(codes.iter().filter(|c| *c == "malformed_frame").count() >= 2, "{codes:?}");
    assert!(codes.iter().filter(|c| *c == "rate_limited").count() >= 3, "{codes:?}");
    // A flood (pings count too) closes the socket with 1008.
    for _ in 0..40 {
        first.send(Message::Ping(Default::default())).await;
    }
    assert!(matches!(first.ended().await, Ended::Closed(1008)));
}

async fn a_plain_request_to_ws_is_refused_in_the_frame_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/ws").await;
    assert!((400..500).contains(&response.status), "{}", response.status);
    assert_eq!(response.body["error"]["code"], "not_a_websocket", "{}", response.body);
}

on_both_backends!(
    the_seeds_signup_login_and_logout,
    forged_foreign_and_stale_tokens_get_errors,
    malformed_frames_get_errors_and_the_socket_stays_open,
    revocations_anywhere_are_pushed,
    the_cli_reaches_running_instances,
    a_revocation_on_one_instance_reaches_sockets_on_another,
    shutdown_closes_sockets_with_1001,
    idle_sockets_are_pinged_and_silent_ones_dropped,
    limits_per_socket_and_per_address,
    a_plain_request_to_ws_is_refused_in_the_frame_shape,
);

/// On PostgreSQL: the listening connection is killed (as a restart or failover would); the
/// instance listens again on a new connection, and later revocations are pushed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_listener_comes_back_after_its_connection_dies() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let email = "hal@example.com";
    let (tokens, _) = app.realtime_user(email).await;
    let mut socket = app.ws_connect().await;
    let sender = logged_in(&mut socket, email, &tokens).await;

    // The newest connection whose last statement was a LISTEN (0: none right now).
    const LISTENER_PID: &str = "SELECT COALESCE((SELECT pid::bigint FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE $1 ORDER BY backend_start DESC LIMIT 1), 0)";
    let old = app.count(LISTENER_PID, "LISTEN%").await;
    let killed = app
        .count(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid::bigint = $1::bigint",
            &old.to_string(),
        )
        .await;
    assert_eq!(killed, 1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    assert_ne!(old, 0, "the instance listens");
    while matches!(app.count(LISTENER_PID, "LISTEN%").await, pid if pid == old || pid == 0) {
        assert!(tokio::time::Instant::now() < deadline, "no new listening connection within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // With the default 30 s ping, only a notification can bring this in time.
    let b = app.another_instance().await;
    assert_eq!(b.v1_sign_out(&tokens.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &tokens.sid());
}

/// On PostgreSQL the listening connection is not taken from the pool: a pool of one still
/// serves every request, and pushes still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_takes_no_connection_from_the_pool() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.database_max_connections = 1).await;
    let email = "ivy@example.com";
    let (tokens, _) = app.realtime_user(email).await;
    let mut socket = app.ws_connect().await;
    let sender = logged_in(&mut socket, email, &tokens).await;
    assert_eq!(app.v1_sign_out(&tokens.access).await.status, 204);
    assert_revoked(&socket.next_frame().await, &sender, &tokens.sid());
}
