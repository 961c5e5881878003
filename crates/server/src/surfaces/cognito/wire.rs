//! Cognito's wire format: the JSON success body, the error shape and the one mapping from
//! [`latchkey_core::Error`] to Cognito's exception names.
//!
//! Errors are the AWS JSON 1.1 protocol's: status 400 (500 for internal failures), header
//! `x-amzn-ErrorType: <Type>`, body `{"__type":"<Type>","message":"..."}` (API.md `cognito`).
//! Every answer carries an `x-amzn-RequestId` (a random UUID) as AWS's do, and the CORS headers
//! browsers need to read it.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::Error;
use serde::Serialize;

use crate::http::BodyError;

/// The media type of every request and answer body of the AWS JSON 1.1 protocol.
pub const CONTENT_TYPE_AMZ_JSON: &str = "application/x-amz-json-1.1";

/// Cognito's message for a wrong password and an unknown user alike
/// (`NotAuthorizedException`, InitiateAuth and RespondToAuthChallenge).
pub const INCORRECT_CREDENTIALS: &str = "Incorrect username or password.";

/// The message of every code that is not accepted (`CodeMismatchException`): Cognito's, plus
/// the way out, since a burnt or expired code reads the same as a wrong one.
pub const CODE_MISMATCH: &str = "Invalid verification code provided, please try again or request a new code.";

/// The exception names this surface answers with, spelled as Cognito's API reference spells
/// them (Amazon Cognito user pools API reference, "Errors" of each operation; the identity
/// pool's `GetId` and `GetCredentialsForIdentity` share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// Wrong password, unknown user, bad or revoked token, unauthenticated identity.
    NotAuthorized,
    /// The password matched but the account's email is not confirmed.
    UserNotConfirmed,
    /// The user has no password (imported from a pool, which exports none) and must reset it
    /// with `ForgotPassword` first, as Cognito answers for a user in `RESET_REQUIRED`.
    PasswordResetRequired,
    /// Sign-up with an address that already has an account.
    UsernameExists,
    /// A new password that breaks the password policy.
    InvalidPassword,
    /// A missing, malformed or unsupported request member.
    InvalidParameter,
    /// A code that is not accepted: wrong, expired, burnt by wrong guesses, or for a user
    /// without a pending code or without an account (one answer, so that no account is told
    /// apart).
    CodeMismatch,
    /// A guessing or mail limit of API.md "Guessing" was reached.
    LimitExceeded,
    /// The server is too busy to try (the password hash queue is full).
    TooManyRequests,
    /// The `ClientId` is not one of `LATCHKEY_CLIENT_IDS`.
    ResourceNotFound,
    /// An alias (here: another unique identifier) already belongs to another account.
    AliasExists,
    /// `X-Amz-Target` is missing or names no operation of this surface.
    UnknownOperation,
    /// The body is not a JSON object of the operation's shape.
    Serialization,
    /// A failure inside Latchkey (status 500).
    InternalError,
}

impl Exception {
    /// The wire name (`__type` and `x-amzn-ErrorType`).
    pub fn name(self) -> &'static str {
        match self {
            Exception::NotAuthorized => "NotAuthorizedException",
            Exception::UserNotConfirmed => "UserNotConfirmedException",
            Exception::PasswordResetRequired => "PasswordResetRequiredException",
            Exception::UsernameExists => "UsernameExistsException",
            Exception::InvalidPassword => "InvalidPasswordException",
            Exception::InvalidParameter => "InvalidParameterException",
            Exception::CodeMismatch => "CodeMismatchException",
            Exception::LimitExceeded => "LimitExceededException",
            Exception::TooManyRequests => "TooManyRequestsException",
            Exception::ResourceNotFound => "ResourceNotFoundException",
            Exception::AliasExists => "AliasExistsException",
            Exception::UnknownOperation => "UnknownOperationException",
            Exception::Serialization => "SerializationException",
            Exception::InternalError => "InternalErrorException",
        }
    }
}

/// An error answer: the exception, a message safe to show, and `Retry-After` (seconds) for
/// limits.
#[derive(Debug)]
pub struct CognitoError {
    /// Which exception.
    pub exception: Exception,
    /// The `message` member.
    pub message: String,
    /// `Retry-After` in whole seconds, for limits.
    pub retry_after: Option<u64>,
}

impl CognitoError {
    /// An error with no `Retry-After`.
    pub fn new(exception: Exception, message: impl Into<String>) -> Self {
        Self { exception, message: message.into(), retry_after: None }
    }

