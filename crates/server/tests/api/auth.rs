//! The `auth` surface (seed 004, API.md `auth`) as a client sees it: the envelope, the three
//! session cookies and their attributes, every V-code input can reach, refresh rotation with
//! the grace window and reuse detection, and one directory shared with `v1`.
//!
//! The request helpers of this surface live here: [`Jar`] holds the cookies a browser would
//! hold and sends each only to the paths it was set for.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::Method;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{ApiResponse, Backend, PASSWORD, TestApp, jwt_parts, send};
use crate::on_both_backends;

const REFRESH_PATH: &str = "/auth/session/refresh";
/// The seed's message for V1009.
const INVALID_CREDENTIALS: &str = "Invalid email or password";
const COOKIES: [&str; 3] = ["sAccessToken", "sRefreshToken", "sIdRefreshToken"];

/// What a client of this surface checks in an answer: the envelope and the cookies.
trait Envelope {
    /// Asserts a success envelope with `status` 200 and returns its `content` (`null` if none).
    fn ok(&self) -> Value;
    /// Asserts an error envelope with this HTTP status and V-code; returns the message.
    fn error(&self, status: u16, code: &str) -> String;
    /// Asserts that the response clears all three cookies, each on the path it is set with.
    fn assert_clears_cookies(&self);
}

impl Envelope for ApiResponse {
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_envelope(&self.body, 200);
        assert!(self.body.get("error").is_none(), "{}", self.body);
        self.body.get("content").cloned().unwrap_or(Value::Null)
    }

    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_envelope(&self.body, status);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert!(self.body.get("content").is_none(), "{}", self.body);
        self.body["error"]["message"].as_str().expect("message").to_owned()
    }

    fn assert_clears_cookies(&self) {
        for name in COOKIES {
            let header = self.set_cookie(name).unwrap_or_else(|| panic!("{name} is cleared: {:?}", self.headers));
            assert!(header.starts_with(&format!("{name}=;")), "{header}");
            assert!(header.contains("Max-Age=0"), "{header}");
            assert!(header.contains(&format!("Path={}", path_of(name))), "{header}");
        }
    }
}

/// The path each cookie is set with (API.md `auth`).
fn path_of(name: &str) -> &'static str {
    if name == "sRefreshToken" { REFRESH_PATH } else { "/" }
}

/// `{"status", "timestamp"}` of the envelope: the HTTP status, and the time in UTC with
/// milliseconds (`YYYY-MM-DDTHH:MM:SS.sssZ`), about now.
fn assert_envelope(body: &Value, status: u16) {
    assert_eq!(body["status"], status, "{body}");
    let ts = body["timestamp"].as_str().unwrap_or_else(|| panic!("timestamp: {body}"));
    let shape: String = ts.chars().map(|c| if c.is_ascii_digit() { 'd' } else { c }).collect();
    assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ", "{ts}");
    let at = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    assert!((time::OffsetDateTime::now_utc() - at).abs() < time::Duration::minutes(5), "{ts}");
}

/// The cookies a browser holds for the server, each sent only to the paths it was set for.
#[derive(Debug, Clone, Default)]
struct Jar {
    access: Option<String>,
    refresh: Option<String>,
    id_refresh: Option<String>,
}

impl Jar {
    /// Applies a response's `Set-Cookie` headers (an empty value clears).
    fn absorb(&mut self, answer: &ApiResponse) {
        for (name, slot) in [
            ("sAccessToken", &mut self.access),
            ("sRefreshToken", &mut self.refresh),
            ("sIdRefreshToken", &mut self.id_refresh),
        ] {
            if let Some(value) = answer.cookie(name) {
                *slot = (!value.is_empty()).then_some(value);
            }
        }
    }

