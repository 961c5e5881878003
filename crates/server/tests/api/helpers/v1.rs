//! The `v1` surface (`/v1/*`, API.md `v1`): one helper per route, and the flows tests start
//! from (a verified user, a signed-in session's [`Tokens`]).

use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiResponse, PASSWORD, TestApp, jwt_parts, send};

/// The `User-Agent` of every v1 sign-in, so tests can find it in the session list.
pub const USER_AGENT: &str = "latchkey-tests/1.0";

/// A v1 client session: the tokens of one sign-in.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token (JWT).
    pub access: String,
    /// The refresh token (opaque).
    pub refresh: String,
    /// The ID token (JWT).
    pub id: String,
}

impl Tokens {
    /// The session id: the access token's `sid` claim.
    pub fn sid(&self) -> String {
        jwt_parts(&self.access).1["sid"].as_str().expect("sid").to_owned()
    }
}

/// How a request to a signed-in `v1` route shows who sends it. A token (`&str`, `&String`)
/// converts into [`V1Auth::Bearer`].
#[derive(Debug, Clone, Copy)]
pub enum V1Auth<'a> {
    /// No credential at all.
    Anonymous,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// A `Cookie` header as a browser in cookie mode sends it, e.g. `lk_access=<jwt>`.
    Cookie(&'a str),
}

impl<'a> From<&'a str> for V1Auth<'a> {
    fn from(token: &'a str) -> Self {
        V1Auth::Bearer(token)
    }
}

impl<'a> From<&'a String> for V1Auth<'a> {
    fn from(token: &'a String) -> Self {
        V1Auth::Bearer(token)
    }
}

