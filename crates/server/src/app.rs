//! The application: builds the core from the configuration, mounts the surfaces and the
//! always-on endpoints, and serves HTTP with tracing, metrics, body limits and graceful
//! shutdown.
//!
//! `Application::build` binds the listener (port 0 picks a free port) so tests run the very
//! server `latchkey serve` runs.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER,
    STRICT_TRANSPORT_SECURITY, USER_AGENT, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_core::audit::RequestContext;
use latchkey_core::clock::SystemClock;
use latchkey_core::identity::PasswordPolicy;
use latchkey_core::limits::{MemoryRateLimiter, RateLimiter, Unlimited};
use latchkey_core::ports::RevocationBus;
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::LocalRevocationBus;
use latchkey_core::{Auth, Deps, Settings};
use latchkey_store::{Backend, Database, Options, PgRevocationBus};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{Config, ConfigError};
use crate::context::{Shutdown, Surface, SurfaceContext};
use crate::http::origin::{API_CSP, PAGE_CSP, hsts};
use crate::http::{ClientAddressPolicy, CookiePolicy, MAX_BODY_BYTES, OriginPolicy};
use crate::mail::ServerMailer;
use crate::problem::Problem;
use crate::ratelimit::RedisRateLimiter;
use crate::surfaces;
use crate::telemetry;

/// What the always-on endpoints (health, metrics, JWKS, discovery) use. Surfaces get a
/// [`SurfaceContext`] instead.
#[derive(Clone)]
struct AppState {
    auth: Auth,
    public_url: Arc<str>,
    metrics: PrometheusHandle,
    clients: ClientAddressPolicy,
    /// Who besides loopback may read `/metrics` (`LATCHKEY_METRICS_ALLOW`).
    metrics_allow: Arc<[ipnet::IpNet]>,
}

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    database: Database,
    auth: Auth,
    local_addr: SocketAddr,
    description: String,
    /// Set to `true` when shutdown begins; long-lived connections watch it ([`Shutdown`]).
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// How long ended sessions and codes are kept before the purge removes them.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long shutdown waits for queued mail.
const MAIL_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the purge runs.
const PURGE_EVERY: Duration = Duration::from_secs(10 * 60);
/// How long shutdown waits for long-lived connections (WebSockets) to close.
const CONNECTIONS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Application {
    /// Opens (and migrates) the database, loads or creates the server secret and signing
    /// keys, builds the mailer and binds the listener.
    ///
    /// # Errors
    /// Any start-up failure, with the setting involved named in the message.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = open_database(&config).await?;
        let secret = load_secret(&config, database.backend())?;
        let mailer = ServerMailer::new(
            &config.mail_from,
            config.smtp_url.as_ref().map(ExposeSecret::expose_secret),
            config.outbox_dir.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        let mail_description = mailer.describe();

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("LATCHKEY_LISTEN: cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = config.public_url(local_addr);

        let settings = core_settings(&config, public_url.clone());
        let (limiter, limits_description): (Arc<dyn RateLimiter>, &str) = match (config.rate_limit, &config.redis_url) {
            (false, _) => (Arc::new(Unlimited), "off"),
            (true, Some(url)) => {
                (Arc::new(RedisRateLimiter::connect(url.expose_secret()).await.map_err(anyhow::Error::msg)?), "redis")
            }
            (true, None) => {
                let memory = Arc::new(MemoryRateLimiter::default());
                tokio::spawn(forget_idle_limits(Arc::downgrade(&memory)));
                (memory, "memory")
            }
        };
        let deps = Deps {
            store: database.store(),
            mailer: Arc::new(mailer),
            clock: Arc::new(SystemClock),
            limiter,
            revocations: revocation_bus(&database, true).await?,
        };
        let auth = Auth::new(deps, &secret, settings).await.context("starting the core")?;
        let (shutdown, _) = tokio::sync::watch::channel(false);

        let context = SurfaceContext {
            auth: auth.clone(),
            cookies: CookiePolicy { secure: public_url.starts_with("https://") },
            clients: ClientAddressPolicy { trust_forwarded_for: config.trust_forwarded_for },
            origins: OriginPolicy::new(&config.allowed_origins, &public_url, config.trust_forwarded_for),
            public_url: public_url.clone().into(),
            settings: config.surface_settings.clone(),
            shutdown: Shutdown::new(shutdown.subscribe()),
        };
        let selected = selected_surfaces(&config)?;
        let (router, mounted) = router(&context, &selected, &config.metrics_allow)?;
        let description = format!(
            "latchkey listening on http://{local_addr} (issuer {public_url}; database {}; mail {mail_description}; rate limits {limits_description}; surfaces {})",
            config.database_url,
            mounted.join(",")
        );
        Ok(Self { listener, router, database, auth, local_addr, description, shutdown })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A clone of the full router, to drive the application in-process without its listener
    /// (the fuzz targets do). Each request needs a `ConnectInfo<SocketAddr>` extension, as the
    /// listener adds; the application must stay alive while the router is used.
    #[doc(hidden)]
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The core, for embedding and maintenance commands.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Serves until SIGINT (Ctrl-C) or SIGTERM, then stops accepting, lets in-flight requests
    /// finish and closes the database.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting, tells
    /// long-lived connections to close ([`Shutdown`]), lets in-flight requests finish, waits up
    /// to 5 seconds for those connections to close and 15 for queued mail, and closes the
    /// database.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!("{}", self.description);
        let purge = tokio::spawn(purge_loop(self.auth.clone()));
        let begun = self.shutdown.clone();
        let result = axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                begun.send_replace(true);
            })
            .await;
        // Upgraded connections are no longer the HTTP server's: they close by themselves on
        // the signal, each dropping its receiver.
        self.shutdown.send_replace(true);
        if tokio::time::timeout(CONNECTIONS_CLOSE_TIMEOUT, self.shutdown.closed()).await.is_err() {
            tracing::warn!(
                open = self.shutdown.receiver_count(),
                "long-lived connections still open after 5 s; closing anyway"
            );
        }
        purge.abort();
        self.auth.flush_audit().await;
        if !self.auth.flush_mail(MAIL_FLUSH_TIMEOUT).await {
            tracing::error!("shutting down with undelivered mail: it is lost (see the mail-lost log lines)");
        }
        self.database.close().await;
        tracing::info!("latchkey stopped");
        result.context("serving HTTP")
    }
}