    /// The `Cookie` header for a request to `path`, if any cookie applies.
    fn header_for(&self, path: &str) -> Option<String> {
        let mut pairs = Vec::new();
        if let Some(v) = &self.access {
            pairs.push(format!("sAccessToken={v}"));
        }
        if let Some(v) = self.refresh.as_ref().filter(|_| path.starts_with(REFRESH_PATH)) {
            pairs.push(format!("sRefreshToken={v}"));
        }
        if let Some(v) = &self.id_refresh {
            pairs.push(format!("sIdRefreshToken={v}"));
        }
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// The access token's `sid` claim.
    fn sid(&self) -> String {
        let access = self.access.as_deref().expect("an access token");
        jwt_parts(access).1["sid"].as_str().expect("sid").to_owned()
    }
}

/// Sends `method path` with the jar's cookies for that path and an optional JSON body.
async fn send_with(app: &TestApp, method: Method, path: &str, jar: &Jar, body: Option<&Value>) -> ApiResponse {
    let mut request = app.request(method, path);
    if let Some(cookies) = jar.header_for(path) {
        request = request.header(COOKIE, cookies);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    send(request).await
}

/// `POST /auth/signup` with `body`.
async fn signup_with(app: &TestApp, body: &Value) -> ApiResponse {
    send_with(app, Method::POST, "/auth/signup", &Jar::default(), Some(body)).await
}

/// Signs `username` up (employee `employee_id`) and returns the browser's jar and `content`.
async fn signed_up(app: &TestApp, username: &str, employee_id: Value) -> (Jar, Value) {
    let answer =
        signup_with(app, &json!({"username": username, "password": PASSWORD, "employee_id": employee_id})).await;
    let content = answer.ok();
    let mut jar = Jar::default();
    jar.absorb(&answer);
    (jar, content)
}

/// `POST /auth/signin`.
async fn signin(app: &TestApp, username: &str, password: &str) -> ApiResponse {
    send_with(
        app,
        Method::POST,
        "/auth/signin",
        &Jar::default(),
        Some(&json!({"username": username, "password": password})),
    )
    .await
}

/// `GET /auth/user` with the jar's cookies.
async fn user(app: &TestApp, jar: &Jar) -> ApiResponse {
    send_with(app, Method::GET, "/auth/user", jar, None).await
}

/// `POST /auth/session/refresh` with the jar's cookies.
async fn refresh(app: &TestApp, jar: &Jar) -> ApiResponse {
    send_with(app, Method::POST, REFRESH_PATH, jar, None).await
}

/// `GET /auth/signout` with the jar's cookies.
async fn signout(app: &TestApp, jar: &Jar) -> ApiResponse {
    send_with(app, Method::GET, "/auth/signout", jar, None).await
}

/// A jar holding only `access` as `sAccessToken`.
fn access_only(access: &str) -> Jar {
    Jar { access: Some(access.to_owned()), ..Jar::default() }
}

/// `token` with the last character of its signature changed.
fn tampered(token: &str) -> String {
    let mut bad = token.to_owned();
    let last = bad.pop().expect("non-empty");
    bad.push(if last == 'A' { 'B' } else { 'A' });
    bad
}

/// Whether the session `sid` is stored as revoked.
async fn session_revoked(app: &TestApp, sid: &str) -> bool {
    app.revoked_sessions(sid).await == 1
}

/// Signs `username` in through `v1` (by username, since an `auth` user has no email) and
/// returns the v1 access token.
async fn v1_access_token(app: &TestApp, username: &str) -> String {
    let answer =
        app.send_json(Method::POST, "/v1/sessions", &json!({"username": username, "password": PASSWORD})).await;
    let body = answer.expect_status(200);
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// Asserts the attributes of the three session cookies a sign-in or refresh set.
fn assert_session_cookies(answer: &ApiResponse, secure: bool) {
    for name in COOKIES {
        let header = answer.set_cookie(name).unwrap_or_else(|| panic!("{name} is set: {:?}", answer.headers));
        let value = answer.cookie(name).expect("value");
        assert!(!value.is_empty(), "{header}");
        for attribute in ["HttpOnly", "SameSite=Lax", &format!("Path={}", path_of(name))] {
            assert!(header.split("; ").any(|a| a == attribute), "{name}: {attribute} in {header}");
        }
        assert_eq!(header.contains("; Secure"), secure, "{header}");
        let max_age: u64 = header
            .split("; ")
            .find_map(|a| a.strip_prefix("Max-Age="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Max-Age in {header}"));
        if name == "sAccessToken" {
            assert_eq!(max_age, 15 * 60, "LATCHKEY_ACCESS_TOKEN_TTL: {header}");
        } else {
            let session = 30 * 24 * 3600;
            assert!((session - 60..=session).contains(&max_age), "the session's remaining life: {header}");
        }
    }
    let refresh = answer.cookie("sRefreshToken").expect("refresh");
    let id_refresh = answer.cookie("sIdRefreshToken").expect("id refresh");
    assert!(refresh.len() >= 43 && id_refresh.len() >= 43, "opaque, at least 256 bits");
    assert_ne!(refresh, id_refresh);
}

async fn the_seed_flow_sign_up_user_refresh_sign_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let answer = signup_with(&app, &json!({"username": "user", "password": PASSWORD, "employee_id": "1000000"})).await;
    let content = answer.ok();
    assert_session_cookies(&answer, false);
    assert_eq!(content["username"], "user");
    let id = content["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let joined = content["timeJoined"].as_i64().expect("timeJoined is an integer");
    let now_ms = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).expect("ms");
    assert!((now_ms - 60_000..=now_ms).contains(&joined), "milliseconds since the epoch: {joined}");
    assert_eq!(content.as_object().map(|o| o.len()), Some(3), "{content}");
    let mut jar = Jar::default();
    jar.absorb(&answer);

    // One user row: the username, the employee id, no email.
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE username = $1 AND email IS NULL", "user").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE external_id = $1", "1000000").await, 1);

    // The access JWT names the user and the session.
    let (header, claims) = jwt_parts(jar.access.as_deref().expect("access"));
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!((claims["sub"].as_str(), claims["aud"].as_str()), (Some(id), Some("auth")));
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 15 * 60);

    assert_eq!(user(&app, &jar).await.ok(), content, "GET /auth/user: the same content");

    // Refresh rotates all three cookies; the new ones work.
    let rotated = refresh(&app, &jar).await;
    assert_eq!(rotated.ok(), content);
    assert_session_cookies(&rotated, false);
    let mut next = jar.clone();
    next.absorb(&rotated);
    assert_ne!(next.access, jar.access);
    assert_ne!(next.refresh, jar.refresh);
    assert_ne!(next.id_refresh, jar.id_refresh);
    assert_eq!(next.sid(), jar.sid(), "the same session");
    assert_eq!(user(&app, &next).await.ok(), content);

    // Sign-out: {status, timestamp} only, the cookies cleared, the session revoked.
    let out = signout(&app, &next).await;
    assert_eq!(out.ok(), Value::Null);
    assert_eq!(out.body.as_object().map(|o| o.len()), Some(2), "{}", out.body);
    out.assert_clears_cookies();
    assert!(session_revoked(&app, &next.sid()).await);
    user(&app, &next).await.error(401, "V1008");
    user(&app, &jar).await.error(401, "V1008");
    refresh(&app, &next).await.error(401, "V1008");

    // Signing in again starts a new session.
    let again = signin(&app, "user", PASSWORD).await;
    assert_eq!(again.ok(), content);
    assert_session_cookies(&again, false);
    let mut jar = Jar::default();
    jar.absorb(&again);
    assert_ne!(jar.sid(), next.sid());
    assert_eq!(user(&app, &jar).await.ok(), content);
}

async fn sign_up_refuses_each_kind_of_bad_input_with_its_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = |username: Value, password: Value, employee_id: Value| json!({"username": username, "password": password, "employee_id": employee_id});
    // Missing or mistyped members: V1001, each named.
    let message = signup_with(&app, &json!({})).await.error(400, "V1001");
    for field in ["username", "password", "employee_id"] {
        assert!(message.contains(field), "{message}");
    }
    for bad in [
        json!({"password": PASSWORD, "employee_id": 1}),
        body(json!(null), json!(PASSWORD), json!(1)),
        body(json!(7), json!(PASSWORD), json!(1)),
        body(json!("ann"), json!(12_345_678), json!(1)),
        body(json!("ann"), json!(PASSWORD), json!(true)),
        body(json!("ann"), json!(PASSWORD), json!(null)),
        body(json!("ann"), json!(PASSWORD), json!([1])),
        body(json!("ann"), json!(PASSWORD), json!({"id": 1})),
        body(json!("ann"), json!(PASSWORD), json!(1.5)),
        body(json!("ann"), json!(PASSWORD), json!("")),
        body(json!("ann"), json!(PASSWORD), json!("a\u{1}b")),
        body(json!("ann"), json!(PASSWORD), json!("e".repeat(257))),
    ] {
        let answer = signup_with(&app, &bad).await;
        answer.error(400, "V1001");
        assert!(answer.set_cookie("sAccessToken").is_none());
    }
    // A username or password of the wrong form: V1009 with the seed's message.
    for bad in [
        body(json!(""), json!(PASSWORD), json!(1)),
        body(json!("a b"), json!(PASSWORD), json!(1)),
        body(json!("tab\there"), json!(PASSWORD), json!(1)),
        body(json!("bell\u{7}"), json!(PASSWORD), json!(1)),
        body(json!("u".repeat(257)), json!(PASSWORD), json!(1)),
        body(json!("ann"), json!("short"), json!(1)),
        body(json!("ann"), json!("qwertyuiop"), json!(1)),
        body(json!("ann"), json!(""), json!(1)),
        body(json!("ann"), json!("p".repeat(129)), json!(1)),
    ] {
        assert_eq!(signup_with(&app, &bad).await.error(400, "V1009"), INVALID_CREDENTIALS, "{bad}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE $1 = $1", "").await, 0, "nothing was stored");

