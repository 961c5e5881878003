//! Cross-site request refusal (CSRF) for cookie-authenticated requests, and the request's own
//! origin.
//!
//! A browser attaches a site's cookies to requests that other sites' pages make (forms, `fetch`
//! with credentials); `SameSite=Lax` stops most of them but not a top-level `GET` navigation,
//! nor requests from a sibling subdomain. So the routes that change state on the strength of a
//! cookie are guarded by one middleware, [`check`], switched on per route by the surfaces with
//! an [`OriginGuard`]. A guarded request that carries one of the surface's cookies and no
//! `Authorization: Bearer` token (a bearer token is never attached by a browser on its own) is
//! let through only when
//!
//! - its `Origin` (RFC 6454) is the request's own origin (`http`, or behind a trusted proxy the
//!   last `X-Forwarded-Proto`, plus `Host`), the origin of `LATCHKEY_PUBLIC_URL`, or one of
//!   `LATCHKEY_ALLOWED_ORIGINS`; or
//! - its `Sec-Fetch-Site` (Fetch Metadata) is `same-origin` or `none` (typed in the address
//!   bar); or
//! - it carries neither header: not a browser (curl, a server-side client), which no other
//!   site can make send the user's cookies.
//!
//! Anything else (`Origin: null`, another origin, `Sec-Fetch-Site: same-site|cross-site`) is
//! answered with the surface's own 403, before the handler runs: nothing is revoked or changed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::cookies::{bearer, cookie};

/// The Content-Security-Policy of API responses (JSON, problems): nothing may load, nothing
/// may frame them.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The Content-Security-Policy of the pages served from the binary (`/docs/`, GraphiQL at
/// `GET /graphql`): scripts, styles, fetches and images from this origin only, no inline
/// script (both pages start from served files). Inline styles are allowed because React,
/// CodeMirror and Swagger UI set `style` attributes; fonts and icons are `data:` URLs in their
/// CSS. No other origin is named.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The origins a cookie-authenticated request may come from besides the server's own, and how
/// the server's own origin is found. Built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `LATCHKEY_ALLOWED_ORIGINS`: exact serialised origins (`https://app.example.com`, lower
    /// case, no default port), as validated by the configuration.
    pub allowed: Arc<[String]>,
    /// The origin of `LATCHKEY_PUBLIC_URL` (`scheme://host[:port]`).
    pub public_origin: Arc<str>,
    /// Behind a trusted proxy (`LATCHKEY_TRUST_FORWARDED_FOR`): take the request's scheme from
    /// the last `X-Forwarded-Proto` entry.
    pub trust_forwarded: bool,
}

impl OriginPolicy {
    /// A policy for a server whose public URL is `public_url` (`scheme://host[:port][/path]`).
    pub fn new(allowed: &[String], public_url: &str, trust_forwarded: bool) -> Self {
        Self { allowed: allowed.into(), public_origin: origin_of(public_url).into(), trust_forwarded }
    }

    /// Whether `origin` is one of `LATCHKEY_ALLOWED_ORIGINS` (exact, case-insensitive).
    pub fn is_allowed(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    }

    /// The scheme the client used: `https` or `http`. Only behind a trusted proxy can it be
    /// `https` (the server itself speaks plain HTTP); then it is the last `X-Forwarded-Proto`
    /// entry, the one that proxy set.
    pub fn scheme(&self, headers: &HeaderMap) -> &'static str {
        let forwarded = self
            .trust_forwarded
            .then(|| headers.get_all("x-forwarded-proto").iter().filter_map(|v| v.to_str().ok()).next_back())
            .flatten()
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        match forwarded {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        }
    }

    /// Whether a request with these headers is one the rules above let through.
    pub fn permits(&self, headers: &HeaderMap) -> bool {
        let origin = headers.get("origin").map(|v| v.to_str().unwrap_or_default().trim());
        let fetch_site = headers.get("sec-fetch-site").map(|v| v.to_str().unwrap_or_default().trim());
        if let Some(site) = fetch_site
            && (site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none"))
        {
            return true;
        }
        match origin {
            None => fetch_site.is_none(),
            Some(origin) => self.is_own(origin, headers) || self.is_allowed(origin),
        }
    }

    /// Whether `origin` is the server's own: that of the public URL, or the request's own
    /// scheme and `Host`.
    fn is_own(&self, origin: &str, headers: &HeaderMap) -> bool {
        if !self.public_origin.is_empty() && origin.eq_ignore_ascii_case(&self.public_origin) {
            return true;
        }
        let Some(host) = headers.get("host").and_then(|v| v.to_str().ok()).map(str::trim) else {
            return false;
        };
        let scheme = self.scheme(headers);
        origin
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
            .is_some_and(|h| h.eq_ignore_ascii_case(host) || strip_default_port(scheme, host).eq_ignore_ascii_case(h))
    }
}

/// `host` without the default port of `scheme` (browsers leave it out of `Origin`).
fn strip_default_port<'a>(scheme: &str, host: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default).unwrap_or(host)
}

/// The origin (`scheme://authority`) of an absolute URL; empty when it has none.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    let authority = strip_default_port(&scheme, authority).to_ascii_lowercase();
    format!("{scheme}://{authority}")
}

