//! The `users` surface: `/api/users/*`, seed `001_110a5bde97373731.txt` as pinned down by
//! API.md `users`.
//!
//! Sign-up with an emailed activation code, sign-in, a session JWT in the `session` cookie
//! (also accepted as `Authorization: Bearer`), current user and sign-out, on the default
//! tenant. Every error is `{"errors":[{"message","field"?}],"errorType"}` with the seed's
//! `errorType` constants, spelled exactly as the seed spells them (`NOT_AUTHERIZED`).

use axum::extract::State;
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::{Email, Login, ParseError, Password, Profile, TenantId, User};
use latchkey_core::{Delivery, Error, NewUser};
use serde::Serialize;
use serde_json::Value;

use crate::app::AppState;
use crate::http::{BodyError, Client, FieldProblem, Fields, JsonObject, bearer, cookie};

/// The audience (`aud`) of the session JWTs this surface issues and accepts.
pub const AUDIENCE: &str = "users";
/// Name of the session cookie.
pub const COOKIE: &str = "session";

/// Routes, to be nested under `/api/users`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(signup))
        .route("/signin", post(signin))
        .route("/requestactivation", patch(request_activation))
        .route("/activate", patch(activate))
        .route("/currentuser", get(current_user))
        .route("/signout", post(signout))
        .fallback(|| async { UsersError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Route not found") })
        .method_not_allowed_fallback(|| async {
            UsersError::new(StatusCode::METHOD_NOT_ALLOWED, "NOT_FOUND", "Method not allowed on this route")
        })
}

type Body = JsonObject<UsersError>;

/// One entry of `errors`.
#[derive(Debug, Serialize)]
struct ErrorEntry {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// The seed's error body with its status.
#[derive(Debug)]
pub struct UsersError {
    status: StatusCode,
    error_type: &'static str,
    errors: Vec<ErrorEntry>,
    retry_after: Option<u64>,
}

impl UsersError {
    fn new(status: StatusCode, error_type: &'static str, message: &str) -> Self {
        Self {
            status,
            error_type,
            errors: vec![ErrorEntry { message: message.into(), field: None }],
            retry_after: None,
        }
    }
}

impl From<Error> for UsersError {
    /// The one mapping from core outcomes to this surface's errors.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::InvalidInput(fields) => Self {
                status: S::UNPROCESSABLE_ENTITY,
                error_type: "INPUT_VALIDATION_ERROR",
                errors: fields
                    .into_iter()
                    .map(|f| ErrorEntry { message: f.message, field: Some(f.field.to_owned()) })
                    .collect(),
                retry_after: None,
            },
            Error::EmailTaken | Error::UsernameTaken | Error::ExternalIdTaken => Self::new(
                S::UNPROCESSABLE_ENTITY,
                "EXISTING_USER",
                "Signup Fail, User Already Exist, Please use another email",
            ),
            Error::InvalidCredentials | Error::UserDisabled => {
                Self::new(S::UNAUTHORIZED, "NOT_AUTHERIZED", "Login fail: wrong email or password")
            }
            Error::NotVerified => Self::new(S::UNAUTHORIZED, "NOT_ACTIVATED_ACCOUNT", "Account is not activated"),
            Error::AlreadyVerified => {
                Self::new(S::UNPROCESSABLE_ENTITY, "ALREADY_ACTIVATED_ACCOUNT", "Account is already activated")
            }
            Error::UserNotFound | Error::TenantNotFound => {
                Self::new(S::NOT_FOUND, "NOT_FOUND", "User Account not found")
            }
            Error::NoCodePending | Error::CodeExpired => {
                Self::new(S::NOT_FOUND, "NOT_FOUND", "OTP not found: request a new activation code")
            }
            Error::CodeMismatch { .. } => Self::new(S::UNPROCESSABLE_ENTITY, "NOT_AUTHERIZED", "Wrong OTP code"),
            Error::InvalidToken | Error::TokenExpired | Error::SessionRevoked | Error::RefreshTokenReused => {
                Self::new(S::UNAUTHORIZED, "NOT_AUTHERIZED", "Not authorized")
            }
            Error::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", "Too many requests, please try again later")
            },
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Something went wrong")
            }
            other => {
                tracing::error!(error = %other, "unmapped core error");
                Self::new(S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Something went wrong")
            }
        }
    }
}

