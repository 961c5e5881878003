//! The `auth` surface: `/auth/*`, seed `004_a0b659fedad22c6b.txt` (a SuperTokens-style API)
//! as pinned down by API.md `auth`.
//!
//! Username users of the default tenant, each with an `employee_id` (the core's
//! [`ExternalId`], stored in its string form), signing in with a session held in three
//! cookies: `sAccessToken` (the access JWT, `Path=/`, for `LATCHKEY_ACCESS_TOKEN_TTL`),
//! `sRefreshToken` (opaque, `Path=/auth/session/refresh`) and `sIdRefreshToken` (opaque,
//! `Path=/`, bound to the refresh token: see [`latchkey_core::RefreshPair`]); the last two live
//! as long as the session.
//!
//! Every body is the envelope `{"status", "timestamp", "content"? | "error": {"code",
//! "message"}}`, `timestamp` in UTC with milliseconds (`2022-03-28T04:58:13.306Z`). Error
//! codes: `V1001` the request is not understood (a missing or mistyped field, an unreadable
//! body, an unknown route or method), `V1008` invalid session token, `V1009` invalid username
//! or password, `V1010` the employee already has an account, `V1011` the username is taken;
//! beyond the seed, `V1012` try again later (429 too many attempts, 503 the server is busy; both
//! with `Retry-After`) and `V1000` an internal error (500, details only in the log).

use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use latchkey_core::identity::{ExternalId, Login, ParseError, PresentedPassword, TenantId, User, Username};
use latchkey_core::session::Session;
use latchkey_core::token::RefreshToken;
use latchkey_core::{Auth, Error, ExtraClaims, NewUser, RefreshPair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::context::{Mounted, SurfaceContext};
use crate::http::cookies::cookie;
use crate::http::{
    BodyError, Client, ClientAddressPolicy, CookiePolicy, FieldProblem, Lenient, Methods, OriginGuard, Validator,
    credential, origin, read_json,
};

/// The surface's mount prefix.
const PREFIX: &str = "/auth";
/// The audience (`aud`) of the access tokens this surface issues and accepts.
const AUDIENCE: &str = "auth";
/// The one tenant this surface serves.
const TENANT: TenantId = TenantId::DEFAULT;
/// Cookie holding the access JWT.
const ACCESS_COOKIE: &str = "sAccessToken";
/// Cookie holding the refresh token.
const REFRESH_COOKIE: &str = "sRefreshToken";
/// Cookie holding the value bound to the refresh token.
const ID_REFRESH_COOKIE: &str = "sIdRefreshToken";
/// Path of the refresh token cookie: only the refresh route ever receives it.
const REFRESH_PATH: &str = "/auth/session/refresh";

/// The seed's message for `V1009`, for a wrong password and an unknown username alike.
const INVALID_CREDENTIALS: &str = "Invalid email or password";
/// The seed's message for `V1008`.
const INVALID_SESSION: &str = "Invalid session token";

/// What the handlers use.
#[derive(Clone, FromRef)]
struct AuthState {
    auth: Auth,
    cookies: CookiePolicy,
    clients: ClientAddressPolicy,
}

/// The surface's routes under `/auth` (API.md `auth`), with the envelope for unknown routes
/// (404) and methods (405) too.
///
/// # Errors
/// None; the signature is the surface contract's.
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let state = AuthState { auth: ctx.auth.clone(), cookies: ctx.cookies, clients: ctx.clients };
    // Sign-out (a GET, as the seed has it) and refresh act on the session cookies: same-origin
    // (or an allowed origin) only, whatever the method.
    let guard = OriginGuard::new(
        ctx.origins.clone(),
        &[ACCESS_COOKIE, REFRESH_COOKIE, ID_REFRESH_COOKIE],
        Methods::All,
        cross_origin,
    );
    let guarded = || axum::middleware::from_fn_with_state(guard.clone(), origin::check);
    let routes = Router::new()
        .route("/signup", post(signup))
        .route("/signin", post(signin))
        .route("/signout", get(signout).layer(guarded()))
        .route("/session/refresh", post(refresh).layer(guarded()))
        .route("/user", get(current_user))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            AuthError::bad_request(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed on this route")
        })
        .with_state(state);
    // `/auth/` is not reached by the nested fallback; it is an unknown route of this surface too.
    let router = Router::new().nest(PREFIX, routes).route(&format!("{PREFIX}/"), any(not_found));
    Ok(Mounted::routes(router))
}

