//! The always-on endpoints: health, metrics, keys, discovery, the API document.

use reqwest::Method;

use super::{ApiResponse, TestApp};

impl TestApp {
    /// `GET /healthz`: 200 `{"status":"ok"}`.
    pub async fn healthz(&self) -> ApiResponse {
        self.get("/healthz").await
    }

    /// `GET /readyz`: 200 `{"status":"ready"}` while the database answers.
    pub async fn readyz(&self) -> ApiResponse {
        self.get("/readyz").await
    }

    /// `GET /metrics`: Prometheus text (in [`ApiResponse::text`]).
    pub async fn metrics(&self) -> ApiResponse {
        ApiResponse::text(self.request(Method::GET, "/metrics").send().await.expect("request")).await
    }

    /// `GET /.well-known/jwks.json`: the verification keys, current first.
    pub async fn jwks(&self) -> ApiResponse {
        self.get("/.well-known/jwks.json").await
    }

    /// `GET /.well-known/openid-configuration`.
    pub async fn openid_configuration(&self) -> ApiResponse {
        self.get("/.well-known/openid-configuration").await
    }

    /// `GET /openapi.json`: the `v1` OpenAPI document.
    pub async fn openapi(&self) -> ApiResponse {
        self.get("/openapi.json").await
    }

    /// `GET /docs`: the HTML viewer of the OpenAPI document (in [`ApiResponse::text`]).
    pub async fn docs(&self) -> ApiResponse {
        ApiResponse::text(self.request(Method::GET, "/docs").send().await.expect("request")).await
    }
}
