//! The `v1` handlers. Each parses its request into core types, calls [`latchkey_core::Auth`]
//! and renders the result; errors go through `Problem::from(core::Error)`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::identity::{Email, Login, ParseError, PresentedPassword, Profile, SessionId, TenantId, Username};
use latchkey_core::token::RefreshToken;
use latchkey_core::{Error, ExtraClaims, NewUser};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    AUDIENCE, Body, Caller, REFRESH_COOKIE, SessionView, UserView, V1State, clear_token_cookies, token_cookies,
};
use crate::http::cookies::cookie;
use crate::http::{Client, CodeInput, Validator};
use crate::problem::{Problem, ProblemDocument};

pub(super) fn router() -> OpenApiRouter<V1State> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(request_verification))
        .routes(routes!(verify_email))
        .routes(routes!(sign_in, sign_out_everywhere, list_sessions))
        .routes(routes!(refresh))
        .routes(routes!(sign_out))
        .routes(routes!(revoke_session))
        .routes(routes!(me))
        .routes(routes!(delete_me))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
        .routes(routes!(change_email))
        .routes(routes!(confirm_email_change))
}

/// The one tenant `v1` serves.
const TENANT: TenantId = TenantId::DEFAULT;

/// A plain acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
struct Message {
    /// What happened.
    pub message: String,
}

fn accepted(message: &str) -> Response {
    (StatusCode::ACCEPTED, Json(Message { message: message.into() })).into_response()
}

/// Parses a request's only validated field.
fn one<T>(field: &str, result: Result<T, ParseError>) -> Result<T, Problem> {
    let mut v = Validator::default();
    let value = v.check(field, result);
    Ok(v.finish(value)?)
}

/// Sign-up request.
#[derive(Debug, Deserialize, ToSchema)]
struct SignUpRequest {
    /// Email address; a verification code is sent to it.
    pub email: String,
    /// Password, 8 to 128 characters (the minimum is `LATCHKEY_PASSWORD_MIN_LENGTH`).
    pub password: String,
    /// Optional username, unique; 1 to 256 characters without spaces.
    pub username: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Phone number.
    pub phone_number: Option<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Profile picture URL.
    pub picture: Option<String>,
}

