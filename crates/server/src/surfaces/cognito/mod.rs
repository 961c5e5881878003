//! The `cognito` surface: `POST /` with `X-Amz-Target`, the AWS Cognito user-pool JSON
//! protocol (API.md `cognito`), so that `amazon-cognito-identity-js` and Amplify Auth work
//! unchanged against Latchkey, seed `000_a7dc8425a1030ba6.txt` (client side).
//!
//! - [`user_pool`]: `AWSCognitoIdentityProviderService.<Op>`: sign-up and confirmation, the
//!   `USER_PASSWORD_AUTH`, `USER_SRP_AUTH` and refresh flows, the access-token operations,
//!   password reset and change.
//! - [`identity_pool`]: `AWSCognitoIdentityService.GetId` and `GetCredentialsForIdentity`, so
//!   that Amplify's `fetchAuthSession` completes (the credentials grant nothing in AWS).
//! - [`wire`]: the error shape and the one mapping from [`latchkey_core::Error`].
//!
//! Settings (keys of this surface): `LATCHKEY_CLIENT_IDS` (comma-separated app client ids,
//! default `local`; any other `ClientId` is `ResourceNotFoundException`) and `LATCHKEY_SRP`
//! (`on` by default; `off` refuses `USER_SRP_AUTH`).

mod identity_pool;
mod user_pool;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::header::ALLOW;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use latchkey_core::identity::{TenantId, User};
use latchkey_core::session::ClientMeta;
use latchkey_core::{Auth, ExtraClaims};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::de;
use crate::context::{Mounted, SurfaceContext};
use crate::http::{Client, ClientAddressPolicy, read_json};
use wire::{CognitoError, Exception, Output};

/// The one tenant this surface serves: Cognito users are default-tenant users.
const TENANT: TenantId = TenantId::DEFAULT;

/// The audience of the `SessionToken` of `GetCredentialsForIdentity`: no surface accepts it
/// as an access token, and no app client may be named so.
const IDENTITY_AUDIENCE: &str = "cognito-identity";

/// `Access-Control-Allow-Headers` of the CORS preflight (API.md `cognito`).
const ALLOWED_HEADERS: &str =
    "content-type, x-amz-target, x-amz-user-agent, cache-control, amz-sdk-invocation-id, amz-sdk-request";

/// The surface's settings, from its configuration keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct CognitoSettings {
    /// `LATCHKEY_CLIENT_IDS`: the app client ids (`ClientId`) accepted, default `local`.
    #[serde(deserialize_with = "de::list")]
    client_ids: Vec<String>,
}

impl Default for CognitoSettings {
    fn default() -> Self {
        Self { client_ids: vec!["local".into()] }
    }
}

/// The configuration keys of this surface (see [`CognitoSettings`]).
pub const KEYS: &[&str] = &["client_ids"];

/// What the handlers use.
#[derive(Clone, FromRef)]
struct CognitoState {
    auth: Auth,
    clients: ClientAddressPolicy,
    settings: Arc<CognitoSettings>,
}

impl CognitoState {
    /// The `ClientId` member, checked against `LATCHKEY_CLIENT_IDS`.
    ///
    /// # Errors
    /// `InvalidParameterException` when absent, `ResourceNotFoundException` when unknown.
    fn client_id(&self, client_id: Option<String>) -> Result<String, CognitoError> {
        let id = client_id.ok_or_else(|| CognitoError::missing("clientId"))?;
        if self.settings.client_ids.contains(&id) {
            Ok(id)
        } else {
            let shown: String = id.chars().take(128).collect();
            Err(CognitoError::new(Exception::ResourceNotFound, format!("User pool client {shown} does not exist.")))
        }
    }

    /// The accepted client ids, as the audiences tokens of this surface must name.
    fn audiences(&self) -> Vec<&str> {
        self.settings.client_ids.iter().map(String::as_str).collect()
    }
}

/// Mounts `POST /` (and its CORS preflight) dispatching on `X-Amz-Target`.
///
/// # Errors
/// When `LATCHKEY_CLIENT_IDS` or `LATCHKEY_SRP` is invalid, or the list is empty or names an
/// audience of other tokens ([`check_client_ids`]).
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let settings: CognitoSettings = ctx.settings.extract()?;
    check_client_ids(&settings.client_ids)
        .map_err(|e| anyhow::anyhow!("invalid configuration: LATCHKEY_CLIENT_IDS: {e}"))?;
    let state = CognitoState { auth: ctx.auth.clone(), clients: ctx.clients, settings: Arc::new(settings) };
    Ok(Mounted::routes(Router::new().route("/", any(endpoint)).with_state(state)))
}