/// A cookie-authenticated request from another site's page (see [`crate::http::origin`]):
/// `403 V1001`. The seed has no code for it; V1001 ("the request is not understood", i.e. not
/// accepted as sent) is the closest, and unlike V1008 it does not tell the client that its
/// session is gone (it is not: nothing is revoked).
fn cross_origin() -> Response {
    AuthError::bad_request(StatusCode::FORBIDDEN, "Cross-origin request refused").into_response()
}

/// Unknown routes under `/auth`: `404 V1001`.
async fn not_found() -> AuthError {
    AuthError::bad_request(StatusCode::NOT_FOUND, "Route not found")
}

/// The envelope's `timestamp`: UTC, milliseconds, `Z` (`2022-03-28T04:58:13.306Z`).
fn timestamp(at: OffsetDateTime) -> String {
    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
}

/// The seed's `content`: `{username, id, timeJoined}`, `timeJoined` in milliseconds since the
/// Unix epoch.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserContent {
    username: String,
    id: String,
    time_joined: i64,
}

impl From<&User> for UserContent {
    fn from(u: &User) -> Self {
        let millis = u.created_at.unix_timestamp_nanos().div_euclid(1_000_000);
        Self {
            // Users of this surface always have a username; a user of another surface signed
            // in by username has one too.
            username: u.username.as_ref().map(|n| n.as_str().to_owned()).unwrap_or_default(),
            id: u.id.to_string(),
            time_joined: i64::try_from(millis).unwrap_or(i64::MAX),
        }
    }
}

/// `error` of the envelope.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// The envelope, as serialised.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    status: u16,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a UserContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

/// A success: 200 with `content` (or none, for sign-out) and the cookies to set.
struct Success {
    content: Option<UserContent>,
    cookies: Vec<HeaderValue>,
}

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            status: StatusCode::OK.as_u16(),
            timestamp: timestamp(OffsetDateTime::now_utc()),
            content: self.content.as_ref(),
            error: None,
        };
        let mut response = Json(envelope).into_response();
        for cookie in self.cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        response
    }
}

/// An error in the envelope, with its status, and the cookies to set (cleared ones).
#[derive(Debug)]
struct AuthError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    cookies: Vec<HeaderValue>,
}

impl AuthError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, cookies: Vec::new() }
    }

    /// `V1001`: the request is not understood.
    fn bad_request(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "V1001", message)
    }

    /// `V1009` with the seed's message.
    fn invalid_credentials() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "V1009", INVALID_CREDENTIALS)
    }

    /// `401 V1008` with the seed's message.
    fn invalid_session() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "V1008", INVALID_SESSION)
    }

    /// The same error, clearing the session cookies.
    fn clearing(mut self, cookies: &CookiePolicy) -> Self {
        self.cookies = clear_cookies(cookies).to_vec();
        self
    }
}

