//! The `users` surface: `/api/users/*`, seed `001_110a5bde97373731.txt` as pinned down by
//! API.md `users`.
//!
//! Sign-up with an emailed activation code, sign-in, a session JWT in the `session` cookie
//! (also accepted as `Authorization: Bearer`), current user and sign-out, on the default
//! tenant. Every error is `{"errors":[{"message","field"?}],"errorType"}` with the seed's
//! `errorType` constants, spelled exactly as the seed spells them (`NOT_AUTHERIZED`).

use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use latchkey_core::identity::{Email, Login, PresentedPassword, Profile, TenantId, User};
use latchkey_core::session::Session;
use latchkey_core::{Auth, Error, NewUser};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::{Mounted, SurfaceContext};
use crate::http::{
    BodyError, Client, ClientAddressPolicy, CodeInput, CookiePolicy, FieldProblem, Lenient, Methods, OriginGuard,
    Validator, credential, origin, read_json,
};

/// The audience (`aud`) of the session JWTs this surface issues and accepts.
const AUDIENCE: &str = "users";
/// Name of the session cookie.
const COOKIE: &str = "session";
/// The surface's mount prefix.
const PREFIX: &str = "/api/users";

/// What the handlers use.
#[derive(Clone, FromRef)]
struct UsersState {
    auth: Auth,
    cookies: CookiePolicy,
    clients: ClientAddressPolicy,
}

/// The surface's routes under `/api/users`, with the seed's error shape for unknown routes and
/// methods too.
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let state = UsersState { auth: ctx.auth.clone(), cookies: ctx.cookies, clients: ctx.clients };
    // Sign-out changes state on the strength of the `session` cookie: same-origin (or an
    // allowed origin) only.
    let guard = OriginGuard::new(ctx.origins.clone(), &[COOKIE], Methods::All, cross_origin);
    let routes = Router::new()
        .route("/signup", post(signup))
        .route("/signin", post(signin))
        .route("/requestactivation", patch(request_activation))
        .route("/activate", patch(activate))
        .route("/currentuser", get(current_user))
        .route("/signout", post(signout).layer(axum::middleware::from_fn_with_state(guard, origin::check)))
        .fallback(|| async { UsersError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Route not found") })
        .method_not_allowed_fallback(|| async {
            UsersError::new(StatusCode::METHOD_NOT_ALLOWED, "NOT_FOUND", "Method not allowed on this route")
        })
        .with_state(state);
    Ok(Mounted::routes(Router::new().nest(PREFIX, routes)))
}

/// A cookie-authenticated request from another site's page (see [`crate::http::origin`]):
/// `403 NOT_AUTHERIZED`, the seed's constant for a request it does not allow.
fn cross_origin() -> Response {
    UsersError::new(StatusCode::FORBIDDEN, "NOT_AUTHERIZED", "Cross-origin request refused").into_response()
}

/// A JSON body read into the DTO `T`; every rejection is a [`UsersError`].
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = UsersError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req).await.map(Body).map_err(UsersError::from)
    }
}

/// One entry of `errors`.
#[derive(Debug, Serialize)]
struct ErrorEntry {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// The seed's error body with its status.
#[derive(Debug)]
struct UsersError {
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

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Something went wrong")
    }
}

impl From<Error> for UsersError {
    /// The one mapping from core outcomes to this surface's errors; every variant is named.
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
            // A user imported without a password reads like a wrong password too: this seed has
            // no other answer.
            Error::InvalidCredentials | Error::PasswordResetRequired | Error::UserDisabled => {
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
            // The seed has no constant for a busy server; its 429 constant says the same thing
            // (try again later), with the 503 status HTTP has for it.
            Error::Overloaded { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::SERVICE_UNAVAILABLE, "TOO_MANY_REQUESTS", "The server is busy, please try again later")
            },
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::internal()
            }
        }
    }
}

