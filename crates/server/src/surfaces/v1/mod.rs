//! The `v1` surface: Latchkey's own API under `/v1` (API.md `v1`).
//!
//! JSON in and out; errors are RFC 9457 `application/problem+json` documents whose `code`
//! member is stable: [`latchkey_core::Error::code`] for core outcomes, and `invalid_body`,
//! `unsupported_media_type`, `payload_too_large`, `missing_token`, `not_found`,
//! `method_not_allowed` for problems found before the core is reached. Authenticated routes take
//! `Authorization: Bearer <access token>` (RFC 6750) or, in cookie mode, the `lk_access` cookie.
//! In cookie mode, a request that changes state (any method but `GET`/`HEAD`/`OPTIONS`) and
//! carries a `v1` cookie but no bearer token must come from the server's own origin or one of
//! `LATCHKEY_ALLOWED_ORIGINS`, else it is `403 cross_origin` ([`crate::http::origin`]).
//!
//! The API does not reveal which addresses have accounts: sign-up, code requests and password
//! reset requests answer `202 Accepted` whether or not the address is registered.
//!
//! The OpenAPI 3.1 description is generated from these handlers (utoipa) and served at
//! `/openapi.json`; `/docs` renders it.

mod routes;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use latchkey_core::identity::{Email, User};
use latchkey_core::session::Session;
use latchkey_core::{Auth, Authenticated, Error};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::context::{Mounted, SurfaceContext};
use crate::http::{
    BodyError, ClientAddressPolicy, CookiePolicy, FieldProblem, Methods, OriginGuard, credential, origin, read_json,
};
use crate::problem::{CROSS_ORIGIN, InvalidField, Problem};

/// The audience (`aud`) of tokens issued through `v1`. Resource servers verifying `v1` access
/// tokens check `iss` = `LATCHKEY_PUBLIC_URL` and `aud` = `v1`.
const AUDIENCE: &str = "v1";
/// Access token cookie of cookie mode (`Path=/`).
const ACCESS_COOKIE: &str = "lk_access";
/// Refresh token cookie of cookie mode (`Path=/v1/token`).
const REFRESH_COOKIE: &str = "lk_refresh";
/// Path of the refresh cookie: only the refresh endpoint ever receives it.
const REFRESH_COOKIE_PATH: &str = "/v1/token";

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
struct ApiDoc;

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

/// Documents `403 cross_origin` on every operation that changes state: in cookie mode it
/// answers those when another site's page sends them.
struct CrossOrigin;

impl Modify for CrossOrigin {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let line = format!(
            "`{CROSS_ORIGIN}`: in cookie mode, the request carries a `v1` cookie and no bearer token and comes from another site's page (not this origin, not in `LATCHKEY_ALLOWED_ORIGINS`); nothing was changed"
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                match responses.get_mut("403") {
                    Some(utoipa::openapi::RefOr::T(existing)) => {
                        existing.description = format!("{}; {line}", existing.description);
                    }
                    Some(utoipa::openapi::RefOr::Ref(_)) => {}
                    None => {
                        let response = utoipa::openapi::ResponseBuilder::new()
                            .description(line.clone())
                            .content(
                                "application/problem+json",
                                utoipa::openapi::ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build();
                        responses.insert("403".to_owned(), utoipa::openapi::RefOr::T(response));
                    }
                }
            }
        }
    }
}

/// A cookie-mode request from another site's page: `403 cross_origin`.
fn cross_origin() -> axum::response::Response {
    axum::response::IntoResponse::into_response(Problem::cross_origin())
}

/// What the handlers use.
#[derive(Clone, FromRef)]
struct V1State {
    auth: Auth,
    cookies: CookiePolicy,
    clients: ClientAddressPolicy,
}

/// The `/v1/*` routes and their OpenAPI description (paths include the `/v1` prefix). Unknown
/// `/v1` paths fall through to the application's RFC 9457 `not_found`.
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let state = V1State { auth: ctx.auth.clone(), cookies: ctx.cookies, clients: ctx.clients };
    let (router, mut openapi) =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/v1", routes::router()).split_for_parts();
    // The paths are collected by the router, after `ApiDoc`'s modifiers ran.
    CrossOrigin.modify(&mut openapi);
    let guard = OriginGuard::new(ctx.origins.clone(), &[ACCESS_COOKIE, REFRESH_COOKIE], Methods::Unsafe, cross_origin);
    let router = router.route_layer(axum::middleware::from_fn_with_state(guard, origin::check));
    document_shared_responses(&mut openapi);
    Ok(Mounted { router: router.with_state(state), openapi: Some(openapi) })
}