/// The core's settings from the configuration, with `issuer` as the token issuer.
fn core_settings(config: &Config, issuer: String) -> Settings {
    Settings {
        issuer,
        code_ttl: config.code_ttl,
        access_token_ttl: config.access_token_ttl,
        session_ttl: config.session_ttl,
        refresh_reuse_window: config.refresh_reuse_window,
        unverified_account_ttl: config.unverified_account_ttl,
        audit_retention: config.audit_retention,
        session_cache: latchkey_core::session_cache::SessionCacheSettings {
            ttl: config.session_cache_ttl,
            capacity: config.session_cache_size,
        },
        hash_queue: config.hash_queue,
        hash_params: config.hash_params(),
        require_email_verification: config.require_email_verification,
        password_policy: PasswordPolicy { min_length: config.password_min_length, ..PasswordPolicy::default() },
        signing_algorithm: config.jwt_alg,
        region: config.region.clone(),
        user_pool_id: config.user_pool_id(),
        // Verifiers serve only the `cognito` surface's SRP flow: none without it.
        srp: config.srp && config.surfaces.includes("cognito"),
        ..Settings::default()
    }
}

/// The revocation bus for `database`: on PostgreSQL, `LISTEN`/`NOTIFY`, so that revocations
/// reach every instance (`listen`: also receive theirs; maintenance commands only publish); on
/// SQLite, one process's in-memory channel.
///
/// # Errors
/// When the PostgreSQL listening connection cannot be opened.
async fn revocation_bus(database: &Database, listen: bool) -> anyhow::Result<Arc<dyn RevocationBus>> {
    Ok(match database.postgres() {
        Some(pg) if listen => Arc::new(
            PgRevocationBus::listening(pg.pool().clone()).await.context("listening for revocations on PostgreSQL")?,
        ),
        Some(pg) => Arc::new(PgRevocationBus::publisher(pg.pool().clone())),
        None => Arc::new(LocalRevocationBus::default()),
    })
}

