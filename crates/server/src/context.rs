//! What a surface is given, and what it gives back. A leaf module: it imports no surface, so
//! surfaces depend on it and never on each other or on the application.
//!
//! A surface sees the core, the cookie and client-address policies and the public URL; it
//! never sees the whole configuration (the server secret and database URL stay with the
//! application).

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use latchkey_core::Auth;

use crate::config::SurfaceSettings;
use crate::http::{ClientAddressPolicy, CookiePolicy, OriginPolicy};

/// Everything a surface may use.
#[derive(Clone)]
pub struct SurfaceContext {
    /// The core: every rule lives behind it.
    pub auth: Auth,
    /// Attributes of the cookies the surface sets.
    pub cookies: CookiePolicy,
    /// Where client addresses come from.
    pub clients: ClientAddressPolicy,
    /// Which origins cookie-authenticated requests may come from: the surface guards its
    /// cookie routes with it ([`crate::http::OriginGuard`]).
    pub origins: OriginPolicy,
    /// The external base URL, without a trailing slash (the token issuer).
    pub public_url: Arc<str>,
    /// The configuration keys no core setting claims: a surface extracts its own typed
    /// settings from them (`settings.extract::<MySettings>()`), under the names it declares in
    /// [`Surface::keys`].
    pub settings: SurfaceSettings,
    /// Completes when the server begins its graceful shutdown, so that long-lived connections
    /// (WebSockets), which outlive the HTTP exchange that opened them, can close themselves.
    pub shutdown: Shutdown,
}

/// The server's shutdown, as long-lived connections see it: a `watch` of whether shutdown has
/// begun. Connections hold a clone while open; the application waits (briefly) until every
/// clone is gone before closing the database.
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// The receiving side of `begun`, which the application sets to `true` when shutting down.
    pub fn new(begun: tokio::sync::watch::Receiver<bool>) -> Self {
        Self(begun)
    }

    /// Completes once shutdown has begun (at once if it has).
    pub async fn begun(&mut self) {
        // An error means the application is gone: shut down all the same.
        let _ = self.0.wait_for(|begun| *begun).await;
    }
}

impl FromRef<SurfaceContext> for Auth {
    fn from_ref(ctx: &SurfaceContext) -> Self {
        ctx.auth.clone()
    }
}

impl FromRef<SurfaceContext> for CookiePolicy {
    fn from_ref(ctx: &SurfaceContext) -> Self {
        ctx.cookies
    }
}

impl FromRef<SurfaceContext> for ClientAddressPolicy {
    fn from_ref(ctx: &SurfaceContext) -> Self {
        ctx.clients
    }
}

impl FromRef<SurfaceContext> for OriginPolicy {
    fn from_ref(ctx: &SurfaceContext) -> Self {
        ctx.origins.clone()
    }
}

/// A mounted surface: its routes, under the mount prefix it owns and with its own state
/// applied, and optionally its part of the OpenAPI document (paths with their full prefix).
pub struct Mounted {
    /// The surface's routes.
    pub router: Router,
    /// The surface's OpenAPI description, merged into `/openapi.json`.
    pub openapi: Option<utoipa::openapi::OpenApi>,
}

impl Mounted {
    /// A surface without an OpenAPI description.
    pub fn routes(router: Router) -> Self {
        Self { router, openapi: None }
    }
}

/// One entry of the application's surface list.
#[derive(Clone, Copy)]
pub struct Surface {
    /// The name `LATCHKEY_SURFACES` selects it by (API.md's surface table).
    pub name: &'static str,
    /// The configuration keys the surface reads (lower case, without the `LATCHKEY_` prefix),
    /// so that they are not reported as unknown.
    pub keys: &'static [&'static str],
    /// Builds the surface's routes.
    pub mount: fn(&SurfaceContext) -> anyhow::Result<Mounted>,
}
