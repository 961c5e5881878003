//! What the server answered ([`ApiResponse`]), and the low-level senders the endpoint helpers
//! are built on. Tests use the senders directly only for requests no endpoint helper can
//! express: malformed bodies, wrong content types, unknown routes.

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::TestApp;

/// A response, read whole.
#[derive(Debug)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON: `null` when the body is empty (and for non-JSON endpoints, see
    /// [`ApiResponse::text`]).
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl ApiResponse {
    /// Reads a response whose body is JSON or empty; panics when it is anything else.
    pub async fn json(response: reqwest::Response) -> Self {
        let mut read = Self::text(response).await;
        if !read.text.is_empty() {
            read.body = serde_json::from_str(&read.text)
                .unwrap_or_else(|_| panic!("not JSON ({}): {:?}", read.status, read.text));
        }
        read
    }

    /// Reads a response whose body is not JSON (an HTML page, Prometheus text): `body` is `null`.
    pub async fn text(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Self { status, headers, body: Value::Null, text }
    }

    /// Asserts the status (showing the body when it differs) and returns the body.
    pub fn expect_status(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.body
    }

    /// Header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` header for cookie `name`, with its attributes, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of cookie `name` set by this response (without attributes).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .and_then(|c| c.split(';').next().and_then(|kv| kv.split_once('=')).map(|(_, v)| v.to_owned()))
    }
}

/// Sends a request built by hand (from an endpoint's `*_request` builder, say) and reads its
/// JSON answer.
pub async fn send(request: RequestBuilder) -> ApiResponse {
    ApiResponse::json(request.send().await.expect("request")).await
}

impl TestApp {
    /// `method path` on this server, not yet sent.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `GET path`, for paths that are not an endpoint of the surface (unknown routes, a route
    /// asked with the wrong method).
    pub async fn get(&self, path: &str) -> ApiResponse {
        send(self.request(Method::GET, path)).await
    }

    /// Sends any JSON `body` to `method path`: for bodies that the endpoint helpers cannot
    /// express (a missing field, a field of the wrong type).
    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> ApiResponse {
        send(self.request(method, path).json(body)).await
    }

    /// Sends `body` as raw bytes labelled `content_type`: for malformed JSON, wrong content
    /// types and oversized bodies. Each request gets a fresh connection: the server answers an
    /// oversized body before reading all of it and closes that connection, which a pooled
    /// client could try to reuse.
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> ApiResponse {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        send(client.request(method, self.url(path)).header("content-type", content_type).body(body)).await
    }
}