/// Documents on every operation of `openapi` the responses the shared extractors and the core
/// give, whatever the handler (each added only where the operation does not document that
/// status itself):
/// - with a JSON request body ([`Body`]): 400 `invalid_body` (not JSON, or not an object),
///   413 `payload_too_large`, 415 `unsupported_media_type`, 422 `invalid_body` or
///   `invalid_input`;
/// - taking a bearer token ([`Caller`]): 401 `missing_token`, `invalid_token`,
///   `token_expired`, `session_revoked`;
/// - whose body carries a password (hashed on a bounded queue): 503 `overloaded` with
///   `Retry-After`.
fn document_shared_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type};

    let problem = |description: &str, retry_after: bool| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        let mut response = ResponseBuilder::new().description(description).content("application/problem+json", content);
        if retry_after {
            let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
            let header =
                HeaderBuilder::new().schema(Some(seconds)).description(Some("Seconds to wait before retrying"));
            response = response.header("Retry-After", header.build());
        }
        RefOr::T(response.build())
    };
    let body_responses = [
        ("400", "The body is not JSON, or not a JSON object (`invalid_body`)"),
        ("413", "The body is larger than the server accepts (`payload_too_large`)"),
        ("415", "The body is not `application/json` (`unsupported_media_type`)"),
        ("422", "A member is missing or has the wrong type (`invalid_body`), or a field is invalid (`invalid_input`)"),
    ];
    // Request bodies that carry a password: their schemas have a member named `*password`.
    let schemas = openapi.components.as_ref().map(|c| c.schemas.clone()).unwrap_or_default();
    let has_password = |schema_ref: &str| {
        let name = schema_ref.rsplit('/').next().unwrap_or_default();
        matches!(schemas.get(name), Some(RefOr::T(Schema::Object(o))) if o.properties.keys().any(|k| k.ends_with("password")))
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let mut added = Vec::new();
            let body_ref = match &operation.request_body {
                Some(RefOr::T(body)) => Some(
                    body.content
                        .values()
                        .find_map(|c| match c {
                            RefOr::T(c) => match &c.schema {
                                Some(RefOr::Ref(r)) => Some(r.ref_location.clone()),
                                _ => None,
                            },
                            RefOr::Ref(_) => None,
                        })
                        .unwrap_or_default(),
                ),
                _ => None,
            };
            if let Some(body_ref) = &body_ref {
                added.extend(body_responses.iter().map(|(status, text)| (*status, *text, false)));
                if has_password(body_ref) {
                    added.push((
                        "503",
                        "Too many password hashes are waiting; retry after `Retry-After` seconds (`overloaded`)",
                        true,
                    ));
                }
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                added.push(("401", "No access token (`missing_token`), or it is invalid, expired or of an ended session (`invalid_token`, `token_expired`, `session_revoked`)", false));
            }
            for (status, description, retry_after) in added {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description, retry_after));
            }
        }
    }
}

impl From<Error> for Problem {
    /// The one mapping from core outcomes to `v1` problems; every variant is named. The
    /// `code` member is [`Error::code`].
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let code = e.code();
        let (status, detail): (StatusCode, &str) = match &e {
            Error::InvalidInput(_) => (S::UNPROCESSABLE_ENTITY, "Some fields are invalid."),
            Error::EmailTaken => (S::CONFLICT, "That email address is already registered."),
            Error::UsernameTaken => (S::CONFLICT, "That username is taken."),
            Error::ExternalIdTaken => (S::CONFLICT, "That external id is already registered."),
            Error::InvalidCredentials => (S::UNAUTHORIZED, "Incorrect login or password."),
            Error::PasswordResetRequired => {
                (S::FORBIDDEN, "This account has no password yet; reset it with a code sent by email.")
            }
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
            Error::Overloaded { .. } => (S::SERVICE_UNAVAILABLE, "The server is busy; try again shortly."),
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                (S::INTERNAL_SERVER_ERROR, "Something went wrong on our side.")
            }
        };
        let problem = Problem::new(status, code, detail);
        match e {
            Error::InvalidInput(fields) => problem.with_errors(
                fields.into_iter().map(|f| InvalidField { field: f.field.to_owned(), message: f.message }).collect(),
            ),
            Error::CodeMismatch { attempts_left } => problem.with_attempts_left(attempts_left),
            Error::RateLimited { retry_after } | Error::Overloaded { retry_after } => {
                problem.with_retry_after(retry_after.as_secs())
            }
            _ => problem,
        }
    }
}