impl From<BodyError> for UsersError {
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::TooLarge | BodyError::UnsupportedMediaType => e.status(),
            BodyError::Malformed(_) | BodyError::NotAnObject => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, "INPUT_VALIDATION_ERROR", &e.message())
    }
}

impl From<Vec<FieldProblem>> for UsersError {
    fn from(problems: Vec<FieldProblem>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_type: "INPUT_VALIDATION_ERROR",
            errors: problems.into_iter().map(|p| ErrorEntry { message: p.message, field: Some(p.field) }).collect(),
            retry_after: None,
        }
    }
}

impl IntoResponse for UsersError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": self.errors, "errorType": self.error_type });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The seed's user object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserObject {
    user_id: String,
    first_name: String,
    last_name: String,
    email: String,
    contact_number: String,
    address: String,
    #[serde(rename = "profileURL", skip_serializing_if = "Option::is_none")]
    profile_url: Option<String>,
    active_status: bool,
}

impl From<&User> for UserObject {
    fn from(u: &User) -> Self {
        let p = &u.profile;
        Self {
            user_id: u.id.to_string(),
            first_name: p.given_name.clone().unwrap_or_default(),
            last_name: p.family_name.clone().unwrap_or_default(),
            email: u.email.as_ref().map(Email::to_string).unwrap_or_default(),
            contact_number: p.phone_number.clone().unwrap_or_default(),
            address: p.address.clone().unwrap_or_default(),
            profile_url: p.picture.clone(),
            active_status: u.email_verified,
        }
    }
}

fn attribute(fields: &mut Fields<'_>, name: &str) -> Option<String> {
    let raw = fields.string(name);
    fields.parse(name, raw, Profile::parse_attribute)
}

/// `POST /api/users/signup`: 201 with the user (`activeStatus: false`); the activation code is
/// mailed. A mail failure still answers 201 (the user can ask for a new code).
async fn signup(
    State(state): State<AppState>,
    Client(meta): Client,
    Body { value, .. }: Body,
) -> Result<Response, UsersError> {
    let policy = state.auth.settings().password_policy;
    let mut f = Fields::new(&value);
    let given_name = attribute(&mut f, "firstName");
    let family_name = attribute(&mut f, "lastName");
    let raw_email = f.string("email");
    let email = f.parse("email", raw_email, Email::parse);
    let phone_number = attribute(&mut f, "contactNumber");
    let address = attribute(&mut f, "address");
    let raw_password = f.string("password");
    let password = f.parse("password", raw_password, |p| policy.parse(p));
    let raw_picture = f.optional_string("profileURL");
    let picture = f.parse("profileURL", raw_picture, Profile::parse_attribute);
    f.finish()?;
    let new = NewUser {
        email,
        password,
        profile: Profile { given_name, family_name, phone_number, address, picture },
        ..NewUser::default()
    };
    let signed_up = state.auth.sign_up(TenantId::DEFAULT, new, &meta).await?;
    Ok((StatusCode::CREATED, Json(UserObject::from(&signed_up.user))).into_response())
}

/// Reads `{email, password}`.
fn credentials(value: &serde_json::Map<String, Value>) -> Result<(Email, Password), UsersError> {
    let mut f = Fields::new(value);
    let raw_email = f.string("email");
    let email = f.parse("email", raw_email, Email::parse);
    let password = f.string("password").map(Password::candidate);
    f.finish()?;
    match (email, password) {
        (Some(e), Some(p)) => Ok((e, p)),
        _ => Err(UsersError::new(StatusCode::UNPROCESSABLE_ENTITY, "INPUT_VALIDATION_ERROR", "invalid input")),
    }
}

/// The response for a new session: the user object and the `session` cookie.
async fn with_session_cookie(
    state: &AppState,
    user: &User,
    session: &latchkey_core::session::Session,
) -> Result<Response, UsersError> {
    let token = state.auth.session_token(session, user, AUDIENCE).await?;
    let ttl = (session.expires_at - state.auth.now()).unsigned_abs();
    let cookie = state.cookies.set(COOKIE, &token, "/", ttl);
    Ok(([(SET_COOKIE, cookie)], Json(UserObject::from(user))).into_response())
}

