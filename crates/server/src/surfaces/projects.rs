//! The `projects` surface: `/projects/api/users/*`, seed `002_156bcb377661a719.txt` as pinned
//! down by API.md `projects`.
//!
//! A project *owner* signs up (a user of the owners' tenant) and receives an API key; the
//! owner's backends send it in the `key` header to create and sign in *accounts* in the
//! owner's own tenant. Beyond the seed, an owner signed in with `/login` manages the tenant's
//! keys (list, create, revoke) with `Authorization: Bearer <token>`.
//!
//! Wire rules: `ID`s are UUID strings, timestamps RFC 3339, `"DeletedAt": null` and
//! `"password": ""` in user objects; account answers carry the seed's `sucess` beside
//! `success`. Every error is `{"success":false,"sucess":false,"error":string}`. The `key` of an
//! account answer is the id of the API key that opened the tenant, never a key's text: an
//! owner's backend may hand these answers to its own clients.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, FromRequest, Path, Request, State};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use latchkey_core::identity::{ApiKeyId, Email, Login, PresentedPassword, TenantId, User, UserId};
use latchkey_core::session::Session;
use latchkey_core::tenant::ApiKeyRecord;
use latchkey_core::{Auth, Error, NewUser};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::context::{Mounted, SurfaceContext};
use crate::http::cookies::bearer;
use crate::http::{BodyError, Client, ClientAddressPolicy, FieldProblem, Lenient, Validator, read_json};

/// The audience (`aud`) of the tokens this surface issues (owners' and accounts' alike; the
/// `tid` claim tells them apart).
const AUDIENCE: &str = "projects";
/// The surface's mount prefix.
const PREFIX: &str = "/projects/api/users";
/// The request header carrying a project's API key (seed 002).
const KEY_HEADER: &str = "key";

/// What the handlers use.
#[derive(Clone, FromRef)]
struct ProjectsState {
    auth: Auth,
    clients: ClientAddressPolicy,
}

/// The surface's routes under `/projects/api/users`, with its error shape for unknown routes
/// and methods too.
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let state = ProjectsState { auth: ctx.auth.clone(), clients: ctx.clients };
    let routes = Router::new()
        .route("/signup", post(owner_signup))
        .route("/login", post(owner_login))
        .route("/{owner}/accounts/signup", post(account_signup))
        .route("/{owner}/accounts/login", post(account_login))
        .route("/{owner}/keys", get(list_keys).post(create_key))
        .route("/{owner}/keys/{key}", delete(revoke_key))
        // The mount point itself (with or without its slash) is no route either, and answers
        // in this surface's shape.
        .route("/", any(not_found))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ProjectsError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .with_state(state);
    let mount_point = Router::new().route(&format!("{PREFIX}/"), any(not_found));
    Ok(Mounted::routes(Router::new().nest(PREFIX, routes).merge(mount_point)))
}

/// Unknown routes under the mount prefix.
async fn not_found() -> ProjectsError {
    ProjectsError::new(StatusCode::NOT_FOUND, "route not found")
}

/// A JSON body read into the DTO `T`; every rejection is a [`ProjectsError`].
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ProjectsError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req).await.map(Body).map_err(ProjectsError::from)
    }
}

/// The surface's error: `{"success":false,"sucess":false,"error":message}` with its status.
#[derive(Debug)]
struct ProjectsError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ProjectsError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid credentials")
    }
}