    /// `InvalidParameterException` with `message`.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(Exception::InvalidParameter, message)
    }

    /// `InvalidParameterException` for a required member that is absent or `null`, in the
    /// words of AWS's request validation (`member` in camelCase, as AWS names it there).
    pub fn missing(member: &str) -> Self {
        Self::invalid_parameter(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    }

    /// `NotAuthorizedException` "Incorrect username or password.".
    pub fn incorrect_credentials() -> Self {
        Self::new(Exception::NotAuthorized, INCORRECT_CREDENTIALS)
    }

    /// The HTTP status: 500 for internal failures, 400 for everything else (API.md `cognito`).
    pub fn status(&self) -> StatusCode {
        if self.exception == Exception::InternalError {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

impl From<Error> for CognitoError {
    /// The one mapping from core outcomes to Cognito exceptions; every variant is named.
    ///
    /// Accounts are not revealed beyond what Cognito reveals with "prevent user existence
    /// errors" on (the default of new user pools): an unknown user signs in to
    /// `NotAuthorizedException` like a wrong password, and a code for an unknown user, for a
    /// user without a pending code or for an already confirmed user is a `CodeMismatchException`
    /// like a wrong code, and so is an expired or burnt code (which only a real account can
    /// have). `UsernameExistsException` on `SignUp` is Cognito's own behaviour.
    fn from(e: Error) -> Self {
        use Exception as X;
        match e {
            Error::InvalidInput(fields) => {
                let message = fields.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ");
                if fields.iter().any(|f| f.field == "password") {
                    Self::new(X::InvalidPassword, format!("Password did not conform with policy: {message}"))
                } else {
                    Self::invalid_parameter(message)
                }
            }
            Error::EmailTaken | Error::UsernameTaken => {
                Self::new(X::UsernameExists, "An account with the given email already exists.")
            }
            Error::ExternalIdTaken => Self::new(X::AliasExists, "An account with the given alias already exists."),
            Error::InvalidCredentials => Self::incorrect_credentials(),
            Error::PasswordResetRequired => Self::new(X::PasswordResetRequired, "Password reset required for the user"),
            // Only after the password (or SRP proof) matched.
            Error::NotVerified => Self::new(X::UserNotConfirmed, "User is not confirmed."),
            Error::UserDisabled => Self::new(X::NotAuthorized, "User is disabled."),
            // Whether the code was wrong, expired or burnt, or the account has none pending or
            // does not exist: one answer, since telling them apart tells accounts apart.
            Error::AlreadyVerified
            | Error::UserNotFound
            | Error::NoCodePending
            | Error::CodeExpired
            | Error::CodeMismatch { .. } => Self::new(X::CodeMismatch, CODE_MISMATCH),
            Error::InvalidToken => Self::new(X::NotAuthorized, "Invalid token."),
            Error::TokenExpired => Self::new(X::NotAuthorized, "Access Token has expired"),
            Error::SessionRevoked => Self::new(X::NotAuthorized, "Token has been revoked."),
            Error::RefreshTokenReused => Self::new(X::NotAuthorized, "Refresh Token has been revoked"),
            Error::TenantNotFound => Self::new(X::ResourceNotFound, "User pool does not exist."),
            Error::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(X::LimitExceeded, "Attempt limit exceeded, please try after some time.")
            },
            Error::Overloaded { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(X::TooManyRequests, "Too many requests, please try again later.")
            },
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::new(X::InternalError, "Internal server error.")
            }
        }
    }
}

impl From<BodyError> for CognitoError {
    /// Unreadable bodies: `SerializationException` for a body that is not a JSON object of the
    /// operation's shape, `InvalidParameterException` for one over the size limit.
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Self::invalid_parameter(e.message()),
            BodyError::UnsupportedMediaType => {
                Self::new(Exception::Serialization, format!("Content-Type must be {CONTENT_TYPE_AMZ_JSON}"))
            }
            BodyError::Malformed(_) | BodyError::NotAnObject | BodyError::Schema { .. } => {
                Self::new(Exception::Serialization, e.message())
            }
        }
    }
}

/// Headers every answer carries: the AWS request id, and CORS for browsers (no credentials
/// are involved, so any origin may read the answer).
pub fn common_headers(headers: &mut HeaderMap) {
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-amzn-RequestId, x-amzn-ErrorType, x-amzn-ErrorMessage, Date"),
    );
}