impl TestApp {
    /// `method path` carrying `auth`, not yet sent.
    fn v1_request<'a>(&self, method: Method, path: &str, auth: impl Into<V1Auth<'a>>) -> RequestBuilder {
        let request = self.request(method, path);
        match auth.into() {
            V1Auth::Anonymous => request,
            V1Auth::Bearer(token) => request.bearer_auth(token),
            V1Auth::Cookie(cookie) => request.header("cookie", cookie),
        }
    }

    /// `POST /v1/signup` with `body` (`{email, password, given_name?, family_name?, ...}`):
    /// 202 whether or not the address is registered.
    pub async fn v1_signup(&self, body: &Value) -> ApiResponse {
        self.send_json(Method::POST, "/v1/signup", body).await
    }

    /// `POST /v1/email/verification/request` `{email}`: 202 whatever the address.
    pub async fn v1_request_verification(&self, email: &str) -> ApiResponse {
        self.send_json(Method::POST, "/v1/email/verification/request", &json!({"email": email})).await
    }

    /// `POST /v1/email/verification` `{email, code}`; `code` is sent as given (a digit string
    /// or a number). 200 with the user.
    pub async fn v1_verify_email(&self, email: &str, code: impl Serialize) -> ApiResponse {
        self.send_json(Method::POST, "/v1/email/verification", &json!({"email": email, "code": code})).await
    }

    /// `POST /v1/sessions` `{email, password}` with [`USER_AGENT`], not yet sent (for a test
    /// that adds a header).
    pub fn v1_sign_in_request(&self, email: &str, password: &str) -> RequestBuilder {
        self.request(Method::POST, "/v1/sessions")
            .header("user-agent", USER_AGENT)
            .json(&json!({"email": email, "password": password}))
    }

    /// `POST /v1/sessions` `{email, password}`: 200 with access, refresh and ID tokens.
    pub async fn v1_sign_in(&self, email: &str, password: &str) -> ApiResponse {
        send(self.v1_sign_in_request(email, password)).await
    }

    /// `POST /v1/sessions` in cookie mode (`use_cookies: true`): the access and refresh tokens
    /// come as `lk_access` / `lk_refresh` cookies instead of in the body.
    pub async fn v1_sign_in_with_cookies(&self, email: &str, password: &str) -> ApiResponse {
        let body = json!({"email": email, "password": password, "use_cookies": true});
        send(self.request(Method::POST, "/v1/sessions").header("user-agent", USER_AGENT).json(&body)).await
    }

    /// `POST /v1/token/refresh` `{refresh_token}`: 200 with rotated tokens.
    pub async fn v1_refresh(&self, refresh_token: &str) -> ApiResponse {
        self.send_json(Method::POST, "/v1/token/refresh", &json!({"refresh_token": refresh_token})).await
    }

    /// `POST /v1/token/refresh` `{}`, the refresh token in the `Cookie` header if any (cookie
    /// mode: `lk_refresh=<token>`).
    pub async fn v1_refresh_with_cookie(&self, cookie: Option<&str>) -> ApiResponse {
        let mut request = self.request(Method::POST, "/v1/token/refresh").json(&json!({}));
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        send(request).await
    }

    /// `DELETE /v1/sessions/current`: signs this session out (204).
    pub async fn v1_sign_out<'a>(&self, auth: impl Into<V1Auth<'a>>) -> ApiResponse {
        send(self.v1_request(Method::DELETE, "/v1/sessions/current", auth)).await
    }

    /// `DELETE /v1/sessions`: signs every session of the user out (204).
    pub async fn v1_sign_out_everywhere<'a>(&self, auth: impl Into<V1Auth<'a>>) -> ApiResponse {
        send(self.v1_request(Method::DELETE, "/v1/sessions", auth)).await
    }

    /// `GET /v1/sessions`: 200 `{sessions: [...]}`, newest first.
    pub async fn v1_sessions<'a>(&self, auth: impl Into<V1Auth<'a>>) -> ApiResponse {
        send(self.v1_request(Method::GET, "/v1/sessions", auth)).await
    }

    /// `DELETE /v1/sessions/{id}`: revokes one of the user's sessions (204).
    pub async fn v1_revoke_session<'a>(&self, auth: impl Into<V1Auth<'a>>, id: &str) -> ApiResponse {
        send(self.v1_request(Method::DELETE, &format!("/v1/sessions/{id}"), auth)).await
    }

    /// `GET /v1/me`: 200 with the signed-in user.
    pub async fn v1_me<'a>(&self, auth: impl Into<V1Auth<'a>>) -> ApiResponse {
        send(self.v1_request(Method::GET, "/v1/me", auth)).await
    }

    /// `POST /v1/me/delete` `{password}`: deletes the account (204).
    pub async fn v1_delete_me<'a>(&self, auth: impl Into<V1Auth<'a>>, password: &str) -> ApiResponse {
        send(self.v1_request(Method::POST, "/v1/me/delete", auth).json(&json!({"password": password}))).await
    }

    /// `POST /v1/password/forgot` `{email}`: 202 whatever the address.
    pub async fn v1_forgot_password(&self, email: &str) -> ApiResponse {
        self.send_json(Method::POST, "/v1/password/forgot", &json!({"email": email})).await
    }

    /// `POST /v1/password/reset` `{email, code, new_password}`: 204; every session ends.
    pub async fn v1_reset_password(&self, email: &str, code: impl Serialize, new_password: &str) -> ApiResponse {
        let body = json!({"email": email, "code": code, "new_password": new_password});
        self.send_json(Method::POST, "/v1/password/reset", &body).await
    }

    /// `POST /v1/password/change` `{current_password, new_password}`: 204; the other sessions
    /// end.
    pub async fn v1_change_password<'a>(
        &self,
        auth: impl Into<V1Auth<'a>>,
        current_password: &str,
        new_password: &str,
    ) -> ApiResponse {
        let body = json!({"current_password": current_password, "new_password": new_password});
        send(self.v1_request(Method::POST, "/v1/password/change", auth).json(&body)).await
    }

    /// `POST /v1/email/change` `{current_password, new_email}`: 202; a code goes to the new
    /// address.
    pub async fn v1_change_email<'a>(
        &self,
        auth: impl Into<V1Auth<'a>>,
        current_password: &str,
        new_email: &str,
    ) -> ApiResponse {
        let body = json!({"current_password": current_password, "new_email": new_email});
        send(self.v1_request(Method::POST, "/v1/email/change", auth).json(&body)).await
    }

    /// `POST /v1/email/change/confirm` `{code}`: 200 with the user under the new address.
    pub async fn v1_confirm_email_change<'a>(&self, auth: impl Into<V1Auth<'a>>, code: impl Serialize) -> ApiResponse {
        send(self.v1_request(Method::POST, "/v1/email/change/confirm", auth).json(&json!({"code": code}))).await
    }

    /// Signs `email` up (password [`PASSWORD`], given name "Val") and verifies it with the
    /// mailed code.
    pub async fn v1_verified_user(&self, email: &str) {
        let response = self.v1_signup(&json!({"email": email, "password": PASSWORD, "given_name": "Val"})).await;
        assert_eq!(response.status, 202, "{}", response.body);
        let code = self.mail.next_mail(email).await.code();
        let response = self.v1_verify_email(email, code).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.body["email_verified"], true);
    }

    /// Signs a verified `email` in with [`PASSWORD`]: a new session.
    pub async fn v1_signed_in(&self, email: &str) -> Tokens {
        self.v1_signed_in_with(email, PASSWORD).await
    }

    /// Signs a verified `email` in with `password`: a new session.
    pub async fn v1_signed_in_with(&self, email: &str, password: &str) -> Tokens {
        let response = self.v1_sign_in(email, password).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let body = response.body;
        Tokens {
            access: body["access_token"].as_str().expect("access_token").into(),
            refresh: body["refresh_token"].as_str().expect("refresh_token").into(),
            id: body["id_token"].as_str().expect("id_token").into(),
        }
    }
}
