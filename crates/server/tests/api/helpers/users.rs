//! The `users` surface (`/api/users/*`, API.md `users`, seed 001): one helper per route, and
//! the flows tests start from (a signed-up user, an activated one, a signed-in session).
//!
//! A session is the cookie as a browser sends it back: `session=<jwt>`.

use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiResponse, PASSWORD, TestApp, send};

/// A complete, valid sign-up body for `email` (Ada Lovelace's profile, [`PASSWORD`]).
pub fn users_signup_body(email: &str) -> Value {
    json!({
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": email,
        "contactNumber": "+44 20 7946 0000",
        "address": "12 St James's Square, London",
        "password": PASSWORD,
        "profileURL": "https://example.com/ada.png"
    })
}

/// The `Cookie` header that sends back the session a response set.
fn session_cookie(response: &ApiResponse) -> String {
    format!("session={}", response.cookie("session").expect("session cookie"))
}

impl TestApp {
    /// `POST /api/users/signup` with `body`, not yet sent (for a test that sends it from
    /// another task).
    pub fn signup_request(&self, body: &Value) -> RequestBuilder {
        self.request(Method::POST, "/api/users/signup").json(body)
    }

    /// `POST /api/users/signup`: 201 with the user object; a code is mailed.
    pub async fn signup(&self, body: &Value) -> ApiResponse {
        send(self.signup_request(body)).await
    }

    /// `POST /api/users/signin` `{email, password}`: 200 with the user object and the
    /// `session` cookie.
    pub async fn signin(&self, email: &str, password: &str) -> ApiResponse {
        self.send_json(Method::POST, "/api/users/signin", &json!({"email": email, "password": password})).await
    }

    /// `PATCH /api/users/requestactivation` `{email}`: a fresh code is mailed.
    pub async fn request_activation(&self, email: &str) -> ApiResponse {
        self.send_json(Method::PATCH, "/api/users/requestactivation", &json!({"email": email})).await
    }

    /// `PATCH /api/users/activate` `{email, otpCode}`; `otp_code` is sent as given (a number, a
    /// digit string, or anything else a test wants to try). 200 signs in: `session` cookie.
    pub async fn activate(&self, email: &str, otp_code: impl Serialize) -> ApiResponse {
        self.send_json(Method::PATCH, "/api/users/activate", &json!({"email": email, "otpCode": otp_code})).await
    }

    /// `GET /api/users/currentuser` with the `session` cookie (`"session=<jwt>"`) and/or a
    /// bearer token: always 200, `{id, email}` or `null`.
    pub async fn current_user(&self, cookie: Option<&str>, bearer: Option<&str>) -> ApiResponse {
        let mut request = self.request(Method::GET, "/api/users/currentuser");
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        send(request).await
    }

    /// `POST /api/users/signout` `{}`, with the `session` cookie if any: 200 `{}`.
    pub async fn signout(&self, cookie: Option<&str>) -> ApiResponse {
        let mut request = self.request(Method::POST, "/api/users/signout").json(&json!({}));
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        send(request).await
    }

    /// Signs `email` up (with [`users_signup_body`]) and returns the code mailed to it.
    pub async fn users_signed_up(&self, email: &str) -> String {
        let response = self.signup(&users_signup_body(email)).await;
        assert_eq!(response.status, 201, "{}", response.body);
        self.mail.next_mail(email).await.code()
    }

    /// Signs `email` up, activates it with the mailed code (sent as a number), and returns the
    /// session cookie the activation set (`session=<jwt>`).
    pub async fn users_activated(&self, email: &str) -> String {
        let code = self.users_signed_up(email).await;
        let response = self.activate(email, code.parse::<u64>().expect("digits")).await;
        assert_eq!(response.status, 200);
        session_cookie(&response)
    }

    /// Signs an activated `email` in with [`PASSWORD`] and returns the session cookie
    /// (`session=<jwt>`).
    pub async fn users_signed_in(&self, email: &str) -> String {
        let response = self.signin(email, PASSWORD).await;
        assert_eq!(response.status, 200);
        session_cookie(&response)
    }
}