/// Creates an account and mails a verification code.
///
/// Answers 202 whether or not the address was free: an address that already has an account
/// gets a notice mail instead of a code, so this endpoint never reveals who is registered.
#[utoipa::path(post, path = "/signup", tag = "account", request_body = SignUpRequest,
    responses(
        (status = 202, description = "Accepted; check your mail", body = Message),
        (status = 409, description = "Username taken (`username_taken`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`invalid_input`, `invalid_body`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this address (`rate_limited`)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn sign_up(
    State(state): State<V1State>,
    Client(meta): Client,
    Body(req): Body<SignUpRequest>,
) -> Result<Response, Problem> {
    let policy = state.auth.settings().password_policy;
    let mut v = Validator::default();
    let email = v.check("email", Email::parse(&req.email));
    let password = v.check("password", policy.parse(&req.password));
    let username = v.optional("username", req.username.as_deref(), Username::parse);
    let given_name = v.optional("given_name", req.given_name.as_deref(), Profile::parse_attribute);
    let family_name = v.optional("family_name", req.family_name.as_deref(), Profile::parse_attribute);
    let phone_number = v.optional("phone_number", req.phone_number.as_deref(), Profile::parse_attribute);
    let address = v.optional("address", req.address.as_deref(), Profile::parse_attribute);
    let picture = v.optional("picture", req.picture.as_deref(), Profile::parse_attribute);
    let (email, password, username, given_name, family_name, phone_number, address, picture) =
        v.finish((email, password, username, given_name, family_name, phone_number, address, picture))?;
    let profile = Profile { given_name, family_name, phone_number, address, picture };
    let new = NewUser { email: Some(email), password: Some(password), username, profile, ..NewUser::default() };
    state.auth.sign_up_quietly(TENANT, new, &meta).await?;
    Ok(accepted("Check your mail for a verification code."))
}

/// A request naming an email address.
#[derive(Debug, Deserialize, ToSchema)]
struct EmailRequest {
    /// The address.
    pub email: String,
}

/// Mails a new verification code (the previous one stops working).
///
/// Answers 202 whatever the address: unknown and already verified addresses get nothing.
#[utoipa::path(post, path = "/email/verification/request", tag = "account", request_body = EmailRequest,
    responses(
        (status = 202, body = Message),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many codes for this address", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn request_verification(
    State(state): State<V1State>,
    Body(req): Body<EmailRequest>,
) -> Result<Response, Problem> {
    let email = one("email", Email::parse(&req.email))?;
    state.auth.resend_verification_quietly(TENANT, &email).await?;
    Ok(accepted("If the address needs verifying, a code is on its way."))
}

/// An email address and the code sent to it.
#[derive(Debug, Deserialize, ToSchema)]
struct VerifyEmailRequest {
    /// The address the code was sent to.
    pub email: String,
    /// The six-digit code.
    pub code: CodeInput,
}

/// The one answer of the unauthenticated code routes to a code that is not accepted, whatever
/// the reason (wrong, expired, burnt, none pending, already verified, no such account): the
/// same status, `code` and members, and no `attempts_left`, so these routes do not tell a
/// registered address from an unknown one.
fn conceal_account(e: Error) -> Problem {
    match e {
        Error::UserNotFound
        | Error::AlreadyVerified
        | Error::NoCodePending
        | Error::CodeExpired
        | Error::CodeMismatch { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "The code is incorrect, expired or used up; request a new one.",
        ),
        other => other.into(),
    }
}

/// Verifies an email address with the mailed code.
#[utoipa::path(post, path = "/email/verification", tag = "account", request_body = VerifyEmailRequest,
    responses(
        (status = 200, description = "Verified", body = UserView),
        (status = 400, description = "`invalid_code`: wrong, expired or used up, or nothing pending for that address (one answer for all)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes for the account (a correct one included) or checks from this address (`rate_limited`)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn verify_email(
    State(state): State<V1State>,
    Client(meta): Client,
    Body(req): Body<VerifyEmailRequest>,
) -> Result<Json<UserView>, Problem> {
    let mut v = Validator::default();
    let email = v.check("email", Email::parse(&req.email));
    let code = v.check("code", req.code.parse());
    let (email, code) = v.finish((email, code))?;
    let user = state.auth.verify_email(TENANT, &email, code, &meta).await.map_err(conceal_account)?;
    Ok(Json(UserView::from(&user)))
}

/// Sign-in request: an email or a username, and the password.
#[derive(Debug, Deserialize, ToSchema)]
struct SignInRequest {
    /// Email address (give this or `username`).
    pub email: Option<String>,
    /// Username (give this or `email`).
    pub username: Option<String>,
    /// Password.
    pub password: String,
    /// Cookie mode: set the tokens as `HttpOnly` cookies (`lk_access`, `lk_refresh`) instead of
    /// returning the access and refresh tokens in the body.
    #[serde(default)]
    pub use_cookies: bool,
}

/// Tokens (RFC 6749 section 5.1 names).
#[derive(Debug, Serialize, ToSchema)]
struct TokenResponse {
    /// Access token (JWT, `typ: at+jwt`, `aud: v1`); absent in cookie mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Refresh token (opaque, rotated on every use); absent in cookie mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// ID token (JWT with OpenID Connect claims).
    pub id_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// The session id (the `sid` claim).
    pub session_id: String,
}

/// Renders tokens in the body, or in cookie mode as cookies.
fn token_response(
    state: &V1State,
    session: &latchkey_core::session::Session,
    access: String,
    expires_in: u64,
    id_token: String,
    refresh: &RefreshToken,
    use_cookies: bool,
) -> Response {
    let body = TokenResponse {
        access_token: (!use_cookies).then(|| access.clone()),
        refresh_token: (!use_cookies).then(|| refresh.expose().to_owned()),
        id_token,
        token_type: "Bearer".into(),
        expires_in,
        session_id: session.id.to_string(),
    };
    let mut response = Json(body).into_response();
    if use_cookies {
        let left = (session.expires_at - state.auth.now()).unsigned_abs();
        for c in token_cookies(&state.cookies, &access, expires_in, refresh.expose(), left) {
            response.headers_mut().append(SET_COOKIE, c);
        }
    }
    response
}

/// Signs in: creates a session and returns its access, ID and refresh tokens.
#[utoipa::path(post, path = "/sessions", tag = "sessions", request_body = SignInRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_credentials`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "`email_not_verified` (the password was right), `user_disabled`, `password_reset_required` (the account has no password yet, imported without one: reset it with `/password/forgot` first)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn sign_in(
    State(state): State<V1State>,
    Client(meta): Client,
    Body(req): Body<SignInRequest>,
) -> Result<Response, Problem> {
    let mut v = Validator::default();
    let login = match (&req.email, &req.username) {
        (Some(e), None) => v.check("email", Email::parse(e).map(Login::Email)),
        (None, Some(u)) => v.check("username", Username::parse(u).map(Login::Username)),
        _ => v.check("email", Err(ParseError("or username is required (exactly one of them)".into()))),
    };
    let password = if req.password.is_empty() {
        v.check("password", Err(ParseError("is required".into())))
    } else {
        v.check("password", PresentedPassword::parse(&req.password))
    };
    let (login, password) = v.finish((login, password))?;
    let signed_in = state.auth.sign_in(TENANT, &login, &password, &meta).await?;
    let tokens = state.auth.token_set(&signed_in.session, &signed_in.user, AUDIENCE).await?;
    Ok(token_response(
        &state,
        &signed_in.session,
        tokens.access_token,
        tokens.expires_in,
        tokens.id_token,
        &tokens.refresh_token,
        req.use_cookies,
    ))
}

/// Refresh request; in cookie mode the body may be `{}` and the `lk_refresh` cookie is used.
#[derive(Debug, Deserialize, ToSchema)]
struct RefreshRequest {
    /// The latest refresh token of the session.
    pub refresh_token: Option<String>,
}

/// Exchanges a refresh token for new tokens. The refresh token rotates on every use; presenting
/// an already-rotated token after the grace window revokes the whole session.
#[utoipa::path(post, path = "/token/refresh", tag = "sessions", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_token`, `session_revoked`, `refresh_token_reused`", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<V1State>,
    headers: HeaderMap,
    Body(req): Body<RefreshRequest>,
) -> Result<Response, Problem> {
    let (token, use_cookies) = match req.refresh_token {
        Some(t) => (t, false),
        None => match cookie(&headers, REFRESH_COOKIE).filter(|c| !c.is_empty()) {
            Some(c) => (c, true),
            None => {
                return Err(Problem::new(StatusCode::UNAUTHORIZED, "missing_token", "A refresh token is required."));
            }
        },
    };
    let (user, session, successor) =
        state.auth.rotate_refresh_token(TENANT, &RefreshToken::from_client(&token)).await?;
    let (access, expires_in) = state.auth.access_token(&session, &user, AUDIENCE, ExtraClaims::new()).await?;
    let id_token = state.auth.id_token(&session, &user, AUDIENCE, ExtraClaims::new()).await?;
    Ok(token_response(&state, &session, access, expires_in, id_token, &successor, use_cookies))
}