impl From<Error> for AuthError {
    /// The one mapping from core outcomes to this surface's errors; every variant is named.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            // The core names the fields it refused; username and password problems are the
            // seed's V1009, anything else is a field the request got wrong.
            Error::InvalidInput(fields) => {
                if fields.iter().all(|f| matches!(f.field, "username" | "password" | "email")) {
                    Self::invalid_credentials()
                } else {
                    let message = fields.into_iter().map(|f| f.message).collect::<Vec<_>>().join("; ");
                    Self::bad_request(S::BAD_REQUEST, message)
                }
            }
            Error::ExternalIdTaken => Self::new(S::BAD_REQUEST, "V1010", "Employee already has an account"),
            Error::UsernameTaken => Self::new(S::BAD_REQUEST, "V1011", "Username already taken"),
            Error::EmailTaken => Self::new(S::BAD_REQUEST, "V1011", "Email address already registered"),
            // Disabled accounts read like wrong passwords, as on every surface.
            // So does a user imported without a password: this seed has no other answer.
            Error::InvalidCredentials | Error::PasswordResetRequired | Error::UserDisabled | Error::UserNotFound => {
                Self::invalid_credentials()
            }
            // Only after the password matched; users of this surface have no email.
            Error::NotVerified => Self::new(S::BAD_REQUEST, "V1009", "Email address not verified"),
            // This surface has no code routes; these cannot arise here.
            Error::AlreadyVerified | Error::NoCodePending | Error::CodeExpired | Error::CodeMismatch { .. } => {
                Self::bad_request(S::BAD_REQUEST, "No code can be checked here")
            }
            Error::TenantNotFound => Self::bad_request(S::BAD_REQUEST, "Unknown tenant"),
            Error::InvalidToken | Error::TokenExpired | Error::SessionRevoked | Error::RefreshTokenReused => {
                Self::invalid_session()
            }
            Error::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::TOO_MANY_REQUESTS, "V1012", "Too many attempts, please try again later")
            },
            // Nothing was attempted: the same "try again later", with the status HTTP has for it.
            Error::Overloaded { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::SERVICE_UNAVAILABLE, "V1012", "The server is busy, please try again later")
            },
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "V1000", "Internal server error")
            }
        }
    }
}

impl From<BodyError> for AuthError {
    /// Every unreadable body is `V1001`: 415 and 413 keep their status, the rest are 400.
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::TooLarge | BodyError::UnsupportedMediaType => e.status(),
            BodyError::Malformed(_) | BodyError::NotAnObject | BodyError::Schema { .. } => StatusCode::BAD_REQUEST,
        };
        Self::bad_request(status, e.message())
    }
}

impl From<Vec<FieldProblem>> for AuthError {
    /// A username or password of the wrong form is the seed's `V1009`; any other field
    /// (`employee_id`) is `V1001`.
    fn from(problems: Vec<FieldProblem>) -> Self {
        if problems.iter().any(|p| p.field == "username" || p.field == "password") {
            return Self::invalid_credentials();
        }
        let message = problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ");
        Self::bad_request(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            status: self.status.as_u16(),
            timestamp: timestamp(OffsetDateTime::now_utc()),
            content: None,
            error: Some(ErrorBody { code: self.code, message: &self.message }),
        };
        let mut response = (self.status, Json(envelope)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        for cookie in self.cookies {
            headers.append(SET_COOKIE, cookie);
        }
        response
    }
}

/// A JSON body read into the DTO `T`; every rejection is an [`AuthError`].
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AuthError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req).await.map(Body).map_err(AuthError::from)
    }
}

/// `employee_id` as clients send it: a string or an integer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EmployeeId {
    /// `"1000000"`.
    Text(String),
    /// `1000000`.
    Number(serde_json::Number),
}

impl EmployeeId {
    /// The core's external id: the string, or the integer's decimal form.
    fn parse(&self) -> Result<ExternalId, ParseError> {
        match self {
            EmployeeId::Text(s) => ExternalId::parse(s),
            EmployeeId::Number(n) if n.is_i64() || n.is_u64() => ExternalId::parse(&n.to_string()),
            EmployeeId::Number(_) => Err(ParseError("must be a string or an integer".into())),
        }
    }
}

/// The problem with a required member that is missing (absent or `null`) or of another JSON
/// type than `kind`, if any: such members are `V1001`, told before any value is looked at.
fn shape_problem<T>(field: &str, value: &Lenient<T>, kind: &str) -> Option<String> {
    match value {
        Lenient::Present(_) => None,
        Lenient::Missing => Some(format!("{field} is required")),
        Lenient::WrongType => Some(format!("{field} must be {kind}")),
    }
}