/// The `{"__type", "message"}` body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    kind: &'static str,
    message: &'a str,
}

impl IntoResponse for CognitoError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody { kind: self.exception.name(), message: &self.message })
            .unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_AMZ_JSON));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.exception.name()));
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        common_headers(headers);
        response
    }
}

/// A success: 200 with the operation's JSON output (`{}` at least).
pub struct Output(pub serde_json::Value);

impl IntoResponse for Output {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_AMZ_JSON));
        common_headers(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use latchkey_core::FieldError;
    use serde_json::Value;

    use super::*;

    async fn render(e: CognitoError) -> (u16, String, Value, Option<String>) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let header = |n: &str| response.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let kind = header("x-amzn-errortype").unwrap_or_default();
        let retry = header("retry-after");
        assert_eq!(header("content-type").as_deref(), Some(CONTENT_TYPE_AMZ_JSON));
        assert!(header("x-amzn-requestid").is_some());
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, kind, serde_json::from_slice(&body).expect("json"), retry)
    }

    #[tokio::test]
    async fn every_core_error_has_its_exception() {
        use Exception as X;
        let cases: Vec<(Error, u16, Exception)> = vec![
            (Error::InvalidInput(vec![FieldError::new("password", "too short")]), 400, X::InvalidPassword),
            (Error::InvalidInput(vec![FieldError::new("SRP_A", "not hex")]), 400, X::InvalidParameter),
            (Error::EmailTaken, 400, X::UsernameExists),
            (Error::UsernameTaken, 400, X::UsernameExists),
            (Error::ExternalIdTaken, 400, X::AliasExists),
            (Error::InvalidCredentials, 400, X::NotAuthorized),
            (Error::PasswordResetRequired, 400, X::PasswordResetRequired),
            (Error::NotVerified, 400, X::UserNotConfirmed),
            (Error::AlreadyVerified, 400, X::CodeMismatch),
            (Error::UserNotFound, 400, X::CodeMismatch),
            (Error::NoCodePending, 400, X::CodeMismatch),
            (Error::CodeExpired, 400, X::CodeMismatch),
            (Error::CodeMismatch { attempts_left: 2 }, 400, X::CodeMismatch),
            (Error::CodeMismatch { attempts_left: 0 }, 400, X::CodeMismatch),
            (Error::InvalidToken, 400, X::NotAuthorized),
            (Error::TokenExpired, 400, X::NotAuthorized),
            (Error::SessionRevoked, 400, X::NotAuthorized),
            (Error::RefreshTokenReused, 400, X::NotAuthorized),
            (Error::UserDisabled, 400, X::NotAuthorized),
            (Error::TenantNotFound, 400, X::ResourceNotFound),
            (Error::RateLimited { retry_after: Duration::from_millis(1500) }, 400, X::LimitExceeded),
            (Error::Overloaded { retry_after: Duration::from_secs(1) }, 400, X::TooManyRequests),
            (Error::internal("database on fire"), 500, X::InternalError),
        ];
        for (error, status, exception) in cases {
            let code = error.code();
            let limited = matches!(error, Error::RateLimited { .. } | Error::Overloaded { .. });
            let (got, kind, body, retry) = render(CognitoError::from(error)).await;
            assert_eq!(got, status, "{code}: {body}");
            assert_eq!(kind, exception.name(), "{code}");
            assert_eq!(body["__type"], exception.name(), "{code}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{code}: {body}");
            assert!(!body.to_string().contains("fire"), "internal detail never reaches the client");
            assert_eq!(retry.as_deref(), limited.then_some("1"), "{code}");
        }
        let (_, _, wrong, _) = render(Error::InvalidCredentials.into()).await;
        assert_eq!(wrong["message"], INCORRECT_CREDENTIALS);
    }

    #[tokio::test]
    async fn unreadable_bodies_are_400() {
        for (error, exception) in [
            (BodyError::TooLarge, Exception::InvalidParameter),
            (BodyError::UnsupportedMediaType, Exception::Serialization),
            (BodyError::Malformed("eof".into()), Exception::Serialization),
            (BodyError::NotAnObject, Exception::Serialization),
            (
                BodyError::Schema { path: "Username".into(), message: "expected a string".into() },
                Exception::Serialization,
            ),
        ] {
            let (status, kind, _, _) = render(error.into()).await;
            assert_eq!((status, kind.as_str()), (400, exception.name()));
        }
    }
}