    // The limits themselves are fine: 256 characters, any script, an integer employee id.
    let long = "u".repeat(256);
    assert_eq!(signed_up(&app, &long, json!(1_000_000)).await.1["username"], long.as_str());
    assert_eq!(signed_up(&app, "Zoë-名前", json!("E-2")).await.1["username"], "Zoë-名前");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE external_id = $1", "1000000").await, 1, "string form");

    // The employee already has an account, even as a string and under another username.
    let message = signup_with(&app, &body(json!("other"), json!(PASSWORD), json!("1000000"))).await.error(400, "V1010");
    assert!(!message.is_empty());
    signup_with(&app, &body(json!("other"), json!(PASSWORD), json!(1_000_000))).await.error(400, "V1010");
    // The username is taken (compared exactly), for another employee.
    signup_with(&app, &body(json!(long), json!(PASSWORD), json!(3))).await.error(400, "V1011");
    signup_with(&app, &body(json!("zoë-名前"), json!(PASSWORD), json!(3))).await.ok();
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE $1 = $1", "").await, 3);
}

async fn concurrent_sign_ups_create_exactly_one_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let same_username = (0..20).map(|i| {
        let app = &app;
        async move { signup_with(app, &json!({"username": "race", "password": PASSWORD, "employee_id": i})).await }
    });
    let answers = futures::future::join_all(same_username).await;
    let created = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(created, 1, "{:?}", answers.iter().map(|a| &a.body).collect::<Vec<_>>());
    for answer in answers.iter().filter(|a| a.status != 200) {
        answer.error(400, "V1011");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE username = $1", "race").await, 1);

    let same_employee = (0..20).map(|i| {
        let app = &app;
        async move {
            signup_with(app, &json!({"username": format!("emp{i}"), "password": PASSWORD, "employee_id": "E-77"})).await
        }
    });
    let answers = futures::future::join_all(same_employee).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1);
    for answer in answers.iter().filter(|a| a.status != 200) {
        answer.error(400, "V1010");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE external_id = $1", "E-77").await, 1);
}