/// `400 V1001` naming every member [`shape_problem`] found.
fn shape_error(problems: impl IntoIterator<Item = Option<String>>) -> AuthError {
    let problems: Vec<String> = problems.into_iter().flatten().collect();
    AuthError::bad_request(StatusCode::BAD_REQUEST, problems.join("; "))
}

/// `POST /auth/signup` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignupRequest {
    username: Lenient<String>,
    password: Lenient<String>,
    employee_id: Lenient<EmployeeId>,
}

/// `POST /auth/signup`: creates the user (username, password, employee id) and signs in: 200
/// with `content` and the session cookies. `400 V1001` for a missing or mistyped member,
/// `V1009` for a username or password of the wrong form, `V1010` when the employee already has
/// an account, `V1011` when the username is taken (both decided by the database).
async fn signup(
    State(state): State<AuthState>,
    Client(meta): Client,
    Body(req): Body<SignupRequest>,
) -> Result<Success, AuthError> {
    let (Lenient::Present(username), Lenient::Present(password), Lenient::Present(employee_id)) =
        (&req.username, &req.password, &req.employee_id)
    else {
        return Err(shape_error([
            shape_problem("username", &req.username, "a string"),
            shape_problem("password", &req.password, "a string"),
            shape_problem("employee_id", &req.employee_id, "a string or an integer"),
        ]));
    };
    let policy = state.auth.settings().password_policy;
    let mut v = Validator::default();
    let username = v.check("username", Username::parse(username));
    let password = v.check("password", policy.parse(password));
    let external_id = v.check("employee_id", employee_id.parse());
    let (username, password, external_id) = v.finish((username, password, external_id))?;
    let new = NewUser {
        username: Some(username),
        external_id: Some(external_id),
        password: Some(password),
        ..NewUser::default()
    };
    let signed_up = state.auth.sign_up(TENANT, new, &meta).await?;
    let session = state.auth.start_session(&signed_up.user, &meta).await?;
    signed_in(&state, &signed_up.user, &session).await
}

/// `POST /auth/signin` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SigninRequest {
    username: Lenient<String>,
    password: Lenient<String>,
}

/// `POST /auth/signin`: 200 with `content` and the session cookies. `400 V1009` for a wrong
/// password and an unknown username alike (same body; the core spends the same hash work), and
/// for a username of the wrong form or a password longer than any policy allows (refused before
/// hashing); `V1001` for a missing or mistyped member.
async fn signin(
    State(state): State<AuthState>,
    Client(meta): Client,
    Body(req): Body<SigninRequest>,
) -> Result<Success, AuthError> {
    let (Lenient::Present(username), Lenient::Present(password)) = (&req.username, &req.password) else {
        return Err(shape_error([
            shape_problem("username", &req.username, "a string"),
            shape_problem("password", &req.password, "a string"),
        ]));
    };
    let mut v = Validator::default();
    let login = v.check("username", Username::parse(username).map(Login::Username));
    let password = v.check("password", PresentedPassword::parse(password));
    let (login, password) = v.finish((login, password))?;
    let signed_in_user = state.auth.sign_in(TENANT, &login, &password, &meta).await?;
    signed_in(&state, &signed_in_user.user, &signed_in_user.session).await
}

/// The answer to a new session: `content` and the three cookies.
async fn signed_in(state: &AuthState, user: &User, session: &Session) -> Result<Success, AuthError> {
    let pair = state.auth.refresh_pair(session).await?;
    session_success(state, user, session, &pair).await
}