impl From<Error> for ProjectsError {
    /// The one mapping from core outcomes to this surface's errors; every variant is named.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::InvalidInput(fields) => {
                Self::new(S::UNPROCESSABLE_ENTITY, fields.into_iter().map(|f| f.message).collect::<Vec<_>>().join("; "))
            }
            Error::EmailTaken | Error::UsernameTaken | Error::ExternalIdTaken => {
                Self::new(S::CONFLICT, "email already registered")
            }
            // A user imported without a password reads like a wrong password: this seed has no
            // other answer.
            Error::InvalidCredentials | Error::PasswordResetRequired => {
                Self::new(S::UNAUTHORIZED, "wrong email or password")
            }
            Error::UserDisabled => Self::new(S::UNAUTHORIZED, "account disabled"),
            Error::NotVerified => Self::new(S::UNAUTHORIZED, "email address not verified"),
            Error::InvalidToken | Error::TokenExpired | Error::SessionRevoked | Error::RefreshTokenReused => {
                Self::unauthorized()
            }
            Error::TenantNotFound | Error::UserNotFound => Self::new(S::NOT_FOUND, "no such user"),
            // No route of this surface deals in codes; should one reach here, it is the
            // caller's input that is wrong.
            Error::AlreadyVerified | Error::NoCodePending | Error::CodeExpired | Error::CodeMismatch { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid request")
            }
            Error::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::TOO_MANY_REQUESTS, "too many requests, try again later")
            },
            Error::Overloaded { retry_after } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(S::SERVICE_UNAVAILABLE, "the server is busy, try again later")
            },
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl From<BodyError> for ProjectsError {
    /// 415, 413, 400 (not JSON, not an object) or 422 (an object of the wrong shape).
    fn from(e: BodyError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl From<Vec<FieldProblem>> for ProjectsError {
    fn from(problems: Vec<FieldProblem>) -> Self {
        let message = problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ");
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<PathRejection> for ProjectsError {
    fn from(_: PathRejection) -> Self {
        Self::new(StatusCode::NOT_FOUND, "route not found")
    }
}

impl IntoResponse for ProjectsError {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "sucess": false, "error": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// RFC 3339 text of a time (UTC).
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The `userID` of an account route: an owner's id, or an operator-created tenant's; anything
/// but a UUID names no one (404).
fn path_id(raw: &str) -> Result<Uuid, ProjectsError> {
    Uuid::parse_str(raw).map_err(|_| ProjectsError::new(StatusCode::NOT_FOUND, "no such user"))
}

/// `{email, password}`, the body of every sign-up and sign-in of the seed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Credentials {
    email: Lenient<String>,
    password: Lenient<String>,
}

/// The seed's user object of an owner, with the key shown once at sign-up.
fn owner_object(user: &User, key: &str) -> Value {
    json!({
        "ID": user.id.to_string(),
        "CreatedAt": rfc3339(user.created_at),
        "UpdatedAt": rfc3339(user.updated_at),
        "DeletedAt": null,
        "email": user.email.as_ref().map(Email::to_string),
        "password": "",
        "key": key,
    })
}

/// `POST /projects/api/users/signup`: 201 with the owner and the first API key (shown here
/// only).
async fn owner_signup(
    State(auth): State<Auth>,
    Client(meta): Client,
    Body(req): Body<Credentials>,
) -> Result<Response, ProjectsError> {
    let policy = auth.settings().password_policy;
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let password = v.required("password", &req.password, |p| policy.parse(p));
    let (email, password) = v.finish((email, password))?;
    let signed_up = auth.sign_up_owner(email, password, &meta).await?;
    let body = json!({
        "createdUser": owner_object(&signed_up.owner, signed_up.key.key.expose()),
        "success": true,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Parses `{email, password}` for a sign-in.
fn sign_in_input(req: &Credentials) -> Result<(Email, PresentedPassword), ProjectsError> {
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let password = v.required("password", &req.password, PresentedPassword::parse);
    Ok(v.finish((email, password))?)
}

/// `POST /projects/api/users/login`: 200 with a token (`sub` = the owner's id) for the key
/// routes.
async fn owner_login(
    State(auth): State<Auth>,
    Client(meta): Client,
    Body(req): Body<Credentials>,
) -> Result<Response, ProjectsError> {
    let (email, password) = sign_in_input(&req)?;
    let signed_in = auth.sign_in(TenantId::PROJECT_OWNERS, &Login::Email(email), &password, &meta).await?;
    let token = auth.session_token(&signed_in.session, &signed_in.user, AUDIENCE).await?;
    Ok(Json(json!({ "success": true, "token": token, "userId": signed_in.user.id.to_string() })).into_response())
}

/// The seed's account answer (`createdAccount`, for sign-up and sign-in alike) with a token
/// of the new session.
async fn account_answer(
    auth: &Auth,
    owner: Uuid,
    key: &ApiKeyRecord,
    user: &User,
    session: &Session,
    status: StatusCode,
) -> Result<Response, ProjectsError> {
    let token = auth.session_token(session, user, AUDIENCE).await?;
    let body = json!({
        "createdAccount": {
            "ID": user.id.to_string(),
            "CreatedAt": rfc3339(user.created_at),
            "UpdatedAt": rfc3339(user.updated_at),
            "DeletedAt": null,
            "username": user.email.as_ref().map(Email::to_string),
            "password": "",
            "ownerID": owner.to_string(),
            "key": key.id.to_string(),
            "token": token,
        },
        "sucess": true,
        "success": true,
    });
    Ok((status, Json(body)).into_response())
}

/// The `key` header as text (`None` when absent or not text).
fn key_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(KEY_HEADER).and_then(|v| v.to_str().ok())
}

/// `POST /projects/api/users/{owner}/accounts/signup`: 201 with the new account and a token.
async fn account_signup(
    State(auth): State<Auth>,
    Client(meta): Client,
    owner: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(req): Body<Credentials>,
) -> Result<Response, ProjectsError> {
    let owner = path_id(&owner?.0)?;
    let (tenant, key) = auth.open_project(owner, key_header(&headers), &meta).await?;
    let policy = auth.settings().password_policy;
    let mut v = Validator::default();
    let email = v.required("email", &req.email, Email::parse);
    let password = v.required("password", &req.password, |p| policy.parse(p));
    let (email, password) = v.finish((email, password))?;
    let new = NewUser { email: Some(email), password: Some(password), ..NewUser::default() };
    let user = auth.sign_up(tenant.id, new, &meta).await?.user;
    let session = auth.start_session(&user, &meta).await?;
    account_answer(&auth, owner, &key, &user, &session, StatusCode::CREATED).await
}

/// `POST /projects/api/users/{owner}/accounts/login`: 200 with the account and a fresh token.
async fn account_login(
    State(auth): State<Auth>,
    Client(meta): Client,
    owner: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Body(req): Body<Credentials>,
) -> Result<Response, ProjectsError> {
    let owner = path_id(&owner?.0)?;
    let (tenant, key) = auth.open_project(owner, key_header(&headers), &meta).await?;
    let (email, password) = sign_in_input(&req)?;
    let signed_in = auth.sign_in(tenant.id, &Login::Email(email), &password, &meta).await?;
    account_answer(&auth, owner, &key, &signed_in.user, &signed_in.session, StatusCode::OK).await
}

/// The owner named in the URL, authenticated by the bearer token of their `/login`; returns
/// the tenant of their projects.
async fn owner_tenant(auth: &Auth, owner: &str, headers: &HeaderMap) -> Result<TenantId, ProjectsError> {
    let token = bearer(headers).ok_or_else(ProjectsError::unauthorized)?;
    // A malformed id cannot be the token's subject: refused like any other owner's id.
    let owner = UserId::parse(owner).map_err(|_| ProjectsError::unauthorized())?;
    auth.authenticate_owner(owner, token, &[AUDIENCE]).await?;
    Ok(auth.tenant_of_owner(owner).await?.id)
}

/// An API key as listed: never the key itself.
fn key_object(k: &ApiKeyRecord) -> Value {
    json!({
        "ID": k.id.to_string(),
        "hint": k.hint,
        "CreatedAt": rfc3339(k.created_at),
        "LastUsedAt": k.last_used_at.map(rfc3339),
        "RevokedAt": k.revoked_at.map(rfc3339),
    })
}

/// `GET /projects/api/users/{owner}/keys`: 200 `{"success":true,"keys":[...]}`, revoked keys
/// included, oldest first.
async fn list_keys(
    State(auth): State<Auth>,
    owner: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ProjectsError> {
    let tenant = owner_tenant(&auth, &owner?.0, &headers).await?;
    let keys: Vec<Value> = auth.api_keys(tenant).await?.iter().map(key_object).collect();
    Ok(Json(json!({ "success": true, "keys": keys })).into_response())
}

/// `POST /projects/api/users/{owner}/keys`: 201 with a new key, its text shown here only.
/// The other keys keep working.
async fn create_key(
    State(auth): State<Auth>,
    owner: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ProjectsError> {
    let tenant = owner_tenant(&auth, &owner?.0, &headers).await?;
    let created = auth.create_api_key(tenant).await?;
    let mut key = key_object(&created.record);
    key["key"] = Value::String(created.key.expose().to_owned());
    Ok((StatusCode::CREATED, Json(json!({ "success": true, "key": key }))).into_response())
}

/// `DELETE /projects/api/users/{owner}/keys/{key}`: 200 `{"success":true}`; the key stops
/// working at once on every instance. 404 when the tenant has no such unrevoked key.
async fn revoke_key(
    State(auth): State<Auth>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ProjectsError> {
    let Path((owner, key)) = path?;
    let tenant = owner_tenant(&auth, &owner, &headers).await?;
    let not_found = || ProjectsError::new(StatusCode::NOT_FOUND, "no such key");
    let key = ApiKeyId::parse(&key).map_err(|_| not_found())?;
    if !auth.revoke_api_key(tenant, key).await? {
        return Err(not_found());
    }
    Ok(Json(json!({ "success": true })).into_response())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use latchkey_core::FieldError;

    use super::*;

    #[tokio::test]
    async fn every_core_error_has_the_surface_shape() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::InvalidInput(vec![FieldError::new("email", "email is bad")]), 422),
            (Error::EmailTaken, 409),
            (Error::UsernameTaken, 409),
            (Error::ExternalIdTaken, 409),
            (Error::InvalidCredentials, 401),
            (Error::PasswordResetRequired, 401),
            (Error::UserDisabled, 401),
            (Error::NotVerified, 401),
            (Error::AlreadyVerified, 422),
            (Error::UserNotFound, 404),
            (Error::TenantNotFound, 404),
            (Error::NoCodePending, 422),
            (Error::CodeExpired, 422),
            (Error::CodeMismatch { attempts_left: 1 }, 422),
            (Error::InvalidToken, 401),
            (Error::TokenExpired, 401),
            (Error::SessionRevoked, 401),
            (Error::RefreshTokenReused, 401),
            (Error::RateLimited { retry_after: Duration::from_millis(1500) }, 429),
            (Error::Overloaded { retry_after: Duration::from_secs(1) }, 503),
            (Error::internal("database on fire"), 500),
        ];
        for (error, status) in cases {
            let name = error.code();
            let response = ProjectsError::from(error).into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            let retry = response.headers().contains_key(RETRY_AFTER);
            assert_eq!(retry, status == 429 || status == 503, "{name}");
            let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
            let body: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!((&body["success"], &body["sucess"]), (&json!(false), &json!(false)), "{name}");
            assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
            assert!(!body.to_string().contains("fire"), "internal detail never reaches the client");
        }
    }
}