impl From<BodyError> for Problem {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::UnsupportedMediaType => Problem::new(e.status(), "unsupported_media_type", &e.message()),
            BodyError::TooLarge => Problem::new(e.status(), "payload_too_large", &e.message()),
            BodyError::Malformed(_) | BodyError::NotAnObject => Problem::new(e.status(), "invalid_body", &e.message()),
            BodyError::Schema { path, message } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "The request body does not match the schema.",
            )
            .with_errors(vec![InvalidField { field: path, message }]),
        }
    }
}

impl From<Vec<FieldProblem>> for Problem {
    fn from(problems: Vec<FieldProblem>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", "Some fields are invalid.")
            .with_errors(problems.into_iter().map(|p| InvalidField { field: p.field, message: p.message }).collect())
    }
}

/// A JSON body deserialised into `T`; a missing or mistyped field is reported with its path.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req).await.map(Body).map_err(Problem::from)
    }
}

/// The signed-in caller: a valid access token of a live session, from `Authorization: Bearer`
/// or the `lk_access` cookie.
struct Caller(Authenticated);

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(token) = credential(&parts.headers, ACCESS_COOKIE) else {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "missing_token", "An access token is required."));
        };
        Ok(Caller(Auth::from_ref(state).authenticate(&token, &[AUDIENCE]).await?))
    }
}

/// A user, with OpenID Connect claim names.
#[derive(Debug, Serialize, ToSchema)]
struct UserView {
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
struct SessionView {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::to_bytes;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use latchkey_core::FieldError;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    async fn render(problem: Problem) -> (u16, Value) {
        let response = problem.into_response();
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn every_core_error_is_a_problem_with_its_stable_code() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::InvalidInput(vec![FieldError::new("email", "email is bad")]), 422),
            (Error::EmailTaken, 409),
            (Error::UsernameTaken, 409),
            (Error::ExternalIdTaken, 409),
            (Error::InvalidCredentials, 401),
            (Error::PasswordResetRequired, 403),
            (Error::NotVerified, 403),
            (Error::AlreadyVerified, 409),
            (Error::UserNotFound, 404),
            (Error::NoCodePending, 400),
            (Error::CodeExpired, 400),
            (Error::CodeMismatch { attempts_left: 3 }, 400),
            (Error::InvalidToken, 401),
            (Error::TokenExpired, 401),
            (Error::SessionRevoked, 401),
            (Error::RefreshTokenReused, 401),
            (Error::UserDisabled, 403),
            (Error::TenantNotFound, 404),
            (Error::RateLimited { retry_after: Duration::from_secs(7) }, 429),
            (Error::Overloaded { retry_after: Duration::from_secs(1) }, 503),
            (Error::internal("disk full at /var/lib/secret"), 500),
        ];
        for (error, status) in cases {
            let code = error.code();
            let (got, body) = render(error.into()).await;
            assert_eq!(got, status, "{code}: {body}");
            assert_eq!(body["code"], code);
            assert_eq!(body["status"], status);
            assert_eq!(body["type"], format!("urn:latchkey:problem:{code}"));
            assert!(!body.to_string().contains("/var/lib"), "internal detail never reaches the client");
        }
        let (_, body) = render(Error::RateLimited { retry_after: Duration::from_secs(7) }.into()).await;
        assert_eq!(body["retry_after"], 7);
        let (_, body) = render(Error::InvalidInput(vec![FieldError::new("email", "email is bad")]).into()).await;
        assert_eq!(body["errors"][0]["field"], "email");
    }

    #[derive(serde::Deserialize)]
    struct Dto {
        #[allow(dead_code)]
        password: String,
    }

    #[tokio::test]
    async fn unreadable_bodies_are_problems_with_their_own_codes() {
        let app = Router::new().route("/", post(|Body(_): Body<Dto>| async { axum::http::StatusCode::OK }));
        for (content_type, body, status, code) in [
            ("application/json", "{\"password\":", 400, "invalid_body"),
            ("application/json", "[]", 400, "invalid_body"),
            ("application/json", "{\"password\":[]}", 422, "invalid_body"),
            ("text/plain", "{}", 415, "unsupported_media_type"),
        ] {
            let request = Request::post("/")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("response");
            assert_eq!(response.status().as_u16(), status, "{body}");
            let bytes = to_bytes(response.into_body(), usize::MAX).await.expect("body");
            let json: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(json["code"], code, "{body}");
        }
    }
}