async fn a_wrong_password_and_an_unknown_username_read_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, content) = signed_up(&app, "kim", json!(42)).await;

    let wrong = signin(&app, "kim", "wrong password").await;
    let unknown = signin(&app, "nobody", PASSWORD).await;
    let malformed = signin(&app, "no body", PASSWORD).await;
    for answer in [&wrong, &unknown, &malformed] {
        assert_eq!(answer.error(400, "V1009"), INVALID_CREDENTIALS);
        assert!(answer.headers.get(SET_COOKIE).is_none(), "no cookie on failure");
    }
    let without_timestamp = |a: &ApiResponse| {
        let mut body = a.body.clone();
        body.as_object_mut().expect("object").remove("timestamp");
        body
    };
    assert_eq!(without_timestamp(&wrong), without_timestamp(&unknown));

    // Missing or mistyped members are V1001; the right password signs in.
    let bad = send_with(&app, Method::POST, "/auth/signin", &Jar::default(), Some(&json!({"username": "kim"}))).await;
    bad.error(400, "V1001");
    let bad =
        send_with(&app, Method::POST, "/auth/signin", &Jar::default(), Some(&json!({"username": 1, "password": 2})))
            .await;
    bad.error(400, "V1001");
    let ok = signin(&app, "kim", PASSWORD).await;
    assert_eq!(ok.ok(), content);
    assert_session_cookies(&ok, false);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions WHERE $1 = $1", "").await, 2, "sign-up and sign-in");
}