async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let options = Options { max_connections: config.database_max_connections, ..Options::default() };
    Database::connect(config.database_url.expose_secret(), &options)
        .await
        .with_context(|| format!("LATCHKEY_DATABASE_URL: {}", config.database_url))
}

/// Opens the database and applies migrations, for `latchkey migrate`.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    db.close().await;
    Ok(())
}

/// The core on the configured database, without an HTTP server or mail (for maintenance
/// commands: `latchkey keys`, `tenant`, `user`, `session`). Close the database when done.
///
/// # Errors
/// When the database cannot be opened or migrated, or the server secret cannot be loaded.
pub async fn open_core(config: &Config) -> anyhow::Result<(Database, Auth)> {
    let database = open_database(config).await?;
    let secret = load_secret(config, database.backend())?;
    let settings = core_settings(config, config.public_url(config.listen));
    let mailer = ServerMailer::new(&config.mail_from, None, None).map_err(anyhow::Error::msg)?;
    let deps = Deps {
        store: database.store(),
        mailer: Arc::new(mailer),
        clock: Arc::new(SystemClock),
        limiter: Arc::new(Unlimited),
        // Revocations made here must reach the running instances: on PostgreSQL, by NOTIFY.
        revocations: revocation_bus(&database, false).await?,
    };
    let auth = Auth::new(deps, &secret, settings).await?;
    Ok((database, auth))
}

/// Creates a new current signing key, for `latchkey keys rotate`. Returns its `kid`.
///
/// # Errors
/// When the database fails or holds keys sealed with another secret.
pub async fn rotate_keys(config: &Config) -> anyhow::Result<String> {
    let (database, auth) = open_core(config).await?;
    let kid = RequestContext::cli().scope(auth.rotate_signing_key()).await?;
    auth.flush_audit().await;
    database.close().await;
    Ok(kid)
}

/// The server secret: `LATCHKEY_SECRET`, else `latchkey.secret` in the data directory (beside
/// the SQLite file, or the working directory), created with mode 0600 on first start.
fn load_secret(config: &Config, backend: &Backend) -> anyhow::Result<ServerSecret> {
    if let Some(s) = &config.secret {
        return ServerSecret::new(s.expose_secret().as_bytes().to_vec())
            .map_err(|e| anyhow::anyhow!("LATCHKEY_SECRET: {e}"));
    }
    let dir: PathBuf = match backend {
        Backend::Sqlite { path: Some(p) } => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        Backend::Sqlite { path: None } => {
            // An in-memory database lives and dies with the process; so may its secret.
            return ServerSecret::new(ServerSecret::generate_text().into_bytes()).map_err(anyhow::Error::msg);
        }
        Backend::Postgres => PathBuf::new(),
    };
    let path = if dir.as_os_str().is_empty() { PathBuf::from("latchkey.secret") } else { dir.join("latchkey.secret") };
    if path.exists() {
        refuse_shared_secret_file(&path)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return ServerSecret::new(text.trim().as_bytes().to_vec())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let text = ServerSecret::generate_text();
    write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "LATCHKEY_SECRET is not set: generated a server secret; back it up, and give every instance the same LATCHKEY_SECRET"
    );
    ServerSecret::new(text.into_bytes()).map_err(anyhow::Error::msg)
}

/// Refuses a secret file that users other than its owner can read or write.
fn refuse_shared_secret_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{}: the server secret is accessible to other users (mode {:o}); run `chmod 600 {}` and start again",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Drops idle rate-limit buckets every minute for as long as the limiter lives.
async fn forget_idle_limits(limiter: std::sync::Weak<MemoryRateLimiter>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match limiter.upgrade() {
            Some(l) => l.forget_idle(),
            None => return,
        }
    }
}

