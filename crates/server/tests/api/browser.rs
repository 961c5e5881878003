//! Browser safety across surfaces: cookie-authenticated requests from other sites' pages are
//! refused in each surface's own 403 shape and change nothing; CORS answers only
//! `LATCHKEY_ALLOWED_ORIGINS` (and `cognito` keeps its own); security headers on every
//! response; `/docs/` and GraphiQL served from the binary, naming no other origin.

use reqwest::{Method, RequestBuilder};
use serde_json::json;

use crate::helpers::{ApiResponse, Backend, TestApp, V1Auth, send, users_signup_body};
use crate::on_both_backends;

/// A password no common-password list holds.
const PW: &str = "k7#mq2vz-Tern-81";
/// The one origin the apps of these tests allow besides their own.
const ALLOWED: &str = "https://app.example.com";
/// Another site.
const EVIL: &str = "https://evil.example";

/// An app allowing [`ALLOWED`].
async fn app_allowing(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.allowed_origins = vec![ALLOWED.to_owned()]).await
}

/// The app's own origin, as a browser on one of its pages sends it.
fn own_origin(app: &TestApp) -> String {
    app.url("")
}

/// How a request says where it comes from.
#[derive(Clone, Copy)]
enum Site<'a> {
    /// Neither `Origin` nor `Sec-Fetch-Site`: curl, a server.
    Nowhere,
    /// `Origin: <origin>` (a browser also sends `Sec-Fetch-Site`, but these tests check
    /// `Origin` on its own).
    Origin(&'a str),
    /// `Sec-Fetch-Site: <value>` without `Origin`.
    Fetch(&'a str),
}

fn from(request: RequestBuilder, origin: Site<'_>) -> RequestBuilder {
    match origin {
        Site::Nowhere => request,
        Site::Origin(o) => request.header("origin", o),
        Site::Fetch(s) => request.header("sec-fetch-site", s),
    }
}

// --- users ---------------------------------------------------------------------------------

/// Signs a new `users` user up and activates it; returns its `session` cookie header.
async fn users_session(app: &TestApp, email: &str) -> String {
    let mut body = users_signup_body(email);
    body["password"] = json!(PW);
    assert_eq!(app.signup(&body).await.status, 201);
    let code = app.mail.next_mail(email).await.code();
    let activated = app.activate(email, code.parse::<u64>().expect("digits")).await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    format!("session={}", activated.cookie("session").expect("session cookie"))
}

async fn users_signout_from(app: &TestApp, cookie: &str, origin: Site<'_>) -> ApiResponse {
    let request = app.request(Method::POST, "/api/users/signout").header("cookie", cookie).json(&json!({}));
    send(from(request, origin)).await
}

/// Whether `cookie` still signs its user in.
async fn users_signed_in(app: &TestApp, cookie: &str) -> bool {
    let me = app.current_user(Some(cookie), None).await;
    assert_eq!(me.status, 200);
    !me.body.is_null()
}

async fn users_sign_out_is_refused_from_other_sites(backend: Backend) {
    let app = app_allowing(backend).await;
    let email = "ria@example.com";
    let cookie = users_session(&app, email).await;

    for origin in [Site::Origin(EVIL), Site::Origin("null"), Site::Fetch("cross-site"), Site::Fetch("same-site")] {
        let refused = users_signout_from(&app, &cookie, origin).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.body["errorType"], "NOT_AUTHERIZED", "{}", refused.body);
        assert!(refused.body["errors"][0]["message"].is_string(), "{}", refused.body);
        assert!(refused.set_cookie("session").is_none(), "the cookie is not cleared");
        assert!(users_signed_in(&app, &cookie).await, "nothing is revoked");
    }

    // Bearer requests cannot be ridden by a browser: not checked, even with the cookie.
    let bearer = cookie.trim_start_matches("session=").to_owned();
    let request = app
        .request(Method::POST, "/api/users/signout")
        .header("cookie", &cookie)
        .header("origin", EVIL)
        .bearer_auth(&bearer)
        .json(&json!({}));
    assert_eq!(send(request).await.status, 200);
    assert!(!users_signed_in(&app, &cookie).await);

    // The site itself, an allowed origin, `Sec-Fetch-Site: same-origin` and a client without
    // either header sign out.
    let own = own_origin(&app);
    for origin in [Site::Origin(&own), Site::Origin(ALLOWED), Site::Fetch("same-origin"), Site::Nowhere] {
        let signed_in = app.signin(email, PW).await;
        assert_eq!(signed_in.status, 200, "{}", signed_in.body);
        let cookie = format!("session={}", signed_in.cookie("session").expect("session cookie"));
        let answer = users_signout_from(&app, &cookie, origin).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(!users_signed_in(&app, &cookie).await, "signed out");
    }
}

