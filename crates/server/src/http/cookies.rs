//! Cookies Latchkey sets (API.md, "Cookies") and how a request's credential is found.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// Attributes of a cookie Latchkey sets: `HttpOnly`, `SameSite=Lax`, `Secure` on https.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    /// Add `Secure` (when `LATCHKEY_PUBLIC_URL` is https).
    pub secure: bool,
}

impl CookiePolicy {
    /// `Set-Cookie` value for `name=value` on `path`, living `max_age` (whole seconds).
    pub fn set(&self, name: &str, value: &str, path: &str, max_age: Duration) -> HeaderValue {
        let cookie = cookie::Cookie::build((name, value))
            .path(path)
            .http_only(true)
            .same_site(cookie::SameSite::Lax)
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)))
            .build();
        HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` value that clears `name` on `path` (`Max-Age=0`).
    pub fn clear(&self, name: &str, path: &str) -> HeaderValue {
        self.set(name, "", path, Duration::ZERO)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers; an empty value counts as
/// absent (it is what a cleared cookie leaves behind).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 section 2.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The credential of a request, looked up the same way on every surface: an `Authorization:
/// Bearer` token first (explicit, and never sent by a browser on its own), else the surface's
/// session cookie `cookie_name`.
pub fn credential(headers: &HeaderMap, cookie_name: &str) -> Option<String> {
    bearer(headers).map(str::to_owned).or_else(|| cookie(headers, cookie_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_cookies_are_read() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
        h.append(COOKIE, HeaderValue::from_static("a=1; session=tok; empty="));
        assert_eq!(bearer(&h), Some("abc.def"));
        assert_eq!(cookie(&h, "session").as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "none"), None);
        assert_eq!(cookie(&h, "empty"), None, "a cleared cookie is no cookie");
        assert_eq!(credential(&h, "session").as_deref(), Some("abc.def"), "the bearer token comes first");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        assert_eq!(credential(&h, "session").as_deref(), Some("tok"));
    }

    #[test]
    fn cookies_carry_the_shared_attributes() {
        let set = CookiePolicy { secure: true }.set("session", "v", "/", Duration::from_secs(60));
        let s = set.to_str().expect("ascii");
        for part in ["session=v", "HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(s.contains(part), "{s}");
        }
        let clear = CookiePolicy { secure: false }.clear("session", "/");
        let c = clear.to_str().expect("ascii");
        assert!(c.contains("Max-Age=0") && !c.contains("Secure"), "{c}");
    }
}