/// `content` for `user`, with a fresh access token and `pair` in the cookies.
async fn session_success(
    state: &AuthState,
    user: &User,
    session: &Session,
    pair: &RefreshPair,
) -> Result<Success, AuthError> {
    let (access, access_ttl) = state.auth.access_token(session, user, AUDIENCE, ExtraClaims::new()).await?;
    let session_left = (session.expires_at - state.auth.now()).unsigned_abs();
    let c = &state.cookies;
    let cookies = vec![
        c.set(ACCESS_COOKIE, &access, "/", std::time::Duration::from_secs(access_ttl)),
        c.set(REFRESH_COOKIE, pair.token().expose(), REFRESH_PATH, session_left),
        c.set(ID_REFRESH_COOKIE, pair.bound(), "/", session_left),
    ];
    Ok(Success { content: Some(UserContent::from(user)), cookies })
}

/// `Set-Cookie` values clearing the three cookies, each on the path it was set with.
fn clear_cookies(cookies: &CookiePolicy) -> [HeaderValue; 3] {
    [
        cookies.clear(ACCESS_COOKIE, "/"),
        cookies.clear(REFRESH_COOKIE, REFRESH_PATH),
        cookies.clear(ID_REFRESH_COOKIE, "/"),
    ]
}

/// `GET /auth/signout`: revokes the session of `sAccessToken` and clears the cookies: 200
/// `{status, timestamp}`, also when no cookie is sent at all. A token that is invalid, foreign,
/// expired or of an ended session is `400 V1008`; the cookies are cleared all the same.
async fn signout(State(state): State<AuthState>, headers: HeaderMap) -> Result<Success, AuthError> {
    if let Some(token) = credential(&headers, ACCESS_COOKIE) {
        let outcome = match state.auth.authenticate(&token, &[AUDIENCE]).await {
            Ok(caller) => state.auth.sign_out(&caller.session).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            let mut error = AuthError::from(e).clearing(&state.cookies);
            // The seed answers a bad token on sign-out with 400, not 401.
            if error.status == StatusCode::UNAUTHORIZED {
                error.status = StatusCode::BAD_REQUEST;
            }
            return Err(error);
        }
    }
    Ok(Success { content: None, cookies: clear_cookies(&state.cookies).to_vec() })
}

/// `POST /auth/session/refresh`: with the cookies `sRefreshToken` and `sIdRefreshToken` (a
/// matching pair), 200 with `content` and rotated cookies. `401 V1008` when either is missing,
/// they do not match, the token is unknown or rotated, or the session ended; a rotated token
/// presented after the grace window revokes the session. A 401 clears the cookies.
async fn refresh(State(state): State<AuthState>, headers: HeaderMap) -> Result<Success, AuthError> {
    let (Some(token), Some(bound)) = (cookie(&headers, REFRESH_COOKIE), cookie(&headers, ID_REFRESH_COOKIE)) else {
        return Err(AuthError::invalid_session().clearing(&state.cookies));
    };
    match state.auth.rotate_refresh_pair(TENANT, &RefreshToken::from_client(&token), &bound).await {
        Ok((user, session, pair)) => session_success(&state, &user, &session, &pair).await,
        Err(e) => {
            let error = AuthError::from(e);
            Err(if error.status == StatusCode::UNAUTHORIZED { error.clearing(&state.cookies) } else { error })
        }
    }
}