// --- auth ----------------------------------------------------------------------------------

/// The `auth` cookies of a new user's session, as a browser holds them.
struct AuthCookies {
    access: String,
    refresh: String,
    id_refresh: String,
}

impl AuthCookies {
    /// What a browser sends to `/auth/signout` and `/auth/user`.
    fn for_root(&self) -> String {
        format!("sAccessToken={}; sIdRefreshToken={}", self.access, self.id_refresh)
    }

    /// What a browser sends to `/auth/session/refresh`.
    fn for_refresh(&self) -> String {
        format!("sAccessToken={}; sRefreshToken={}; sIdRefreshToken={}", self.access, self.refresh, self.id_refresh)
    }

    fn from(answer: &ApiResponse) -> Self {
        let get = |name: &str| answer.cookie(name).unwrap_or_else(|| panic!("{name}: {:?}", answer.headers));
        Self { access: get("sAccessToken"), refresh: get("sRefreshToken"), id_refresh: get("sIdRefreshToken") }
    }
}

async fn auth_user_ok(app: &TestApp, cookies: &AuthCookies) -> bool {
    send(app.request(Method::GET, "/auth/user").header("cookie", cookies.for_root())).await.status == 200
}

fn assert_auth_refusal(answer: &ApiResponse) {
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["status"], 403, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "V1001", "{}", answer.body);
    assert!(answer.body["timestamp"].is_string() && answer.body.get("content").is_none(), "{}", answer.body);
    assert!(answer.set_cookie("sAccessToken").is_none(), "no cookie is cleared");
}

async fn auth_sign_out_and_refresh_are_refused_from_other_sites(backend: Backend) {
    let app = app_allowing(backend).await;
    let signed_up = app
        .send_json(Method::POST, "/auth/signup", &json!({"username": "tamsin", "password": PW, "employee_id": 4411}))
        .await;
    assert_eq!(signed_up.status, 200, "{}", signed_up.body);
    let cookies = AuthCookies::from(&signed_up);

    for origin in [Site::Origin(EVIL), Site::Fetch("cross-site")] {
        let request = app.request(Method::GET, "/auth/signout").header("cookie", cookies.for_root());
        assert_auth_refusal(&send(from(request, origin)).await);
        let request = app.request(Method::POST, "/auth/session/refresh").header("cookie", cookies.for_refresh());
        assert_auth_refusal(&send(from(request, origin)).await);
        assert!(auth_user_ok(&app, &cookies).await, "the session lives on");
    }

    // The refresh token was not used up by the refused requests: the site itself refreshes.
    let own = own_origin(&app);
    let request = app.request(Method::POST, "/auth/session/refresh").header("cookie", cookies.for_refresh());
    let refreshed = send(from(request, Site::Origin(&own))).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let cookies = AuthCookies::from(&refreshed);

    // An allowed origin signs out.
    let request = app.request(Method::GET, "/auth/signout").header("cookie", cookies.for_root());
    assert_eq!(send(from(request, Site::Origin(ALLOWED))).await.status, 200);
    assert!(!auth_user_ok(&app, &cookies).await, "signed out");

    // A client sending neither header (curl) signs out too.
    let signed_in = app.send_json(Method::POST, "/auth/signin", &json!({"username": "tamsin", "password": PW})).await;
    let cookies = AuthCookies::from(&signed_in);
    let request = app.request(Method::GET, "/auth/signout").header("cookie", cookies.for_root());
    assert_eq!(send(request).await.status, 200);
    assert!(!auth_user_ok(&app, &cookies).await, "signed out");
}