async fn purge_loop(auth: Auth) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match auth.purge_expired(RETENTION).await {
            Ok(p) if p.sessions + p.codes + p.unverified_users + p.refresh_tokens + p.srp_challenges > 0 => {
                tracing::info!(
                    sessions = p.sessions,
                    codes = p.codes,
                    unverified_users = p.unverified_users,
                    refresh_tokens = p.refresh_tokens,
                    srp_challenges = p.srp_challenges,
                    "purged ended sessions, codes, unverified accounts, rotated refresh tokens and answered SRP challenges"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge of ended sessions and codes failed"),
        }
        match auth.purge_audit().await {
            Ok(0) => {}
            Ok(events) => tracing::info!(events, "purged audit events older than LATCHKEY_AUDIT_RETENTION"),
            Err(e) => tracing::warn!(error = %e, "purge of old audit events failed"),
        }
    }
}

/// The surfaces `LATCHKEY_SURFACES` selects, in the order of [`surfaces::ALL`].
///
/// # Errors
/// A [`ConfigError`] naming `LATCHKEY_SURFACES` when it names a surface that is not in the
/// list (checked against the list itself).
pub fn selected_surfaces(config: &Config) -> Result<Vec<Surface>, ConfigError> {
    let known: Vec<&str> = surfaces::ALL.iter().map(|s| s.name).collect();
    config.surfaces.check_known(&known)?;
    Ok(surfaces::ALL.iter().filter(|s| config.surfaces.includes(s.name)).copied().collect())
}

/// The full router (the selected surfaces, the always-on endpoints, middleware) and the names
/// of the surfaces mounted.
fn router(
    context: &SurfaceContext,
    selected: &[Surface],
    metrics_allow: &[ipnet::IpNet],
) -> anyhow::Result<(Router, Vec<&'static str>)> {
    let state = AppState {
        auth: context.auth.clone(),
        public_url: context.public_url.clone(),
        metrics: telemetry::metrics_handle(),
        clients: context.clients,
        metrics_allow: metrics_allow.into(),
    };
    let mut app = Router::new();
    let mut openapi: Option<OpenApi> = None;
    let cors = cors(&context.origins);
    for surface in selected {
        let mounted = (surface.mount)(context).with_context(|| format!("mounting the {} surface", surface.name))?;
        let (name, clients) = (surface.name, context.clients);
        let router = match &cors {
            // `cognito` answers its own CORS, as API.md lists it (any origin, no cookies).
            // The 405 fallback is set before the layer so that preflights (`OPTIONS`) of routes
            // without an `OPTIONS` handler reach it too.
            Some(cors) if surface.name != "cognito" => {
                mounted.router.method_not_allowed_fallback(method_not_allowed).layer(cors.clone())
            }
            _ => mounted.router,
        };
        app = app.merge(
            router
                .layer(middleware::from_fn(move |req: Request, next: Next| request_context(name, clients, req, next))),
        );
        openapi = match (openapi, mounted.openapi) {
            (Some(mut doc), Some(part)) => {
                doc.merge(part);
                Some(doc)
            }
            (doc, part) => doc.or(part),
        };
    }
    let mut openapi = openapi.unwrap_or_else(|| {
        OpenApiBuilder::new().info(InfoBuilder::new().title("Latchkey").version(env!("CARGO_PKG_VERSION"))).build()
    });
    openapi.servers = Some(vec![utoipa::openapi::Server::new(context.public_url.to_string())]);
    let openapi_json: Arc<str> = serde_json::to_string_pretty(&openapi).unwrap_or_else(|_| "{}".into()).into();
    let always_on = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(openid_configuration))
        .route(
            "/openapi.json",
            get(move || async move { ([(CONTENT_TYPE, "application/json")], openapi_json.to_string()) }),
        )
        .with_state(state);
    // Swagger UI, its files embedded in the binary (utoipa-swagger-ui `vendored`), reading the
    // document above; no validator badge (it would load from validator.swagger.io).
    let docs: Router = Router::from(
        SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")),
    )
    .layer(SetResponseHeaderLayer::overriding(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)));
    let hsts_policy = context.origins.clone();
    let app = app
        .merge(always_on)
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::if_not_present(CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP)))
        .layer(SetResponseHeaderLayer::overriding(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let hsts = hsts(&hsts_policy, req.headers());
            async move {
                let mut response = next.run(req).await;
                if let Some(value) = hsts {
                    response.headers_mut().insert(STRICT_TRANSPORT_SECURITY, value);
                }
                response
            }
        }))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        route = %route,
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|res: &Response, latency: Duration, span: &Span| {
                    let latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
                    span.record("status", res.status().as_u16());
                    span.record("latency_ms", latency_ms);
                    tracing::info!("request finished");
                })
                .on_failure(()),
        );
    Ok((app, selected.iter().map(|s| s.name).collect()))
}