/// Checks `LATCHKEY_CLIENT_IDS`: at least one id, none of them an audience other tokens carry
/// (a surface's name, which the surfaces use as the audience of their tokens, or the identity
/// audience), so that no other token passes for one of this surface's and the reverse.
///
/// # Errors
/// What is wrong, for the start-up message.
fn check_client_ids(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Err("must name at least one app client id".into());
    }
    let reserved = super::ALL.iter().map(|s| s.name).chain([IDENTITY_AUDIENCE]);
    for name in reserved {
        if ids.iter().any(|id| id == name) {
            return Err(format!("{name:?} is reserved (it is the audience of other tokens)"));
        }
    }
    Ok(())
}

/// `/`: `POST` dispatches on `X-Amz-Target`, `OPTIONS` is the CORS preflight; other methods
/// are refused in Cognito's shape.
async fn endpoint(State(state): State<CognitoState>, Client(meta): Client, request: Request) -> Response {
    match *request.method() {
        Method::POST => match dispatch(&state, &meta, request).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        },
        Method::OPTIONS => preflight(),
        _ => {
            let mut response =
                CognitoError::new(Exception::UnknownOperation, "Only POST is supported here.").into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            response
        }
    }
}

/// The CORS preflight answer: any origin, `POST`, the headers the AWS clients send.
fn preflight() -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    wire::common_headers(headers);
    headers.insert("access-control-allow-methods", HeaderValue::from_static("POST, OPTIONS"));
    headers.insert("access-control-allow-headers", HeaderValue::from_static(ALLOWED_HEADERS));
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    response
}

/// Routes a request by `X-Amz-Target: <service>.<operation>`.
///
/// # Errors
/// `UnknownOperationException` when the header is missing or names no operation here; the
/// operation's errors otherwise.
async fn dispatch(state: &CognitoState, meta: &ClientMeta, request: Request) -> Result<Output, CognitoError> {
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let unknown =
        || CognitoError::new(Exception::UnknownOperation, "The operation named by X-Amz-Target is not supported.");
    let (service, operation) = target.split_once('.').ok_or_else(unknown)?;
    match service {
        "AWSCognitoIdentityProviderService" => user_pool::call(state, meta, operation, request).await,
        "AWSCognitoIdentityService" => identity_pool::call(state, operation, request).await,
        _ => Err(unknown()),
    }
}

/// Reads the request body into the operation's input `T`.
///
/// # Errors
/// As [`CognitoError::from`] a [`crate::http::BodyError`].
async fn read<T: DeserializeOwned>(request: Request) -> Result<T, CognitoError> {
    read_json(request).await.map_err(CognitoError::from)
}

/// The username Cognito clients see for `user`: the email (API.md `cognito`: "The `Username`
/// is the user's email"), else the username, else the id.
fn cognito_username(user: &User) -> String {
    match (&user.email, &user.username) {
        (Some(email), _) => email.to_string(),
        (None, Some(name)) => name.as_str().to_owned(),
        (None, None) => user.id.to_string(),
    }
}

/// Builds an [`ExtraClaims`] map from `(name, value)` pairs.
fn claims<const N: usize>(pairs: [(&str, Value); N]) -> ExtraClaims {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SurfaceSettings;

    #[test]
    fn settings_default_to_client_local() {
        let mut raw = SurfaceSettings::default();
        let s: CognitoSettings = raw.extract().expect("defaults");
        assert_eq!(s.client_ids, vec!["local".to_owned()]);
        raw.insert("client_ids", "web, mobile");
        let s: CognitoSettings = raw.extract().expect("valid");
        assert_eq!(s.client_ids, vec!["web".to_owned(), "mobile".to_owned()]);
    }

    #[test]
    fn client_ids_must_not_be_other_tokens_audiences() {
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_client_ids(&ids(&["local", "web"])).is_ok());
        assert!(check_client_ids(&ids(&[])).is_err());
        for reserved in ["v1", "users", "auth", "graphql", "cognito", IDENTITY_AUDIENCE] {
            let e = check_client_ids(&ids(&["web", reserved])).expect_err(reserved);
            assert!(e.contains(reserved), "{e}");
        }
    }

    #[test]
    fn usernames_are_emails_first() {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let mut user = User {
            id: latchkey_core::identity::UserId::random(),
            tenant: TENANT,
            email: latchkey_core::identity::Email::parse("Ada@Example.com").ok(),
            email_verified: true,
            username: latchkey_core::identity::Username::parse("ada").ok(),
            external_id: None,
            profile: latchkey_core::identity::Profile::default(),
            has_password: true,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(cognito_username(&user), "Ada@Example.com");
        user.email = None;
        assert_eq!(cognito_username(&user), "ada");
        user.username = None;
        assert_eq!(cognito_username(&user), user.id.to_string());
    }
}
