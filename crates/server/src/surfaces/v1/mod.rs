//! The `v1` surface: Latchkey's own API under `/v1` (API.md `v1`).
//!
//! JSON in and out; errors are RFC 9457 `application/problem+json` documents whose `code`
//! member is stable: [`latchkey_core::Error::code`] for core outcomes, and `invalid_body`,
//! `unsupported_media_type`, `payload_too_large`, `missing_token`, `not_found`,
//! `method_not_allowed` for problems found before the core is reached. Authenticated routes take
//! `Authorization: Bearer <access token>` (RFC 6750) or, in cookie mode, the `lk_access` cookie.
//!
//! The API does not reveal which addresses have accounts: sign-up, code requests and password
//! reset requests answer `202 Accepted` whether or not the address is registered.
//!
//! The OpenAPI 3.1 description is generated from these handlers (utoipa) and served at
//! `/openapi.json`; `/docs` renders it.

mod routes;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::identity::{Email, User};
use latchkey_core::session::Session;
use latchkey_core::{Authenticated, Error};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::http::{BodyError, CookiePolicy, bearer, cookie};

/// The audience (`aud`) of tokens issued through `v1`. Resource servers verifying `v1` access
/// tokens check `iss` = `LATCHKEY_PUBLIC_URL` and `aud` = `v1`.
pub const AUDIENCE: &str = "v1";
/// Access token cookie of cookie mode (`Path=/`).
pub const ACCESS_COOKIE: &str = "lk_access";
/// Refresh token cookie of cookie mode (`Path=/v1/token`).
pub const REFRESH_COOKIE: &str = "lk_refresh";
/// Path of the refresh cookie: only the refresh endpoint ever receives it.
pub const REFRESH_COOKIE_PATH: &str = "/v1/token";

/// The OpenAPI document's static part; paths are collected from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey v1",
        description = "Latchkey's own authentication API. Errors are RFC 9457 problem documents with a stable `code`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "account", description = "Sign-up, email verification, password reset"),
        (name = "sessions", description = "Sign-in, tokens, sign-out, session management"),
        (name = "me", description = "The signed-in user")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some("An access token from POST /v1/sessions or /v1/token/refresh".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The `/v1/*` routes and their OpenAPI description (paths include the `/v1` prefix). Unknown
/// `/v1` paths fall through to the application's RFC 9457 `not_found`.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/v1", routes::router()).split_for_parts()
}

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
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable code (see the module documentation).
    pub code: String,
    /// One entry per invalid field, for `invalid_input` and `invalid_body`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InvalidField>,
    /// Wrong guesses left, for `code_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait, for `rate_limited` (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// A `v1` error: an RFC 9457 problem document (boxed: errors travel through `Result`s).
#[derive(Debug)]
pub struct Problem(Box<ProblemDocument>);

impl Problem {
    /// A problem with a status, code and detail.
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

    fn with_errors(mut self, errors: Vec<InvalidField>) -> Self {
        self.0.errors = errors;
        self
    }
}

impl From<Error> for Problem {
    /// The one mapping from core outcomes to `v1` problems.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let code = e.code();
        let (status, detail): (StatusCode, &str) = match &e {
            Error::InvalidInput(_) => (S::UNPROCESSABLE_ENTITY, "Some fields are invalid."),
            Error::EmailTaken => (S::CONFLICT, "That email address is already registered."),
            Error::UsernameTaken => (S::CONFLICT, "That username is taken."),
            Error::ExternalIdTaken => (S::CONFLICT, "That external id is already registered."),
            Error::InvalidCredentials => (S::UNAUTHORIZED, "Incorrect login or password."),
            Error::NotVerified => (S::FORBIDDEN, "The email address has not been verified yet."),
            Error::AlreadyVerified => (S::CONFLICT, "The email address is already verified."),
            Error::UserNotFound => (S::NOT_FOUND, "No such user."),
            Error::NoCodePending => (S::BAD_REQUEST, "No code is pending; request a new one."),
            Error::CodeExpired => (S::BAD_REQUEST, "The code has expired or was used up; request a new one."),
            Error::CodeMismatch { .. } => (S::BAD_REQUEST, "The code is incorrect."),
            Error::InvalidToken => (S::UNAUTHORIZED, "The token is invalid."),
            Error::TokenExpired => (S::UNAUTHORIZED, "The token has expired."),
            Error::SessionRevoked => (S::UNAUTHORIZED, "The session has ended."),
            Error::RefreshTokenReused => {
                (S::UNAUTHORIZED, "The refresh token was already used; the session has been revoked.")
            }
            Error::UserDisabled => (S::FORBIDDEN, "The account is disabled."),
            Error::TenantNotFound => (S::NOT_FOUND, "No such tenant."),
            Error::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "Too many attempts; try again later."),
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                (S::INTERNAL_SERVER_ERROR, "Something went wrong on our side.")
            }
            other => {
                tracing::error!(error = %other, "unmapped core error");
                (S::INTERNAL_SERVER_ERROR, "Something went wrong on our side.")
            }
        };
        let mut problem = Problem::new(status, code, detail);
        let doc = &mut problem.0;
        match e {
            Error::InvalidInput(fields) => {
                doc.errors = fields
                    .into_iter()
                    .map(|f| InvalidField { field: f.field.to_owned(), message: f.message })
                    .collect();
            }
            Error::CodeMismatch { attempts_left } => doc.attempts_left = Some(attempts_left),
            Error::RateLimited { retry_after } => doc.retry_after = Some(retry_after.as_secs().max(1)),
            _ => {}
        }
        problem
    }
}