// --- v1 ------------------------------------------------------------------------------------

/// A verified `v1` user with [`PW`].
async fn v1_user(app: &TestApp, email: &str) {
    assert_eq!(app.v1_signup(&json!({"email": email, "password": PW})).await.status, 202);
    let code = app.mail.next_mail(email).await.code();
    assert_eq!(app.v1_verify_email(email, code).await.status, 200);
}

/// Signs in in cookie mode; returns `(lk_access cookie header, lk_refresh cookie header)`.
async fn v1_cookies(app: &TestApp, email: &str) -> (String, String) {
    let answer = app.v1_sign_in_with_cookies(email, PW).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    (
        format!("lk_access={}", answer.cookie("lk_access").expect("lk_access")),
        format!("lk_refresh={}", answer.cookie("lk_refresh").expect("lk_refresh")),
    )
}

fn assert_cross_origin_problem(answer: &ApiResponse) {
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/problem+json"));
    assert_eq!(answer.body["code"], "cross_origin", "{}", answer.body);
    assert_eq!(answer.body["type"], "urn:latchkey:problem:cross_origin", "{}", answer.body);
    assert_eq!(answer.body["status"], 403, "{}", answer.body);
    assert!(answer.set_cookie("lk_access").is_none(), "no cookie is cleared");
}