async fn cookies_are_secure_under_an_https_public_url(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.public_url = Some("https://auth.example.test".into())).await;
    let answer = signup_with(&app, &json!({"username": "sec", "password": PASSWORD, "employee_id": "S-1"})).await;
    answer.ok();
    assert_session_cookies(&answer, true);
    let mut jar = Jar::default();
    jar.absorb(&answer);
    let rotated = refresh(&app, &jar).await;
    rotated.ok();
    assert_session_cookies(&rotated, true);
    jar.absorb(&rotated);
    let out = signout(&app, &jar).await;
    out.ok();
    out.assert_clears_cookies();
    for name in COOKIES {
        assert!(out.set_cookie(name).expect("cleared").contains("; Secure"));
    }
}

async fn a_refresh_needs_both_cookies_of_one_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = signed_up(&app, "amy", json!(1)).await;
    let (b, _) = signed_up(&app, "ben", json!(2)).await;

    for (what, jar) in [
        ("no cookie", Jar::default()),
        ("no sIdRefreshToken", Jar { id_refresh: None, ..a.clone() }),
        ("no sRefreshToken", Jar { refresh: None, ..a.clone() }),
        ("another session's sIdRefreshToken", Jar { id_refresh: b.id_refresh.clone(), ..a.clone() }),
        ("the refresh token twice", Jar { id_refresh: a.refresh.clone(), ..a.clone() }),
        ("a tampered sIdRefreshToken", Jar { id_refresh: a.id_refresh.as_deref().map(tampered), ..a.clone() }),
        ("an unknown pair", Jar { refresh: Some("x".repeat(43)), id_refresh: Some("y".repeat(43)), access: None }),
    ] {
        let answer = refresh(&app, &jar).await;
        assert_eq!(answer.error(401, "V1008"), "Invalid session token", "{what}");
        answer.assert_clears_cookies();
    }
    // The refresh token alone is worthless on the routes that take a bare refresh token too.
    let stolen = a.refresh.clone().expect("sRefreshToken");
    let answer = app.send_json(Method::POST, "/v1/token/refresh", &json!({"refresh_token": stolen})).await;
    assert_eq!(answer.status, 401, "v1 refresh with a pair's token: {:?}", answer.text);
    let answer = send(
        app.request(Method::POST, "/")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "AWSCognitoIdentityProviderService.InitiateAuth")
            .body(
                json!({"ClientId": "local", "AuthFlow": "REFRESH_TOKEN_AUTH", "AuthParameters": {"REFRESH_TOKEN": stolen}})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(answer.status, 400, "cognito refresh with a pair's token: {:?}", answer.text);
    assert!(answer.text.contains("NotAuthorizedException"), "{}", answer.text);

    // None of that rotated or revoked anything: both pairs still refresh.
    refresh(&app, &a).await.ok();
    refresh(&app, &b).await.ok();
}

async fn two_tabs_refreshing_at_once_both_stay_signed_in(backend: Backend) {
    // A wide window, so the two refreshes fall inside it however slow the machine.
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_window = Duration::from_secs(60)).await;
    let (jar, content) = signed_up(&app, "tabs", json!(7)).await;
    let (one, two) = tokio::join!(refresh(&app, &jar), refresh(&app, &jar));
    assert_eq!((one.ok(), two.ok()), (content.clone(), content.clone()));
    assert_eq!(one.cookie("sRefreshToken"), two.cookie("sRefreshToken"), "the same successor");
    assert_eq!(one.cookie("sIdRefreshToken"), two.cookie("sIdRefreshToken"));
    let mut next = jar.clone();
    next.absorb(&two);
    assert_ne!(next.refresh, jar.refresh);
    assert_eq!(user(&app, &next).await.ok(), content);
    let mut last = next.clone();
    last.absorb(&refresh(&app, &next).await);
    assert_eq!(user(&app, &last).await.ok(), content);
    assert!(!session_revoked(&app, &jar.sid()).await);
}

async fn replaying_a_rotated_refresh_token_revokes_the_session(backend: Backend) {
    // No grace window: any second use of a rotated token is a replay.
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_window = Duration::ZERO).await;
    let (stolen, _) = signed_up(&app, "vic", json!(8)).await;
    let legitimate = refresh(&app, &stolen).await;
    legitimate.ok();
    let mut jar = stolen.clone();
    jar.absorb(&legitimate);
    assert_eq!(user(&app, &jar).await.status, 200);

    let replay = refresh(&app, &stolen).await;
    replay.error(401, "V1008");
    replay.assert_clears_cookies();
    assert!(session_revoked(&app, &jar.sid()).await);
    // What the legitimate refresh just issued stops working too.
    user(&app, &jar).await.error(401, "V1008");
    refresh(&app, &jar).await.error(401, "V1008");
    // Signing in again is a new session.
    signin(&app, "vic", PASSWORD).await.ok();
}