impl From<BodyError> for UsersError {
    /// The seed answers every unreadable body as a validation error (422), except the
    /// transport-level 413 and 415.
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::TooLarge | BodyError::UnsupportedMediaType => e.status(),
            BodyError::Malformed(_) | BodyError::NotAnObject | BodyError::Schema { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
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

/// `POST /api/users/signup` body. Every field is lenient so that each bad one gets its own
/// entry in `errors`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SignupRequest {
    first_name: Lenient<String>,
    last_name: Lenient<String>,
    email: Lenient<String>,
    contact_number: Lenient<String>,
    address: Lenient<String>,
    password: Lenient<String>,
    #[serde(rename = "profileURL")]
    profile_url: Lenient<String>,
}

/// `POST /api/users/signup`: 201 with the user (`activeStatus: false`); the activation code is
/// mailed. A mail failure still answers 201 (the user can ask for a new code).
async fn signup(
    State(auth): State<Auth>,
    Client(meta): Client,
    Body(req): Body<SignupRequest>,
) -> Result<Response, UsersError> {
    let policy = auth.settings().password_policy;
    let mut v = Validator::default();
    let given_name = v.required("firstName", &req.first_name, Profile::parse_attribute);
    let family_name = v.required("lastName", &req.last_name, Profile::parse_attribute);
    let email = v.required("email", &req.email, Email::parse);
    let phone_number = v.required("contactNumber", &req.contact_number, Profile::parse_attribute);
    let address = v.required("address", &req.address, Profile::parse_attribute);
    let password = v.required("password", &req.password, |p| policy.parse(p));
    let picture = v.lenient_optional("profileURL", &req.profile_url, Profile::parse_attribute);
    let (given_name, family_name, email, phone_number, address, password, picture) =
        v.finish((given_name, family_name, email, phone_number, address, password, picture))?;
    let new = NewUser {
        email: Some(email),
        password: Some(password),
        profile: Profile {
            given_name: Some(given_name),
            family_name: Some(family_name),
            phone_number: Some(phone_number),
            address: Some(address),
            picture,
        },
        ..NewUser::default()
    };
    let signed_up = auth.sign_up(TenantId::DEFAULT, new, &meta).await?;
    Ok((StatusCode::CREATED, Json(UserObject::from(&signed_up.user))).into_response())
}

/// `POST /api/users/signin` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SigninRequest {
    email: Lenient<String>,
    password: Lenient<String>,
}

/// The response for a new session: the user object and the `session` cookie.
async fn with_session_cookie(
    auth: &Auth,
    cookies: CookiePolicy,
    user: &User,
    session: &Session,
) -> Result<Response, UsersError> {
    let token = auth.session_token(session, user, AUDIENCE).await?;
    let ttl = (session.expires_at - auth.now()).unsigned_abs();
    let cookie = cookies.set(COOKIE, &token, "/", ttl);
    Ok(([(SET_COOKIE, cookie)], Json(UserObject::from(user))).into_response())
}

/// `POST /api/users/signin`: 200 with the user and the `session` cookie.
async fn signin(
    State(state): State<UsersState>,
    Client(meta): Client,
    Body(req): Body<SigninRequest>,
) -> Result<Response, UsersError> {
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let password = v.required("password", &req.password, PresentedPassword::parse);
    let (email, password) = v.finish((email, password))?;
    let signed_in = state.auth.sign_in(TenantId::DEFAULT, &Login::Email(email), &password, &meta).await?;
    with_session_cookie(&state.auth, state.cookies, &signed_in.user, &signed_in.session).await
}

/// `PATCH /api/users/requestactivation` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmailRequest {
    email: Lenient<String>,
}

/// `PATCH /api/users/requestactivation`: mails a fresh code; the previous one stops working.
async fn request_activation(State(auth): State<Auth>, Body(req): Body<EmailRequest>) -> Result<Response, UsersError> {
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let email = v.finish(email)?;
    auth.resend_verification(TenantId::DEFAULT, &email).await?;
    Ok(Json(serde_json::json!({ "message": "Send OTP Success. Please check your mail box" })).into_response())
}

/// `PATCH /api/users/activate` body; `otpCode` is a JSON number or a string of digits.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ActivateRequest {
    email: Lenient<String>,
    otp_code: Lenient<CodeInput>,
}

/// `PATCH /api/users/activate`: verifies the code, activates the account and signs in.
async fn activate(
    State(state): State<UsersState>,
    Client(meta): Client,
    Body(req): Body<ActivateRequest>,
) -> Result<Response, UsersError> {
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let code = v.code("otpCode", &req.otp_code);
    let (email, code) = v.finish((email, code))?;
    let user = state.auth.verify_email(TenantId::DEFAULT, &email, code, &meta).await?;
    let session = state.auth.start_session(&user, &meta).await?;
    with_session_cookie(&state.auth, state.cookies, &user, &session).await
}

