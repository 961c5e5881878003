//! HTTP plumbing shared by the surfaces: a JSON body extractor whose rejection is the
//! surface's own error type, a field reader that reports every bad field at once, cookies,
//! bearer tokens and client metadata. No auth rules live here.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use latchkey_core::identity::ParseError;
use latchkey_core::session::ClientMeta;
use serde_json::{Map, Value};

use crate::app::AppState;

/// Largest request body accepted, in bytes (API.md, "Bad input": 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a request body could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// `Content-Type` is missing or not JSON.
    UnsupportedMediaType,
    /// Larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not valid JSON; the parser's message.
    Malformed(String),
    /// Valid JSON, but not an object.
    NotAnObject,
}

impl BodyError {
    /// The HTTP status for this rejection: 415, 413, 400 or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Malformed(_) | BodyError::NotAnObject => StatusCode::BAD_REQUEST,
        }
    }

    /// A message for the client.
    pub fn message(&self) -> String {
        match self {
            BodyError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            BodyError::TooLarge => format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            BodyError::Malformed(e) => format!("request body is not valid JSON: {e}"),
            BodyError::NotAnObject => "request body must be a JSON object".into(),
        }
    }
}

/// Whether a `Content-Type` is JSON: `application/json`, `application/*+json` or AWS's
/// `application/x-amz-json-1.0/1.1`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json") || essence.starts_with("application/x-amz-json-")
}

/// A JSON object body. Rejections become the surface's error `E`, so malformed JSON, wrong
/// media types and oversized bodies answer in the surface's own shape.
pub struct JsonObject<E> {
    /// The object.
    pub value: Map<String, Value>,
    _error: PhantomData<fn() -> E>,
}

impl<S, E> FromRequest<S> for JsonObject<E>
where
    S: Send + Sync,
    E: From<BodyError> + IntoResponse,
{
    type Rejection = E;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(BodyError::UnsupportedMediaType.into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::TooLarge
            } else {
                BodyError::Malformed(rejection.body_text())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(value)) => Ok(Self { value, _error: PhantomData }),
            Ok(_) => Err(BodyError::NotAnObject.into()),
            Err(e) => Err(BodyError::Malformed(e.to_string()).into()),
        }
    }
}

/// One invalid field, in the surface's field naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The wire name of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Reads fields of a JSON object, collecting one problem per bad field so a client learns of
/// every mistake in one round trip.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    problems: Vec<FieldProblem>,
}

impl<'a> Fields<'a> {
    /// A reader over `object`.
    pub fn new(object: &'a Map<String, Value>) -> Self {
        Self { object, problems: Vec::new() }
    }

    /// Records a problem with `field`.
    pub fn problem(&mut self, field: &str, message: impl Into<String>) {
        if !self.problems.iter().any(|p| p.field == field) {
            self.problems.push(FieldProblem { field: field.to_owned(), message: message.into() });
        }
    }

    /// A required, non-empty string.
    pub fn string(&mut self, field: &str) -> Option<&'a str> {
        match self.object.get(field) {
            None | Some(Value::Null) => {
                self.problem(field, format!("{field} is required"));
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(field, format!("{field} must not be empty"));
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(field, format!("{field} must be a string"));
                None
            }
        }
    }

    /// An optional string: missing or `null` is `None`; any other non-string is a problem.
    pub fn optional_string(&mut self, field: &str) -> Option<&'a str> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(field, format!("{field} must be a string"));
                None
            }
        }
    }

    /// The raw value of a field, for fields that accept several JSON types.
    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|v| !v.is_null())
    }

    /// Parses a present string with `parse`, recording its error against `field`.
    pub fn parse<T>(
        &mut self,
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        match parse(value?) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(field, format!("{field} {e}"));
                None
            }
        }
    }

    /// The problems found, if any.
    ///
    /// # Errors
    /// Every recorded problem, in the order found.
    pub fn finish(self) -> Result<(), Vec<FieldProblem>> {
        if self.problems.is_empty() { Ok(()) } else { Err(self.problems) }
    }
}

/// Attributes of a cookie Latchkey sets: `HttpOnly`, `SameSite=Lax`, `Secure` on https.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    /// Add `Secure` (when `LATCHKEY_PUBLIC_URL` is https).
    pub secure: bool,
}

impl CookiePolicy {
    /// `Set-Cookie` value for `name=value` on `path`, living `max_age`.
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

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 section 2.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The client's address and user agent, recorded on sessions and used for rate limits.
///
/// The address is the TCP peer's, or, with `LATCHKEY_TRUST_FORWARDED_FOR`, the last entry of
/// `X-Forwarded-For` (the one the trusted proxy in front of Latchkey appended).
#[derive(Debug, Clone, Default)]
pub struct Client(pub ClientMeta);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let forwarded = state
            .config
            .trust_forwarded_for
            .then(|| {
                let header =
                    parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back()?;
                let last = header.rsplit(',').next()?.trim();
                last.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
            })
            .flatten();
        let ip =
            forwarded.or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip().to_string()));
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Client(ClientMeta { ip, user_agent }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_cookies_are_read() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
        h.append(COOKIE, HeaderValue::from_static("a=1; session=tok"));
        assert_eq!(bearer(&h), Some("abc.def"));
        assert_eq!(cookie(&h, "session").as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "none"), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
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

    #[test]
    fn fields_report_every_problem() {
        let v = serde_json::json!({"a": "", "b": 3, "c": "ok"});
        let obj = v.as_object().expect("object");
        let mut f = Fields::new(obj);
        assert_eq!(f.string("a"), None);
        assert_eq!(f.string("b"), None);
        assert_eq!(f.string("c"), Some("ok"));
        assert_eq!(f.string("d"), None);
        assert_eq!(f.optional_string("e"), None);
        let problems = f.finish().expect_err("problems");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["a", "b", "d"]);
    }
}