async fn sign_out_clears_the_cookies_whatever_it_is_given(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (jar, content) = signed_up(&app, "sol", json!(9)).await;

    // No cookie at all: 200.
    let out = signout(&app, &Jar::default()).await;
    assert_eq!(out.ok(), Value::Null);
    out.assert_clears_cookies();

    // A tampered, a garbage and a foreign token: 400 V1008, cookies cleared, nothing revoked.
    let v1_token = v1_access_token(&app, "sol").await;
    let access = jar.access.clone().expect("access");
    for token in [tampered(&access), "garbage".to_owned(), v1_token.clone()] {
        let out = signout(&app, &access_only(&token)).await;
        assert_eq!(out.error(400, "V1008"), "Invalid session token");
        out.assert_clears_cookies();
    }
    assert_eq!(user(&app, &jar).await.ok(), content, "the auth session lives on");
    app.v1_me(&v1_token).await.expect_status(200);

    // The real one signs out; presenting it again is a token of an ended session.
    signout(&app, &jar).await.ok();
    let again = signout(&app, &jar).await;
    again.error(400, "V1008");
    again.assert_clears_cookies();
}

async fn the_current_user_needs_a_live_access_token_of_this_surface(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (jar, content) = signed_up(&app, "uma", json!(10)).await;
    let access = jar.access.clone().expect("access");

    user(&app, &Jar::default()).await.error(401, "V1008");
    for forged in [tampered(&access), "a.b.c".to_owned(), "x".repeat(20_000)] {
        user(&app, &access_only(&forged)).await.error(401, "V1008");
    }
    // Claims changed under the original signature, and the same claims unsigned.
    let parts: Vec<&str> = access.split('.').collect();
    let (_, mut claims) = jwt_parts(&access);
    claims["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let forged_claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    user(&app, &access_only(&format!("{}.{forged_claims}.{}", parts[0], parts[2]))).await.error(401, "V1008");
    let none = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string());
    user(&app, &access_only(&format!("{none}.{}.", parts[1]))).await.error(401, "V1008");
    // A token of another surface is foreign here.
    user(&app, &access_only(&v1_access_token(&app, "uma").await)).await.error(401, "V1008");

    // The access token is also accepted as a bearer token.
    assert_eq!(send(app.request(Method::GET, "/auth/user").bearer_auth(&access)).await.ok(), content);

    // Revoked: signed out through this surface.
    signout(&app, &jar).await.ok();
    user(&app, &jar).await.error(401, "V1008");
}

async fn an_expired_access_token_is_refused_while_its_session_lives_on(backend: Backend) {
    // Access tokens that expire as they are issued: no waiting for a clock.
    let app = TestApp::spawn_with(backend, |c| c.access_token_ttl = Duration::ZERO).await;
    let (jar, _) = signed_up(&app, "exp", json!(11)).await;
    user(&app, &jar).await.error(401, "V1008");
    let out = signout(&app, &jar).await;
    out.error(400, "V1008");
    // The session itself is alive: its refresh pair still rotates.
    let rotated = refresh(&app, &jar).await;
    rotated.ok();
    assert!(!session_revoked(&app, &jar.sid()).await);
}

async fn a_session_revoked_through_v1_is_refused_here_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (jar, content) = signed_up(&app, "one", json!("D-1")).await;
    // The same user, signed in through v1 by username.
    let v1_token = v1_access_token(&app, "one").await;
    let me = app.v1_me(&v1_token).await.expect_status(200);
    assert_eq!(me["id"], content["id"], "one directory");
    assert_eq!(me["username"], "one");

    // Sign out everywhere through v1: the auth session ends with it.
    assert_eq!(app.v1_sign_out_everywhere(&v1_token).await.status, 204);
    user(&app, &jar).await.error(401, "V1008");
    refresh(&app, &jar).await.error(401, "V1008");
    assert!(session_revoked(&app, &jar.sid()).await);
}