impl From<BodyError> for Problem {
    fn from(e: BodyError) -> Self {
        let code = match e {
            BodyError::UnsupportedMediaType => "unsupported_media_type",
            BodyError::TooLarge => "payload_too_large",
            BodyError::Malformed(_) | BodyError::NotAnObject => "invalid_body",
        };
        Problem::new(e.status(), code, &e.message())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let doc = *self.0;
        let status = StatusCode::from_u16(doc.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = doc.retry_after;
        let bearer_error = (status == StatusCode::UNAUTHORIZED && doc.code != "invalid_credentials")
            .then(|| if doc.code == "missing_token" { "Bearer" } else { "Bearer error=\"invalid_token\"" });
        let mut response = (status, axum::Json(doc)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = bearer_error {
            // RFC 6750 section 3.
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// A JSON body deserialised into `T`; a missing or mistyped field is reported with its path.
pub struct V1Json<T>(pub T);

impl<S, T> FromRequest<S> for V1Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let crate::http::JsonObject { value, .. } =
            crate::http::JsonObject::<Problem>::from_request(req, state).await?;
        let value = serde_json::Value::Object(value);
        serde_path_to_error::deserialize::<_, T>(value).map(V1Json).map_err(|e| {
            let field = e.path().to_string();
            let message = e.inner().to_string();
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "The request body does not match the schema.",
            )
            .with_errors(vec![InvalidField { field, message }])
        })
    }
}

/// The signed-in caller: a valid access token of a live session, from `Authorization: Bearer`
/// or the `lk_access` cookie.
pub struct Caller(pub Authenticated);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .map(str::to_owned)
            .or_else(|| cookie(&parts.headers, ACCESS_COOKIE).filter(|c| !c.is_empty()));
        let Some(token) = token else {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "missing_token", "An access token is required."));
        };
        Ok(Caller(state.auth.authenticate(&token, &[AUDIENCE]).await?))
    }
}

/// A user, with OpenID Connect claim names.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// User id (the `sub` of the user's tokens).
    pub id: String,
    /// Email address.
    pub email: Option<String>,
    /// Whether the email address is verified.
    pub email_verified: bool,
    /// Username.
    pub username: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Phone number.
    pub phone_number: Option<String>,
    /// Postal address, one string.
    pub address: Option<String>,
    /// Profile picture URL.
    pub picture: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.as_ref().map(Email::to_string),
            email_verified: u.email_verified,
            username: u.username.as_ref().map(|n| n.as_str().to_owned()),
            given_name: u.profile.given_name.clone(),
            family_name: u.profile.family_name.clone(),
            phone_number: u.profile.phone_number.clone(),
            address: u.profile.address.clone(),
            picture: u.profile.picture.clone(),
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

/// A session of the signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Session id (the `sid` claim).
    pub id: String,
    /// Sign-in time, RFC 3339.
    pub created_at: String,
    /// Last use, RFC 3339 (updated at most once a minute).
    pub last_seen_at: String,
    /// End of the session, RFC 3339.
    pub expires_at: String,
    /// User agent at sign-in.
    pub user_agent: Option<String>,
    /// Client IP address at sign-in.
    pub ip: Option<String>,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

impl SessionView {
    fn new(s: &Session, current: &Session) -> Self {
        Self {
            id: s.id.to_string(),
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            expires_at: rfc3339(s.expires_at),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            current: s.id == current.id,
        }
    }
}

/// Cookies of cookie mode.
fn token_cookies(
    cookies: &CookiePolicy,
    access: &str,
    access_ttl: u64,
    refresh: &str,
    session_left: std::time::Duration,
) -> [HeaderValue; 2] {
    [
        cookies.set(ACCESS_COOKIE, access, "/", std::time::Duration::from_secs(access_ttl)),
        cookies.set(REFRESH_COOKIE, refresh, REFRESH_COOKIE_PATH, session_left),
    ]
}

fn clear_token_cookies(cookies: &CookiePolicy) -> [HeaderValue; 2] {
    [cookies.clear(ACCESS_COOKIE, "/"), cookies.clear(REFRESH_COOKIE, REFRESH_COOKIE_PATH)]
}
