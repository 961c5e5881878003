//! The always-on endpoints (health, metrics, keys, discovery, the API document) and the
//! `latchkey` command line run against a test server's database.

use std::process::{Command, Output};

use reqwest::Method;

use super::{ApiResponse, TEST_SECRET, TestApp};

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

    /// `GET /docs/<file>`: Swagger UI, the viewer of the OpenAPI document (`""` for its page,
    /// `swagger-initializer.js` for the script that points it at `/openapi.json`), in
    /// [`ApiResponse::text`].
    pub async fn docs(&self, file: &str) -> ApiResponse {
        ApiResponse::text(self.request(Method::GET, &format!("/docs/{file}")).send().await.expect("request")).await
    }

    /// Runs `latchkey <args>` on this server's database with its secret, as an operator would
    /// from another process.
    pub fn latchkey_cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env("LATCHKEY_DATABASE_URL", &self.database_url)
            .env("LATCHKEY_SECRET", TEST_SECRET)
            .env("LATCHKEY_LOG", "warn")
            .output()
            .expect("run latchkey")
    }

    /// `latchkey keys rotate` on this server's database; returns the new key's `kid`.
    pub fn rotate_keys(&self) -> String {
        let out = self.latchkey_cli(&["keys", "rotate"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().rsplit(' ').next().expect("kid").to_owned()
    }
}