/// CORS (tower-http) for `LATCHKEY_ALLOWED_ORIGINS`: those origins, and no other, may read
/// answers and send credentials (`Access-Control-Allow-Credentials: true`); `None` when no
/// origin is allowed, so that no CORS header is ever sent.
fn cors(origins: &OriginPolicy) -> Option<CorsLayer> {
    if origins.allowed.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins.allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([AUTHORIZATION, CONTENT_TYPE, ACCEPT])
            .expose_headers([RETRY_AFTER, WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

/// Runs a request to `surface` with its [`RequestContext`] (the surface's name, the client
/// address by `clients`, the user agent), which the core's audit events read.
async fn request_context(surface: &'static str, clients: ClientAddressPolicy, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let ip = clients.address(&parts).map(|ip| ip.to_string());
    let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    let context = RequestContext::new(surface, ip, user_agent);
    context.scope(next.run(Request::from_parts(parts, body))).await
}

/// Counts requests and observes latency per method, matched route and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("latchkey_http_requests_total", &labels).increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}

/// Known routes asked with a method they do not take, outside surfaces with their own answer:
/// 405 as RFC 9457 problem+json.
async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "This route does not take that method.")
}

/// Unknown routes outside every surface: 404 as RFC 9457 problem+json.
async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "No such route.")
}

/// `GET /healthz`: the process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers (200), or not (503).
async fn readyz(State(state): State<AppState>) -> Response {
    match state.auth.ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "The database is not reachable.").into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text exposition format.
///
/// Answered only to loopback clients and to `LATCHKEY_METRICS_ALLOW`; everyone else gets the
/// 404 of an unknown route (the client address is the one rate limits use, so behind a trusted
/// proxy it is the forwarded one).
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let allowed = state
        .clients
        .address(&parts)
        .map(|ip| ip.to_canonical())
        .is_some_and(|ip| ip.is_loopback() || state.metrics_allow.iter().any(|net| net.contains(&ip)));
    if !allowed {
        return not_found().await.into_response();
    }
    ([(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], state.metrics.render())
        .into_response()
}

/// `GET /.well-known/jwks.json`: the current and previous public signing keys (RFC 7517).
async fn jwks(State(state): State<AppState>) -> Response {
    match state.auth.jwks().await {
        Ok(set) => {
            let mut response = Json(set).into_response();
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the key ring");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "The key set is unavailable.")
                .into_response()
        }
    }
}

/// `GET /.well-known/openid-configuration`: OpenID Provider metadata (OIDC Discovery 1.0
/// section 3) naming the issuer, the JWKS and the signing algorithm.
async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = state.public_url.as_ref();
    let mut response = Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": [state.auth.signing_algorithm().as_str()],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "jti", "sid", "tid", "auth_time", "email", "email_verified",
            "given_name", "family_name", "phone_number", "address", "picture", "preferred_username"
        ],
    }))
    .into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latchkey.secret");
        write_private(&path, &ServerSecret::generate_text()).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        refuse_shared_secret_file(&path).expect("0600 is fine");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = refuse_shared_secret_file(&path).expect_err("readable by others");
        let message = e.to_string();
        assert!(message.contains("chmod 600") && message.contains("644"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}