/// `GET /api/users/currentuser`: `{"id","email"}` for a valid session, else `null`.
async fn current_user(State(auth): State<Auth>, headers: HeaderMap) -> Response {
    let Some(token) = credential(&headers, COOKIE) else {
        return Json(Value::Null).into_response();
    };
    match auth.authenticate(&token, &[AUDIENCE]).await {
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
async fn signout(State(state): State<UsersState>, headers: HeaderMap) -> Result<Response, UsersError> {
    if let Some(token) = credential(&headers, COOKIE) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use latchkey_core::FieldError;
    use tower::ServiceExt as _;

    use super::*;

    async fn render(e: UsersError) -> (u16, Value, Option<String>) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let retry = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"), retry)
    }

    #[tokio::test]
    async fn every_core_error_has_the_seed_shape() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::InvalidInput(vec![FieldError::new("email", "email is bad")]), 422, "INPUT_VALIDATION_ERROR"),
            (Error::EmailTaken, 422, "EXISTING_USER"),
            (Error::UsernameTaken, 422, "EXISTING_USER"),
            (Error::ExternalIdTaken, 422, "EXISTING_USER"),
            (Error::InvalidCredentials, 401, "NOT_AUTHERIZED"),
            (Error::PasswordResetRequired, 401, "NOT_AUTHERIZED"),
            (Error::UserDisabled, 401, "NOT_AUTHERIZED"),
            (Error::NotVerified, 401, "NOT_ACTIVATED_ACCOUNT"),
            (Error::AlreadyVerified, 422, "ALREADY_ACTIVATED_ACCOUNT"),
            (Error::UserNotFound, 404, "NOT_FOUND"),
            (Error::TenantNotFound, 404, "NOT_FOUND"),
            (Error::NoCodePending, 404, "NOT_FOUND"),
            (Error::CodeExpired, 404, "NOT_FOUND"),
            (Error::CodeMismatch { attempts_left: 2 }, 422, "NOT_AUTHERIZED"),
            (Error::InvalidToken, 401, "NOT_AUTHERIZED"),
            (Error::TokenExpired, 401, "NOT_AUTHERIZED"),
            (Error::SessionRevoked, 401, "NOT_AUTHERIZED"),
            (Error::RefreshTokenReused, 401, "NOT_AUTHERIZED"),
            (Error::RateLimited { retry_after: Duration::from_millis(1500) }, 429, "TOO_MANY_REQUESTS"),
            (Error::Overloaded { retry_after: Duration::from_secs(1) }, 503, "TOO_MANY_REQUESTS"),
            (Error::internal("database on fire"), 500, "INTERNAL_ERROR"),
        ];
        for (error, status, error_type) in cases {
            let name = error.code();
            let (got, body, retry) = render(error.into()).await;
            assert_eq!((got, body["errorType"].as_str()), (status, Some(error_type)), "{name}: {body}");
            let errors = body["errors"].as_array().expect("errors");
            assert!(!errors.is_empty() && errors.iter().all(|e| e["message"].is_string()), "{name}: {body}");
            assert!(!body.to_string().contains("fire"), "internal detail never reaches the client");
            assert_eq!(retry.is_some(), status == 429 || status == 503, "{name}");
        }
        let (_, body, _) = render(Error::InvalidInput(vec![FieldError::new("email", "x")]).into()).await;
        assert_eq!(body["errors"][0]["field"], "email");
    }

    #[tokio::test]
    async fn unreadable_bodies_are_validation_errors_in_the_seed_shape() {
        let app = Router::new().route("/", post(|Body(_): Body<SigninRequest>| async { StatusCode::OK }));
        for (content_type, body, status) in [
            ("application/json", "{\"email\":", 422),
            ("application/json", "[1,2,3]", 422),
            ("application/json", "null", 422),
            ("text/plain", "{}", 415),
            ("application/json", "{\"email\": 7}", 200),
        ] {
            let request = Request::post("/")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("response");
            assert_eq!(response.status().as_u16(), status, "{body}");
            if status != 200 {
                let bytes = to_bytes(response.into_body(), usize::MAX).await.expect("body");
                let json: Value = serde_json::from_slice(&bytes).expect("json");
                assert_eq!(json["errorType"], "INPUT_VALIDATION_ERROR", "{body}");
            }
        }
    }
}