/// `POST /api/users/signin`: 200 with the user and the `session` cookie.
async fn signin(
    State(state): State<AppState>,
    Client(meta): Client,
    Body { value, .. }: Body,
) -> Result<Response, UsersError> {
    let (email, password) = credentials(&value)?;
    let signed_in = state.auth.sign_in(TenantId::DEFAULT, &Login::Email(email), &password, &meta).await?;
    with_session_cookie(&state, &signed_in.user, &signed_in.session).await
}

fn email_only(value: &serde_json::Map<String, Value>) -> Result<Email, UsersError> {
    let mut f = Fields::new(value);
    let raw = f.string("email");
    let email = f.parse("email", raw, Email::parse);
    f.finish()?;
    email
        .ok_or_else(|| UsersError::new(StatusCode::UNPROCESSABLE_ENTITY, "INPUT_VALIDATION_ERROR", "email is required"))
}

/// `PATCH /api/users/requestactivation`: mails a fresh code; the previous one stops working.
async fn request_activation(State(state): State<AppState>, Body { value, .. }: Body) -> Result<Response, UsersError> {
    let email = email_only(&value)?;
    let (_, delivery) = state.auth.resend_verification(TenantId::DEFAULT, &email).await?;
    if delivery == Delivery::Failed {
        return Err(UsersError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "The code could not be sent; please try again later",
        ));
    }
    Ok(Json(serde_json::json!({ "message": "Send OTP Success. Please check your mail box" })).into_response())
}

/// `otpCode` as a JSON number or a string of digits.
fn otp_code(f: &mut Fields<'_>) -> Option<OneTimeCode> {
    let parsed = match f.raw("otpCode") {
        None => Err(ParseError("is required".into())),
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| ParseError("must be a 6-digit code".into())).and_then(OneTimeCode::from_number)
        }
        Some(Value::String(s)) => OneTimeCode::parse(s),
        Some(_) => Err(ParseError("must be a number".into())),
    };
    parsed.map_err(|e| f.problem("otpCode", format!("otpCode {e}"))).ok()
}

/// `PATCH /api/users/activate`: verifies the code, activates the account and signs in.
async fn activate(
    State(state): State<AppState>,
    Client(meta): Client,
    Body { value, .. }: Body,
) -> Result<Response, UsersError> {
    let mut f = Fields::new(&value);
    let raw_email = f.string("email");
    let email = f.parse("email", raw_email, Email::parse);
    let code = otp_code(&mut f);
    f.finish()?;
    let (Some(email), Some(code)) = (email, code) else {
        return Err(UsersError::new(StatusCode::UNPROCESSABLE_ENTITY, "INPUT_VALIDATION_ERROR", "invalid input"));
    };
    let user = state.auth.verify_email(TenantId::DEFAULT, &email, code).await?;
    let session = state.auth.start_session(&user, &meta).await?;
    with_session_cookie(&state, &user, &session).await
}

/// The session credential: the `session` cookie, else a bearer token.
fn credential(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE).filter(|c| !c.is_empty()).or_else(|| bearer(headers).map(str::to_owned))
}

/// `GET /api/users/currentuser`: `{"id","email"}` for a valid session, else `null`.
async fn current_user(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = credential(&headers) else {
        return Json(Value::Null).into_response();
    };
    match state.auth.authenticate(&token, &[AUDIENCE]).await {
        Ok(a) => Json(serde_json::json!({
            "id": a.user.id.to_string(),
            "email": a.user.email.as_ref().map(Email::to_string),
        }))
        .into_response(),
        Err(Error::Internal(source)) => UsersError::from(Error::Internal(source)).into_response(),
        Err(_) => Json(Value::Null).into_response(),
    }
}

/// `POST /api/users/signout`: revokes the session (if any) and clears the cookie; always 200
/// `{}`.
async fn signout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, UsersError> {
    if let Some(token) = credential(&headers) {
        match state.auth.authenticate(&token, &[AUDIENCE]).await {
            Ok(a) => {
                state.auth.sign_out(&a.session).await?;
            }
            Err(Error::Internal(source)) => return Err(Error::Internal(source).into()),
            Err(_) => {}
        }
    }
    let clear = state.cookies.clear(COOKIE, "/");
    Ok(([(SET_COOKIE, clear)], Json(serde_json::json!({}))).into_response())
}
