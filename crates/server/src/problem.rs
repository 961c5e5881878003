//! RFC 9457 problem details (`application/problem+json`): the error body of the `v1` surface and
//! of the always-on endpoints (unknown routes, readiness, JWKS). Built here once.
//!
//! Every problem has a stable machine-readable `code` member (an extension member, RFC 9457
//! section 3.2) and a `type` URI derived from it, `urn:latchkey:problem:<code>`.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The code (and `type` suffix) of [`Problem::cross_origin`].
pub const CROSS_ORIGIN: &str = "cross_origin";

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvalidField {
    /// The field, as a JSON path (`email`, `profile.given_name`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document, as sent.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// A URI naming the problem type: `urn:latchkey:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type (the status's reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence, safe to show to the client.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// One entry per invalid field, for `invalid_input` and `invalid_body`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InvalidField>,
    /// Wrong guesses left, for `code_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait, for `rate_limited` (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// A problem response (boxed: errors travel through `Result`s).
///
/// Rendered with `Content-Type: application/problem+json`, `Retry-After` when `retry_after` is
/// set, and, on 401, an RFC 6750 section 3 `WWW-Authenticate: Bearer` challenge (with
/// `error="invalid_token"` unless the code is `missing_token`; none for `invalid_credentials`,
/// which is about a password, not a token).
#[derive(Debug)]
pub struct Problem(Box<ProblemDocument>);

impl Problem {
    /// A problem with a status, a stable code and a client-safe detail.
    pub fn new(status: StatusCode, code: &str, detail: &str) -> Self {
        Self(Box::new(ProblemDocument {
            problem_type: format!("urn:latchkey:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.to_owned(),
            code: code.to_owned(),
            errors: Vec::new(),
            attempts_left: None,
            retry_after: None,
        }))
    }

    /// Adds one entry per invalid field.
    #[must_use]
    pub fn with_errors(mut self, errors: Vec<InvalidField>) -> Self {
        self.0.errors = errors;
        self
    }

    /// Adds the number of wrong guesses left.
    #[must_use]
    pub fn with_attempts_left(mut self, attempts_left: u32) -> Self {
        self.0.attempts_left = Some(attempts_left);
        self
    }

    /// Adds how long to wait, in seconds (at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds.max(1));
        self
    }

    /// `403 cross_origin`: a cookie-authenticated request that another site's page sent (its
    /// `Origin` or `Sec-Fetch-Site` says so; see [`crate::http::origin`]). Refused before the
    /// route runs, so nothing changed; the same request from the site itself, from an origin in
    /// `LATCHKEY_ALLOWED_ORIGINS` or with a bearer token is accepted.
    pub fn cross_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            CROSS_ORIGIN,
            "Cross-origin request refused: this request carries the session cookie but comes from another site.",
        )
    }

    /// The document, for inspection.
    pub fn document(&self) -> &ProblemDocument {
        &self.0
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let doc = *self.0;
        let status = StatusCode::from_u16(doc.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = doc.retry_after;
        let challenge = (status == StatusCode::UNAUTHORIZED && doc.code != "invalid_credentials")
            .then(|| if doc.code == "missing_token" { "Bearer" } else { "Bearer error=\"invalid_token\"" });
        let mut response = (status, axum::Json(doc)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_renders_as_rfc_9457_with_its_headers() {
        let response = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Slow down.")
            .with_retry_after(0)
            .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[RETRY_AFTER], "1");

        let response = Problem::new(StatusCode::UNAUTHORIZED, "session_revoked", "Ended.").into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        let response = Problem::new(StatusCode::UNAUTHORIZED, "missing_token", "Need one.").into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        let response = Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "No.").into_response();
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn the_document_carries_type_title_and_code() {
        let problem = Problem::new(StatusCode::NOT_FOUND, "not_found", "No such route.");
        let doc = serde_json::to_value(problem.document()).expect("json");
        assert_eq!(doc["type"], "urn:latchkey:problem:not_found");
        assert_eq!(doc["title"], "Not Found");
        assert_eq!(doc["status"], 404);
        assert_eq!(doc["code"], "not_found");
        assert!(doc.get("errors").is_none() && doc.get("attempts_left").is_none());
    }

    #[test]
    fn cross_origin_is_a_403_with_its_own_type() {
        let problem = Problem::cross_origin();
        let doc = serde_json::to_value(problem.document()).expect("json");
        assert_eq!(doc["type"], "urn:latchkey:problem:cross_origin");
        assert_eq!((doc["status"].as_u64(), doc["code"].as_str()), (Some(403), Some("cross_origin")));
        assert!(problem.into_response().headers().get(WWW_AUTHENTICATE).is_none());
    }
}