fn no_content_clearing_cookies(state: &V1State) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    for c in clear_token_cookies(&state.cookies) {
        response.headers_mut().append(SET_COOKIE, c);
    }
    response
}

/// Signs out this session: its tokens stop working at once.
#[utoipa::path(delete, path = "/sessions/current", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out; cookie-mode cookies cleared"),
        (status = 401, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn sign_out(State(state): State<V1State>, Caller(caller): Caller) -> Result<Response, Problem> {
    state.auth.sign_out(&caller.session).await?;
    Ok(no_content_clearing_cookies(&state))
}

/// Signs out everywhere: every session of the user ends, this one included.
#[utoipa::path(delete, path = "/sessions", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 204, description = "All sessions revoked"),
        (status = 401, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn sign_out_everywhere(State(state): State<V1State>, Caller(caller): Caller) -> Result<Response, Problem> {
    state.auth.sign_out_everywhere(caller.session.tenant, caller.user.id, None).await?;
    Ok(no_content_clearing_cookies(&state))
}

/// The user's active sessions.
#[derive(Debug, Serialize, ToSchema)]
struct SessionList {
    /// Newest first.
    pub sessions: Vec<SessionView>,
}

/// Lists the signed-in user's active sessions, newest first.
#[utoipa::path(get, path = "/sessions", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 200, body = SessionList),
        (status = 401, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn list_sessions(State(state): State<V1State>, Caller(caller): Caller) -> Result<Json<SessionList>, Problem> {
    let sessions = state.auth.sessions(caller.session.tenant, caller.user.id).await?;
    Ok(Json(SessionList { sessions: sessions.iter().map(|s| SessionView::new(s, &caller.session)).collect() }))
}

/// Revokes one of the signed-in user's sessions (e.g. a lost phone).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such active session of yours (`not_found`)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn revoke_session(
    State(state): State<V1State>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, "not_found", "No such active session of yours.");
    let id = SessionId::parse(&id).map_err(|_| not_found())?;
    if state.auth.revoke_own_session(caller.session.tenant, caller.user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// The signed-in user.
#[utoipa::path(get, path = "/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `session_revoked`", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn me(Caller(caller): Caller) -> Json<UserView> {
    Json(UserView::from(&caller.user))
}

/// A password confirmation.
#[derive(Debug, Deserialize, ToSchema)]
struct PasswordRequest {
    /// The current password.
    pub password: String,
}

/// Deletes the signed-in user's account, with every session. Needs the password.
#[utoipa::path(post, path = "/me/delete", tag = "me", security(("bearer" = [])), request_body = PasswordRequest,
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Wrong password (`invalid_credentials`) or bad token", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn delete_me(
    State(state): State<V1State>,
    Caller(caller): Caller,
    Body(req): Body<PasswordRequest>,
) -> Result<Response, Problem> {
    let password = one("password", PresentedPassword::parse(&req.password))?;
    state.auth.confirm_password(&caller.user, &password).await?;
    state.auth.delete_user(caller.user.tenant, caller.user.id).await?;
    Ok(no_content_clearing_cookies(&state))
}

/// Mails a password reset code. Answers 202 whatever the address.
#[utoipa::path(post, path = "/password/forgot", tag = "account", request_body = EmailRequest,
    responses(
        (status = 202, body = Message),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn forgot_password(State(state): State<V1State>, Body(req): Body<EmailRequest>) -> Result<Response, Problem> {
    let email = one("email", Email::parse(&req.email))?;
    state.auth.request_password_reset(TENANT, &email).await?;
    Ok(accepted("If the address has an account, a reset code is on its way."))
}

/// A password reset.
#[derive(Debug, Deserialize, ToSchema)]
struct ResetPasswordRequest {
    /// The account's address.
    pub email: String,
    /// The code mailed by `/v1/password/forgot`.
    pub code: CodeInput,
    /// The new password.
    pub new_password: String,
}

/// Sets a new password with a mailed code; every session of the user is signed out.
#[utoipa::path(post, path = "/password/reset", tag = "account", request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password changed; all sessions revoked"),
        (status = 400, description = "`invalid_code`: wrong, expired or used up, or nothing pending for that address (one answer for all)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn reset_password(
    State(state): State<V1State>,
    Client(meta): Client,
    Body(req): Body<ResetPasswordRequest>,
) -> Result<StatusCode, Problem> {
    let policy = state.auth.settings().password_policy;
    let mut v = Validator::default();
    let email = v.check("email", Email::parse(&req.email));
    let code = v.check("code", req.code.parse());
    let password = v.check("new_password", policy.parse(&req.new_password));
    let (email, code, password) = v.finish((email, code, password))?;
    state.auth.reset_password(TENANT, &email, code, &password, &meta).await.map_err(conceal_account)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
struct ChangePasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// Changes the password; every other session of the user is signed out.
#[utoipa::path(post, path = "/password/change", tag = "me", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; other sessions revoked"),
        (status = 401, description = "Wrong current password (`invalid_credentials`) or bad token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn change_password(
    State(state): State<V1State>,
    Caller(caller): Caller,
    Body(req): Body<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    let policy = state.auth.settings().password_policy;
    let mut v = Validator::default();
    let old = v.check("current_password", PresentedPassword::parse(&req.current_password));
    let new = v.check("new_password", policy.parse(&req.new_password));
    let (old, new) = v.finish((old, new))?;
    state.auth.change_password(&caller.user, &caller.session, &old, &new).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An email change.
#[derive(Debug, Deserialize, ToSchema)]
struct ChangeEmailRequest {
    /// The current password (re-authentication).
    pub current_password: String,
    /// The new address; a code is sent to it.
    pub new_email: String,
}

/// Starts an email change: mails a code to the new address. The current address stays in force
/// until the code is confirmed. Needs the current password. Answers 202 whether or not the new
/// address is taken (a taken address fails at confirmation).
#[utoipa::path(post, path = "/email/change", tag = "me", security(("bearer" = [])), request_body = ChangeEmailRequest,
    responses(
        (status = 202, body = Message),
        (status = 401, description = "Wrong current password (`invalid_credentials`) or bad token; no code is sent", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn change_email(
    State(state): State<V1State>,
    Caller(caller): Caller,
    Body(req): Body<ChangeEmailRequest>,
) -> Result<Response, Problem> {
    let mut v = Validator::default();
    let password = v.check("current_password", PresentedPassword::parse(&req.current_password));
    let email = v.check("new_email", Email::parse(&req.new_email));
    let (password, email) = v.finish((password, email))?;
    state.auth.request_email_change(&caller.user, &password, &email).await?;
    Ok(accepted("A code was sent to the new address."))
}

/// The code sent to a new address.
#[derive(Debug, Deserialize, ToSchema)]
struct CodeRequest {
    /// The six-digit code.
    pub code: CodeInput,
}

/// Confirms an email change with the code sent to the new address; the new address replaces
/// the old one, the old address is told, and every other session of the user ends.
#[utoipa::path(post, path = "/email/change/confirm", tag = "me", security(("bearer" = [])), request_body = CodeRequest,
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 400, description = "`code_mismatch`, `code_expired`, `no_code_pending`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken` (the address belongs to another account)", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn confirm_email_change(
    State(state): State<V1State>,
    Caller(caller): Caller,
    Body(req): Body<CodeRequest>,
) -> Result<Json<UserView>, Problem> {
    let code = one("code", req.code.parse())?;
    let user = state.auth.confirm_email_change(&caller.user, &caller.session, code).await?;
    Ok(Json(UserView::from(&user)))
}