async fn v1_cookie_mode_is_refused_from_other_sites(backend: Backend) {
    let app = app_allowing(backend).await;
    let email = "oona@example.com";
    v1_user(&app, email).await;
    let (access, refresh) = v1_cookies(&app, email).await;

    for origin in [Site::Origin(EVIL), Site::Fetch("cross-site")] {
        let request = app.request(Method::DELETE, "/v1/sessions/current").header("cookie", &access);
        assert_cross_origin_problem(&send(from(request, origin)).await);
        let request = app.request(Method::POST, "/v1/token/refresh").header("cookie", &refresh).json(&json!({}));
        assert_cross_origin_problem(&send(from(request, origin)).await);
        let request = app.request(Method::DELETE, "/v1/sessions").header("cookie", &access);
        assert_cross_origin_problem(&send(from(request, origin)).await);
        assert_eq!(app.v1_me(V1Auth::Cookie(&access)).await.status, 200, "the session lives on");
    }
    // The refused refresh did not rotate the token: the site itself still refreshes with it.
    let own = own_origin(&app);
    let request = app.request(Method::POST, "/v1/token/refresh").header("cookie", &refresh).json(&json!({}));
    let refreshed = send(from(request, Site::Origin(&own))).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let access = format!("lk_access={}", refreshed.cookie("lk_access").expect("rotated lk_access"));

    // From an allowed origin, cookie mode works.
    let request = app.request(Method::DELETE, "/v1/sessions/current").header("cookie", &access);
    assert_eq!(send(from(request, Site::Origin(ALLOWED))).await.status, 204);
    assert_eq!(app.v1_me(V1Auth::Cookie(&access)).await.status, 401, "signed out");

    // Bearer tokens are not checked, even when a stale cookie rides along.
    let answer = app.v1_sign_in(email, PW).await;
    let bearer = answer.body["access_token"].as_str().expect("access_token").to_owned();
    let request = app
        .request(Method::DELETE, "/v1/sessions/current")
        .header("cookie", &access)
        .header("origin", EVIL)
        .bearer_auth(&bearer);
    assert_eq!(send(request).await.status, 204);
    assert_eq!(app.v1_me(bearer.as_str()).await.status, 401, "signed out");

    // Neither header: not a browser, accepted.
    let (access, _) = v1_cookies(&app, email).await;
    let request = app.request(Method::DELETE, "/v1/sessions/current").header("cookie", &access);
    assert_eq!(send(request).await.status, 204);

    // The OpenAPI document names the new problem on the routes that change state.
    let doc = app.openapi().await.body;
    let described = doc["paths"]["/v1/sessions/current"]["delete"]["responses"]["403"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(described.contains("cross_origin"), "{described}");
}

// --- CORS ----------------------------------------------------------------------------------

fn preflight(app: &TestApp, path: &str, origin: &str) -> RequestBuilder {
    app.request(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
}

async fn cors_answers_allowed_origins_only(backend: Backend) {
    let app = app_allowing(backend).await;
    let allowed = send(preflight(&app, "/v1/sessions", ALLOWED)).await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(allowed.header("access-control-allow-credentials"), Some("true"));
    assert!(allowed.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    let other = send(preflight(&app, "/v1/sessions", EVIL)).await;
    assert!(other.header("access-control-allow-origin").is_none(), "{:?}", other.headers);

    // Answers to the allowed origin are readable with credentials; to others, not.
    let answer = send(app.request(Method::GET, "/api/users/currentuser").header("origin", ALLOWED)).await;
    assert_eq!(answer.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(answer.header("access-control-allow-credentials"), Some("true"));
    let answer = send(app.request(Method::GET, "/api/users/currentuser").header("origin", EVIL)).await;
    assert!(answer.header("access-control-allow-origin").is_none());

    // `cognito` keeps its own CORS (any origin, no credentials), allowed origins or not.
    for origin in [ALLOWED, EVIL] {
        let cognito = send(
            preflight(&app, "/", origin)
                .header("access-control-request-headers", "content-type,x-amz-target,x-amz-user-agent"),
        )
        .await;
        assert_eq!(cognito.status, 200);
        assert_eq!(cognito.header("access-control-allow-origin"), Some("*"));
        assert!(cognito.header("access-control-allow-credentials").is_none());
        assert!(cognito.header("access-control-allow-headers").is_some_and(|h| h.contains("x-amz-target")));
    }

    // Without allowed origins, no CORS header at all.
    let plain = TestApp::spawn(backend).await;
    let own = own_origin(&plain);
    for origin in [own.as_str(), ALLOWED] {
        let answer = send(preflight(&plain, "/v1/sessions", origin)).await;
        let cors: Vec<&str> =
            answer.headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with("access-control-")).collect();
        assert!(cors.is_empty(), "{cors:?}");
    }
}

// --- headers and pages ---------------------------------------------------------------------

fn assert_common_headers(answer: &ApiResponse) {
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(answer.header("x-frame-options"), Some("DENY"));
}

/// Every `http://` or `https://` in `text` (a page must name none: it loads from its own
/// origin only).
fn absolute_urls(text: &str) -> Vec<String> {
    text.match_indices("http")
        .filter(|(i, _)| text[*i..].starts_with("http://") || text[*i..].starts_with("https://"))
        .map(|(i, _)| text[i..].chars().take(60).collect())
        .collect()
}

async fn page(app: &TestApp, path: &str) -> ApiResponse {
    ApiResponse::text(app.request(Method::GET, path).send().await.expect("request")).await
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.trust_forwarded_for = true).await;
    let email = "sol@example.com";
    v1_user(&app, email).await;

    // API answers: nothing may load or frame them; tokens are never cached.
    let signed_in = app.v1_sign_in(email, PW).await;
    assert_eq!(signed_in.status, 200);
    assert_common_headers(&signed_in);
    assert_eq!(signed_in.header("content-security-policy"), Some("default-src 'none'; frame-ancestors 'none'"));
    assert_eq!(signed_in.header("cache-control"), Some("no-store"));
    let unknown = app.get("/no/such/route").await;
    assert_eq!(unknown.status, 404);
    assert_common_headers(&unknown);
    assert!(unknown.header("strict-transport-security").is_none(), "plain http: no HSTS");

    // HSTS only when the trusted proxy says the request came over https.
    let over_https = send(app.request(Method::GET, "/healthz").header("x-forwarded-proto", "https")).await;
    assert_eq!(over_https.header("strict-transport-security"), Some("max-age=31536000"));
    let untrusted = TestApp::spawn(backend).await;
    let spoofed = send(untrusted.request(Method::GET, "/healthz").header("x-forwarded-proto", "https")).await;
    assert!(spoofed.header("strict-transport-security").is_none(), "no trusted proxy: no HSTS");

    // The pages: their own policy, naming no other origin, and the same headers.
    for path in ["/docs/", "/graphql"] {
        let answer = page(&app, path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{path}");
        assert_common_headers(&answer);
        let csp = answer.header("content-security-policy").expect("a policy");
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval") && absolute_urls(csp).is_empty(), "{path}: {csp}");
        assert!(absolute_urls(&answer.text).is_empty(), "{path}: {:?}", absolute_urls(&answer.text));
        assert!(!answer.text.contains("<script>"), "{path}: no inline script");
    }
}

async fn the_pages_are_served_from_the_binary(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // `/docs` is Swagger UI reading `/openapi.json`, with no validator badge.
    let redirect = page(&app, "/docs").await;
    assert!((300..400).contains(&redirect.status) && redirect.header("location") == Some("/docs/"));
    let docs = page(&app, "/docs/").await;
    assert!(docs.text.contains("swagger-ui"), "{}", docs.text);
    let boot = page(&app, "/docs/swagger-initializer.js").await;
    assert_eq!(boot.status, 200);
    assert!(
        boot.text.contains("\"/openapi.json\"") && boot.text.contains("\"validatorUrl\": \"none\""),
        "{}",
        boot.text
    );
    assert!(absolute_urls(&boot.text).is_empty(), "{:?}", absolute_urls(&boot.text));

    // GraphiQL's page refers only to its own files, each served with its type.
    let graphiql = page(&app, "/graphql").await;
    let mut referenced = 0;
    for (file, content_type) in [
        ("graphiql.min.js", "text/javascript"),
        ("graphiql.min.css", "text/css"),
        ("react.production.min.js", "text/javascript"),
        ("react-dom.production.min.js", "text/javascript"),
        ("graphiql-boot.js", "text/javascript"),
        ("graphiql-page.css", "text/css"),
    ] {
        let path = format!("/graphql/assets/{file}");
        referenced += usize::from(graphiql.text.contains(&path));
        let asset = page(&app, &path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(asset.header("content-type").is_some_and(|c| c.starts_with(content_type)), "{path}");
        assert!(asset.header("cache-control").is_some_and(|c| c.starts_with("public, max-age=")), "{path}");
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        assert!(asset.text.len() > 100, "{path}");
    }
    assert_eq!(referenced, 6, "{}", graphiql.text);
    assert!(page(&app, "/graphql/assets/graphiql-boot.js").await.text.contains("createFetcher({ url: '/graphql' })"));
    assert_eq!(page(&app, "/graphql/assets/secret.txt").await.status, 404);
    for (path, content_type) in [("/docs/swagger-ui-bundle.js", "javascript"), ("/docs/swagger-ui.css", "text/css")] {
        let asset = page(&app, path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(asset.header("content-type").is_some_and(|c| c.contains(content_type)), "{path}");
    }
}

on_both_backends!(
    users_sign_out_is_refused_from_other_sites,
    auth_sign_out_and_refresh_are_refused_from_other_sites,
    v1_cookie_mode_is_refused_from_other_sites,
    cors_answers_allowed_origins_only,
    every_response_carries_the_security_headers,
    the_pages_are_served_from_the_binary,
);
