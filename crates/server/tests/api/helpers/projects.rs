//! The `projects` surface (`/projects/api/users/*`, API.md `projects`, seed 002): one helper
//! per route, and the flows tests start from (an owner with a key, a signed-in owner).

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use super::{ApiResponse, PASSWORD, TestApp, send};

/// A project owner as the tests hold one: id, first API key and a bearer token of `/login`.
pub struct Owner {
    /// The owner's id (`userID` of the URLs).
    pub id: String,
    /// The key shown at sign-up.
    pub key: String,
    /// A token from `/login`.
    pub token: String,
}

impl TestApp {
    /// `POST /projects/api/users/signup` `{email, password}`, not yet sent.
    pub fn projects_signup_request(&self, email: &str, password: &str) -> RequestBuilder {
        self.request(Method::POST, "/projects/api/users/signup").json(&json!({"email": email, "password": password}))
    }

    /// `POST /projects/api/users/signup`: 201 with `createdUser` and the first key.
    pub async fn projects_signup(&self, email: &str, password: &str) -> ApiResponse {
        send(self.projects_signup_request(email, password)).await
    }

    /// `POST /projects/api/users/login`: 200 with `token` and `userId`.
    pub async fn projects_login(&self, email: &str, password: &str) -> ApiResponse {
        self.send_json(Method::POST, "/projects/api/users/login", &json!({"email": email, "password": password})).await
    }

    /// `POST /projects/api/users/{owner}/accounts/{action}` (`signup` or `login`) with the
    /// `key` header when given, not yet sent.
    pub fn projects_account_request(
        &self,
        owner: &str,
        action: &str,
        key: Option<&str>,
        email: &str,
        password: &str,
    ) -> RequestBuilder {
        let mut request = self
            .request(Method::POST, &format!("/projects/api/users/{owner}/accounts/{action}"))
            .json(&json!({"email": email, "password": password}));
        if let Some(key) = key {
            request = request.header("key", key);
        }
        request
    }

    /// `POST /projects/api/users/{owner}/accounts/signup`: 201 with `createdAccount`.
    pub async fn projects_account_signup(&self, owner: &str, key: Option<&str>, email: &str) -> ApiResponse {
        send(self.projects_account_request(owner, "signup", key, email, PASSWORD)).await
    }

    /// `POST /projects/api/users/{owner}/accounts/login`: 200 with `createdAccount` and a
    /// fresh token.
    pub async fn projects_account_login(
        &self,
        owner: &str,
        key: Option<&str>,
        email: &str,
        password: &str,
    ) -> ApiResponse {
        send(self.projects_account_request(owner, "login", key, email, password)).await
    }

    /// `method /projects/api/users/{owner}/keys{rest}` with `Authorization: Bearer token`
    /// when given.
    pub async fn projects_keys(&self, method: Method, owner: &str, rest: &str, token: Option<&str>) -> ApiResponse {
        let mut request = self.request(method, &format!("/projects/api/users/{owner}/keys{rest}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).await
    }

    /// An owner signed up with `email` and [`PASSWORD`], then signed in.
    pub async fn projects_owner(&self, email: &str) -> Owner {
        let signed_up = self.projects_signup(email, PASSWORD).await.expect_status(201);
        let login = self.projects_login(email, PASSWORD).await.expect_status(200);
        Owner {
            id: signed_up["createdUser"]["ID"].as_str().expect("ID").to_owned(),
            key: signed_up["createdUser"]["key"].as_str().expect("key").to_owned(),
            token: login["token"].as_str().expect("token").to_owned(),
        }
    }

    /// The token of a new account `email` in `owner`'s tenant.
    pub async fn projects_account(&self, owner: &Owner, email: &str) -> Value {
        self.projects_account_signup(&owner.id, Some(&owner.key), email).await.expect_status(201)
    }
}