/// `GET /auth/user`: 200 with `content` for a valid `sAccessToken` (or `Authorization: Bearer`)
/// of a live session; `401 V1008` otherwise (missing, forged, foreign, expired, revoked).
async fn current_user(State(auth): State<Auth>, headers: HeaderMap) -> Result<Success, AuthError> {
    let token = credential(&headers, ACCESS_COOKIE).ok_or_else(AuthError::invalid_session)?;
    let caller = auth.authenticate(&token, &[AUDIENCE]).await?;
    Ok(Success { content: Some(UserContent::from(&caller.user)), cookies: Vec::new() })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use latchkey_core::FieldError;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    async fn render(response: Response) -> (u16, Value, Option<String>) {
        let status = response.status().as_u16();
        let retry = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"), retry)
    }

    #[tokio::test]
    async fn every_core_error_renders_in_the_envelope() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::InvalidInput(vec![FieldError::new("password", "too long")]), 400, "V1009"),
            (Error::InvalidInput(vec![FieldError::new("employee_id", "bad")]), 400, "V1001"),
            (Error::EmailTaken, 400, "V1011"),
            (Error::UsernameTaken, 400, "V1011"),
            (Error::ExternalIdTaken, 400, "V1010"),
            (Error::InvalidCredentials, 400, "V1009"),
            (Error::PasswordResetRequired, 400, "V1009"),
            (Error::NotVerified, 400, "V1009"),
            (Error::AlreadyVerified, 400, "V1001"),
            (Error::UserNotFound, 400, "V1009"),
            (Error::NoCodePending, 400, "V1001"),
            (Error::CodeExpired, 400, "V1001"),
            (Error::CodeMismatch { attempts_left: 2 }, 400, "V1001"),
            (Error::InvalidToken, 401, "V1008"),
            (Error::TokenExpired, 401, "V1008"),
            (Error::SessionRevoked, 401, "V1008"),
            (Error::RefreshTokenReused, 401, "V1008"),
            (Error::UserDisabled, 400, "V1009"),
            (Error::TenantNotFound, 400, "V1001"),
            (Error::RateLimited { retry_after: Duration::from_millis(1500) }, 429, "V1012"),
            (Error::Overloaded { retry_after: Duration::from_secs(1) }, 503, "V1012"),
            (Error::internal("database on fire"), 500, "V1000"),
        ];
        for (error, status, code) in cases {
            let name = error.code();
            let (got, body, retry) = render(AuthError::from(error).into_response()).await;
            assert_eq!((got, body["status"].as_u64()), (status, Some(u64::from(status))), "{name}: {body}");
            assert_eq!(body["error"]["code"], code, "{name}: {body}");
            assert!(body["error"]["message"].is_string() && body.get("content").is_none(), "{name}: {body}");
            assert!(!body.to_string().contains("fire"), "internal detail never reaches the client");
            assert_eq!(retry.as_deref(), (status == 429 || status == 503).then_some("1"), "{name}");
        }
        let (_, wrong_password, _) = render(AuthError::from(Error::InvalidCredentials).into_response()).await;
        assert_eq!(wrong_password["error"]["message"], INVALID_CREDENTIALS);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = time::macros::datetime!(2022-03-28 13:58:13.306_999 +09:00);
        assert_eq!(timestamp(at), "2022-03-28T04:58:13.306Z");
    }

    #[test]
    fn employee_ids_are_strings_or_integers() {
        let parse = |v: Value| serde_json::from_value::<EmployeeId>(v).expect("input").parse();
        assert_eq!(parse(serde_json::json!("1000000")).expect("string").as_str(), "1000000");
        assert_eq!(parse(serde_json::json!(1_000_000)).expect("integer").as_str(), "1000000");
        assert_eq!(parse(serde_json::json!(-7)).expect("negative").as_str(), "-7");
        assert!(parse(serde_json::json!(1.5)).is_err());
        assert!(parse(serde_json::json!("")).is_err());
        assert!(serde_json::from_value::<EmployeeId>(serde_json::json!(true)).is_err());
    }

    #[tokio::test]
    async fn unreadable_bodies_are_v1001() {
        let app = Router::new().route("/", post(|Body(_): Body<SigninRequest>| async { StatusCode::OK }));
        for (content_type, body, status) in [
            ("application/json", &b"{\"username\":"[..], 400),
            ("application/json", b"[1,2,3]", 400),
            ("application/json", b"null", 400),
            ("application/json", b"{\"username\":\"\xff\"}", 400),
            ("text/plain", b"{}", 415),
            ("application/json", b"{\"username\": 7}", 200),
        ] {
            let request = Request::post("/")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body.to_vec()))
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("response");
            assert_eq!(response.status().as_u16(), status, "{body:?}");
            if status != 200 {
                let (_, json, _) = render(response).await;
                assert_eq!(json["error"]["code"], "V1001", "{body:?}");
            }
        }
    }
}
