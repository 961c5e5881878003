//! Cookies and bearer credentials: the shared lookup of `http/cookies.rs`, and the `auth`
//! surface's SuperTokens-style cookies (`sAccessToken`, `sRefreshToken`, `sIdRefreshToken`)
//! and the `users` surface's `session` cookie sent to the routes that read them.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request};
use latchkey_server::http::cookies::{bearer, cookie, credential};
use libfuzzer_sys::fuzz_target;

/// Routes that read a cookie, with the cookie names they read.
const ROUTES: &[(&str, &str, &[&str])] = &[
    ("GET", "/auth/user", &["sAccessToken"]),
    ("GET", "/auth/signout", &["sAccessToken"]),
    ("POST", "/auth/session/refresh", &["sRefreshToken", "sIdRefreshToken"]),
    ("GET", "/api/users/currentuser", &["session"]),
    ("POST", "/api/users/signout", &["session"]),
    ("POST", "/v1/token/refresh", &["lk_refresh"]),
    ("GET", "/v1/me", &["lk_access"]),
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    route: u8,
    /// Whole `Cookie` headers, as a browser or an attacker may send them.
    headers: Vec<&'a [u8]>,
    /// Values for the route's own cookie names.
    values: Vec<&'a str>,
    authorization: Option<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let (method, path, names) = ROUTES[usize::from(input.route) % ROUTES.len()];
    let mut headers = HeaderMap::new();
    for raw in input.headers.iter().take(4) {
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append("cookie", v);
        }
    }
    let pairs: Vec<String> = names.iter().zip(&input.values).map(|(n, v)| format!("{n}={v}")).collect();
    if let Ok(v) = HeaderValue::from_str(&pairs.join("; ")) {
        headers.append("cookie", v);
    }
    if let Some(v) = input.authorization.and_then(|a| HeaderValue::from_bytes(a).ok()) {
        headers.insert("authorization", v);
    }
    for name in names {
        // An empty value counts as absent.
        if let Some(value) = cookie(&headers, name) {
            assert!(!value.is_empty());
        }
        let _ = credential(&headers, name);
    }
    if let Some(token) = bearer(&headers) {
        assert!(!token.is_empty() && token == token.trim());
    }

    let h = latchkey_fuzz::harness();
    let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(map) = request.headers_mut() {
        map.extend(headers);
    }
    let body = if method == "POST" { "{}" } else { "" };
    let Ok(request) = request.body(Body::from(body)) else { return };
    let (response, body) = h.send(request);
    latchkey_fuzz::assert_not_server_error(&format!("{method} {path}"), response.status(), &body);
});