async fn access_tokens_verify_with_the_jwks_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (jar, content) = signed_up(&app, "jay", json!(12)).await;
    let access = jar.access.expect("access");
    let jwks: JwkSet =
        serde_json::from_value(app.get("/.well-known/jwks.json").await.expect_status(200)).expect("JWKS");
    let header = jsonwebtoken::decode_header(&access).expect("header");
    let kid = header.kid.as_deref().expect("kid");
    let jwk = jwks.find(kid).expect("the token's key is published");
    let key = DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[app.base.as_str()]);
    validation.set_audience(&["auth"]);
    let claims = jsonwebtoken::decode::<Value>(&access, &key, &validation).expect("verifies").claims;
    assert_eq!(claims["sub"], content["id"]);
    assert!(jsonwebtoken::decode::<Value>(&tampered(&access), &key, &validation).is_err());
}

async fn bad_input_gets_the_envelope_never_a_5xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let json_type = "application/json";
    let mut oversized = br#"{"username":""#.to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 70 * 1024));
    oversized.extend(br#"","password":"x","employee_id":1}"#);
    let cases: Vec<(Method, &str, &str, Vec<u8>, u16)> = vec![
        (Method::POST, "/auth/signup", json_type, b"{\"username\":".to_vec(), 400),
        (Method::POST, "/auth/signup", json_type, b"[1,2,3]".to_vec(), 400),
        (Method::POST, "/auth/signup", json_type, b"null".to_vec(), 400),
        (Method::POST, "/auth/signup", json_type, b"\"user\"".to_vec(), 400),
        (Method::POST, "/auth/signup", json_type, b"{\"username\":\"\xff\xfe\"}".to_vec(), 400),
        (Method::POST, "/auth/signup", json_type, Vec::new(), 400),
        (Method::POST, "/auth/signup", json_type, oversized, 413),
        (Method::POST, "/auth/signup", "text/plain", b"{}".to_vec(), 415),
        (Method::POST, "/auth/signin", json_type, b"{\"username\":\"a\",}".to_vec(), 400),
        (Method::POST, "/auth/signin", json_type, b"[]".to_vec(), 400),
        (Method::GET, "/auth/nope", json_type, Vec::new(), 404),
        (Method::GET, "/auth", json_type, Vec::new(), 404),
        (Method::POST, "/auth/", json_type, Vec::new(), 404),
        (Method::GET, "/auth/user/more", json_type, Vec::new(), 404),
        (Method::GET, "/auth/session", json_type, Vec::new(), 404),
        (Method::GET, "/auth/signup", json_type, Vec::new(), 405),
        (Method::POST, "/auth/signout", json_type, b"{}".to_vec(), 405),
        (Method::GET, "/auth/session/refresh", json_type, Vec::new(), 405),
        (Method::DELETE, "/auth/user", json_type, Vec::new(), 405),
    ];
    for (method, path, content_type, body, status) in cases {
        let answer = app.send_raw(method.clone(), path, content_type, body).await;
        answer.error(status, "V1001");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE $1 = $1", "").await, 0);
}

async fn too_many_sign_ins_answer_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    signed_up(&app, "lim", json!(13)).await;
    let mut limited = None;
    for _ in 0..200 {
        let answer = signin(&app, "lim", "wrong password").await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        answer.error(400, "V1009");
    }
    let answer = limited.expect("sign-ins are limited");
    answer.error(429, "V1012");
    let retry_after: u64 = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
}

on_both_backends!(
    the_seed_flow_sign_up_user_refresh_sign_out,
    sign_up_refuses_each_kind_of_bad_input_with_its_code,
    concurrent_sign_ups_create_exactly_one_user,
    a_wrong_password_and_an_unknown_username_read_the_same,
    cookies_are_secure_under_an_https_public_url,
    a_refresh_needs_both_cookies_of_one_pair,
    two_tabs_refreshing_at_once_both_stay_signed_in,
    replaying_a_rotated_refresh_token_revokes_the_session,
    sign_out_clears_the_cookies_whatever_it_is_given,
    the_current_user_needs_a_live_access_token_of_this_surface,
    an_expired_access_token_is_refused_while_its_session_lives_on,
    a_session_revoked_through_v1_is_refused_here_at_once,
    access_tokens_verify_with_the_jwks_alone,
    bad_input_gets_the_envelope_never_a_5xx,
    too_many_sign_ins_answer_429_with_retry_after,
);