/// Which requests of a guarded route are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// Every method but `GET`, `HEAD` and `OPTIONS` (RFC 9110 section 9.2.1 safe methods).
    Unsafe,
    /// Every method: for a route that changes state on `GET` because its seed says so
    /// (`auth` `GET /auth/signout`).
    All,
}

/// A surface's switch for [`check`]: which cookies make a request cookie-authenticated, which
/// methods are checked, and the surface's own 403.
#[derive(Clone)]
pub struct OriginGuard {
    policy: OriginPolicy,
    cookies: &'static [&'static str],
    methods: Methods,
    refuse: fn() -> Response,
}

impl OriginGuard {
    /// A guard for requests carrying any of `cookies` (by name), checking `methods`, answering
    /// a refused request with `refuse()` (the surface's 403 in its own error shape).
    pub fn new(
        policy: OriginPolicy,
        cookies: &'static [&'static str],
        methods: Methods,
        refuse: fn() -> Response,
    ) -> Self {
        Self { policy, cookies, methods, refuse }
    }

    /// Whether this guard refuses a request with this method and these headers.
    pub fn refuses(&self, method: &Method, headers: &HeaderMap) -> bool {
        let checked = self.methods == Methods::All || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        checked
            && bearer(headers).is_none()
            && self.cookies.iter().any(|name| cookie(headers, name).is_some())
            && !self.policy.permits(headers)
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(guard, check)`): the guard's 403 for a
/// refused request (see the module documentation), else the route's own answer.
pub async fn check(State(guard): State<OriginGuard>, request: Request, next: Next) -> Response {
    if guard.refuses(request.method(), request.headers()) {
        tracing::info!(
            origin = request.headers().get("origin").and_then(|v| v.to_str().ok()).unwrap_or("-"),
            fetch_site = request.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("-"),
            "cross-origin cookie request refused"
        );
        return (guard.refuse)();
    }
    next.run(request).await
}

/// `Strict-Transport-Security` for responses to requests that came over https (as the trusted
/// proxy says, see [`OriginPolicy::scheme`]): one year, subdomains not included.
pub fn hsts(policy: &OriginPolicy, headers: &HeaderMap) -> Option<HeaderValue> {
    (policy.scheme(headers) == "https").then(|| HeaderValue::from_static("max-age=31536000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn policy() -> OriginPolicy {
        OriginPolicy::new(&["https://app.example.com".to_owned()], "https://auth.example.com/base", false)
    }

    #[test]
    fn own_allowed_and_headerless_requests_pass_others_do_not() {
        let p = policy();
        let host = ("host", "127.0.0.1:8080");
        assert!(p.permits(&headers(&[host])), "no Origin, no Sec-Fetch-Site: not a browser");
        assert!(p.permits(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(p.permits(&headers(&[host, ("origin", "https://auth.example.com")])), "the public URL's origin");
        assert!(p.permits(&headers(&[host, ("origin", "https://APP.example.com")])));
        assert!(p.permits(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(p.permits(&headers(&[host, ("sec-fetch-site", "none")])));
        assert!(!p.permits(&headers(&[host, ("origin", "https://evil.example")])));
        assert!(!p.permits(&headers(&[host, ("origin", "null")])));
        assert!(!p.permits(&headers(&[host, ("origin", "https://127.0.0.1:8080")])), "the scheme counts");
        assert!(!p.permits(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!p.permits(&headers(&[host, ("sec-fetch-site", "same-site")])));
        assert!(!p.permits(&headers(&[host, ("origin", "https://app.example.com.evil.example")])));
    }

    #[test]
    fn https_comes_only_from_a_trusted_proxy() {
        let h =
            headers(&[("host", "auth.internal"), ("x-forwarded-proto", "https"), ("origin", "https://auth.internal")]);
        assert!(!policy().permits(&h));
        assert_eq!(policy().scheme(&h), "http");
        let trusted = OriginPolicy { trust_forwarded: true, ..policy() };
        assert!(trusted.permits(&h));
        let proto = headers(&[("x-forwarded-proto", "http, https")]);
        assert!(hsts(&trusted, &proto).is_some() && hsts(&policy(), &proto).is_none());
    }

    #[test]
    fn only_cookie_requests_without_bearer_are_checked() {
        let guard = OriginGuard::new(policy(), &["session"], Methods::Unsafe, Response::default);
        let cross = [("host", "h"), ("origin", "https://evil.example")];
        let with_cookie = headers(&[cross[0], cross[1], ("cookie", "session=t")]);
        assert!(guard.refuses(&Method::POST, &with_cookie));
        assert!(!guard.refuses(&Method::GET, &with_cookie), "safe methods pass unless the route says All");
        assert!(!guard.refuses(&Method::POST, &headers(&cross)), "no cookie: nothing to ride");
        let bearer = headers(&[cross[0], cross[1], ("cookie", "session=t"), ("authorization", "Bearer x")]);
        assert!(!guard.refuses(&Method::POST, &bearer));
        let all = OriginGuard::new(policy(), &["session"], Methods::All, Response::default);
        assert!(all.refuses(&Method::GET, &with_cookie));
    }

    #[test]
    fn origins_of_urls_drop_paths_and_default_ports() {
        assert_eq!(origin_of("https://Auth.example.com:443/x"), "https://auth.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin_of("nonsense"), "");
    }
}
