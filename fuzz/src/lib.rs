//! Shared harness of the fuzz targets: one Latchkey application over a temporary SQLite
//! database, built once per fuzzing process, driven in-process through its router.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use latchkey_core::Auth;
use latchkey_server::{Application, Config};
use tower::ServiceExt as _;

/// The application under test and the runtime it runs on.
pub struct Harness {
    /// Runs every request; multi-threaded so the core's background tasks make progress.
    pub runtime: tokio::runtime::Runtime,
    /// The application (kept alive: it owns the database and the shutdown signal).
    pub app: Application,
    /// The application's full router.
    pub router: Router,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// The core of the application.
    pub fn auth(&self) -> Auth {
        self.app.auth().clone()
    }

    /// Sends `request` through the router as a client at 10.0.0.1 and returns the response
    /// with its body read.
    pub fn send(&self, mut request: Request<Body>) -> (Response<()>, Vec<u8>) {
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 40_000))));
        self.runtime.block_on(async {
            let response = match self.router.clone().oneshot(request).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
            (Response::from_parts(parts, ()), bytes)
        })
    }
}

/// The configuration of the fuzzed application: SQLite in `dir`, mail to the log, rate
/// limits off (so that every input reaches the handlers), all surfaces.
fn config(dir: &std::path::Path) -> Config {
    let raw: BTreeMap<String, String> = [
        ("listen", "127.0.0.1:0".to_owned()),
        ("database_url", format!("sqlite://{}", dir.join("fuzz.db").display())),
        ("secret", "fuzz-secret-fuzz-secret-fuzz-secret-0123456789".to_owned()),
        ("rate_limit", "off".to_owned()),
        ("require_email_verification", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    match Config::from_map(&raw) {
        Ok((config, _)) => config,
        Err(e) => panic!("fuzz configuration: {e}"),
    }
}

/// The process-wide harness, built on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(r) => r,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory: {e}"),
        };
        let app = match runtime.block_on(Application::build(config(dir.path()))) {
            Ok(app) => app,
            Err(e) => panic!("building the application: {e:#}"),
        };
        let router = app.router();
        Harness { runtime, app, router, _dir: dir }
    })
}

/// Panics when `status` is a server error: the property every target checks over HTTP.
pub fn assert_not_server_error(what: &str, status: axum::http::StatusCode, body: &[u8]) {
    assert!(!status.is_server_error(), "{what}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(2000)]));
}
