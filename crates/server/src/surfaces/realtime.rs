//! The `realtime` surface: `GET /ws`, the server side of seed `000_a7dc8425a1030ba6.txt` as
//! pinned down by API.md `realtime`.
//!
//! The seed's browser reports each auth event to its own server over a WebSocket, and that
//! server trusted what it was told. Here every token in a frame is verified by the core
//! ([`Auth::verify_presented_tokens`]), the profile record is stored without the tokens, and
//! when a session is revoked anywhere (any surface, the CLI, reuse detection, a password reset,
//! on any instance the revocation bus reaches) every socket signed in with it is told.
//!
//! Wire format (text frames, JSON):
//! * client: `{"action": "user-signup" | "user-login" | "user-logout", "message": {...}}`;
//! * reply: `{"sender", "action", "message": {"message", "user": {"cogId", "username",
//!   "email", "loggedIn"}}}`;
//! * error: `{"sender", "action", "error": {"code", "message"}}` (`action` is the frame's, or
//!   `null` when it had none or was not read: binary, over the allowance); the socket stays open;
//! * push: `{"sender", "action": "session-revoked", "message": {"sid"}}`.
//!
//! Error codes: `malformed_frame` (not a JSON object, or a binary frame), `unknown_action`,
//! `invalid_input` (a field missing, mistyped or invalid), `rate_limited` (more frames than
//! `LATCHKEY_REALTIME_FRAMES_PER_SECOND`), and the core's outcome names
//! ([`Error::code`]): `invalid_token`, `token_expired`, `session_revoked`,
//! `email_not_verified`, `overloaded`, `internal_error`.
//!
//! Close codes (RFC 6455 section 7.4.1): 1009 for a frame or message over 64 KiB, 1001 when the
//! server shuts down, 1002 on a protocol violation, 1008 for a socket ten seconds' worth of
//! frames beyond its allowance (pings included). Idle sockets are pinged every
//! `LATCHKEY_REALTIME_PING_INTERVAL`; one that sends nothing (not even the pong) for a whole
//! interval after a ping is dropped. At each ping a signed-in socket's session row is read
//! again, so a revocation no announcement brought (made by another process on SQLite, or
//! notified while an instance's PostgreSQL listener was reconnecting) is pushed within one
//! interval.
//!
//! No cookie is read, so a foreign page opening this socket in a user's browser gains nothing
//! (there is no ambient credential to hijack); tokens come only inside frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use latchkey_core::audit::RequestContext;
use latchkey_core::identity::{Email, SessionId, TenantId};
use latchkey_core::limits::address_key;
use latchkey_core::session::{Revocation, Session};
use latchkey_core::token::RefreshToken;
use latchkey_core::{Auth, Error, PresentedTokens, ProvenSession};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::de;
use crate::context::{Mounted, Shutdown, SurfaceContext};
use crate::http::Client;
use crate::http::ClientAddressPolicy;

/// The route.
const PATH: &str = "/ws";
/// Largest frame and message accepted, in bytes (API.md `realtime`: over 64 KiB closes with
/// 1009).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Read buffer per socket, in bytes: small, so that idle sockets cost little (tungstenite's
/// default is 128 KiB); it grows for larger frames up to [`MAX_MESSAGE_BYTES`].
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long sending one frame may take before the client is taken for gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The audience of `v1` tokens. The tokens a realtime client presents come from a sign-in that
/// issues all three tokens (access, ID, refresh): `v1` (audience `v1`) or the Cognito API
/// (audience: its app client id, one of `LATCHKEY_CLIENT_IDS`). Those are the audiences
/// accepted.
const V1_AUDIENCE: &str = "v1";

/// The surface's settings (keys `LATCHKEY_REALTIME_*`, and `LATCHKEY_CLIENT_IDS`, which it
/// shares with the Cognito API).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct Settings {
    /// `LATCHKEY_REALTIME_PING_INTERVAL` (default `30s`, at most a day): how often idle sockets
    /// are pinged; a socket silent for a whole interval after a ping is dropped.
    #[serde(rename = "realtime_ping_interval", deserialize_with = "ping_interval")]
    ping_interval: Duration,
    /// `LATCHKEY_REALTIME_SOCKETS_PER_ADDRESS` (default 64, 1 to 1,000,000): open sockets per
    /// client address (IPv6 per /64); more are refused with 429 before the upgrade.
    #[serde(rename = "realtime_sockets_per_address", deserialize_with = "sockets_per_address")]
    sockets_per_address: u32,
    /// `LATCHKEY_REALTIME_FRAMES_PER_SECOND` (default 5, 1 to 1000): frames a socket may send
    /// per second on average, in bursts of up to twice that; beyond, frames are answered
    /// `rate_limited` unread, and a socket ten seconds' worth of frames over is closed (1008).
    #[serde(rename = "realtime_frames_per_second", deserialize_with = "frames_per_second")]
    frames_per_second: u32,
    /// `LATCHKEY_CLIENT_IDS` (default `local`): the Cognito app client ids, whose tokens carry
    /// the client id as audience.
    #[serde(rename = "client_ids", deserialize_with = "de::list")]
    client_ids: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            sockets_per_address: 64,
            frames_per_second: 5,
            client_ids: vec!["local".into()],
        }
    }
}

fn ping_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let interval = de::duration(d)?;
    if interval > Duration::from_secs(24 * 3600) {
        return Err(serde::de::Error::custom("must be at most a day"));
    }
    Ok(interval)
}

fn sockets_per_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::number_in_range(d, 1, 1_000_000)
}

fn frames_per_second<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::number_in_range(d, 1, 1000)
}

/// The configuration keys this surface reads (lower case, without `LATCHKEY_`), for
/// [`Surface::keys`](crate::context::Surface::keys).
pub const KEYS: &[&str] =
    &["realtime_ping_interval", "realtime_sockets_per_address", "realtime_frames_per_second", "client_ids"];

/// What the handlers use.
#[derive(Clone)]
struct RealtimeState {
    auth: Auth,
    clients: ClientAddressPolicy,
    settings: Arc<Settings>,
    /// The accepted token audiences: `v1` and the client ids.
    audiences: Arc<[String]>,
    hub: Arc<Hub>,
    shutdown: Shutdown,
}

/// Mounts `GET /ws` and starts the task that delivers revocations to signed-in sockets (it ends
/// at shutdown).
///
/// # Errors
/// A configuration error naming the key when a setting of the surface is invalid.
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let settings: Settings = ctx.settings.extract()?;
    let audiences: Arc<[String]> =
        std::iter::once(V1_AUDIENCE.to_owned()).chain(settings.client_ids.iter().cloned()).collect();
    let hub = Arc::new(Hub::default());
    tokio::spawn(dispatch(ctx.auth.subscribe_revocations(), Arc::downgrade(&hub), ctx.shutdown.clone()));
    let state = RealtimeState {
        auth: ctx.auth.clone(),
        clients: ctx.clients,
        settings: Arc::new(settings),
        audiences,
        hub,
        shutdown: ctx.shutdown.clone(),
    };
    Ok(Mounted::routes(Router::new().route(PATH, get(upgrade)).with_state(state)))
}

impl axum::extract::FromRef<RealtimeState> for ClientAddressPolicy {
    fn from_ref(state: &RealtimeState) -> Self {
        state.clients
    }
}

/// A session, as the hub knows it.
type SessionKey = (TenantId, SessionId);
/// Where each signed-in socket (by connection number) receives its session's revocation.
type Sockets = HashMap<u64, mpsc::Sender<SessionId>>;

/// Sockets signed in per session, and open sockets per client address.
#[derive(Default)]
struct Hub {
    next: AtomicU64,
    sessions: Mutex<HashMap<SessionKey, Sockets>>,
    addresses: Mutex<HashMap<String, u32>>,
}

impl Hub {
    /// Counts a new socket from `address` unless it already has `limit` open.
    fn admit(self: &Arc<Self>, address: String, limit: u32) -> Option<AddressSlot> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let open = addresses.entry(address.clone()).or_default();
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(AddressSlot { hub: self.clone(), address })
    }

    /// Signs socket `conn` in with `session`: it receives the session's revocation on `push`.
    fn register(self: &Arc<Self>, session: &Session, conn: u64, push: mpsc::Sender<SessionId>) -> SignedIn {
        let key = (session.tenant, session.id);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().insert(conn, push);
        SignedIn { hub: self.clone(), key, conn, session: session.clone() }
    }

    /// Tells every socket signed in with the revoked session, and forgets them.
    fn revoked(&self, r: &Revocation) {
        let sockets = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&(r.tenant, r.session));
        for push in sockets.into_iter().flat_map(HashMap::into_values) {
            // Full: the socket has a push pending already; closed: it is gone.
            let _ = push.try_send(r.session);
        }
    }
}

/// One open socket counted against its client address; uncounted on drop.
struct AddressSlot {
    hub: Arc<Hub>,
    address: String,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut addresses = self.hub.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = addresses.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                addresses.remove(&self.address);
            }
        }
    }
}

/// A socket's sign-in with a session; signed out of the hub on drop.
struct SignedIn {
    hub: Arc<Hub>,
    key: SessionKey,
    conn: u64,
    session: Session,
}

impl Drop for SignedIn {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sockets) = sessions.get_mut(&self.key) {
            sockets.remove(&self.conn);
            if sockets.is_empty() {
                sessions.remove(&self.key);
            }
        }
    }
}

/// Delivers every revocation the core announces to the sockets signed in with it, until
/// shutdown or until the hub is gone.
async fn dispatch(mut revocations: broadcast::Receiver<Revocation>, hub: Weak<Hub>, mut shutdown: Shutdown) {
    loop {
        let received = tokio::select! {
            () = shutdown.begun() => return,
            r = revocations.recv() => r,
        };
        match received {
            Ok(r) => match hub.upgrade() {
                Some(hub) => hub.revoked(&r),
                None => return,
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "revocation pushes fell behind; some sockets were not told");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `GET /ws`: upgrades to a WebSocket, unless the client address has too many open.
async fn upgrade(
    State(state): State<RealtimeState>,
    Client(meta): Client,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            return http_error(status, "not_a_websocket", "GET /ws takes a WebSocket upgrade (RFC 6455)");
        }
    };
    let context = RequestContext::current();
    let address = address_key(meta.ip.as_deref().unwrap_or("unknown"));
    let Some(slot) = state.hub.admit(address, state.settings.sockets_per_address) else {
        return http_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many open sockets from this address");
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            // The socket is served by a task of its own, which does not inherit the request's
            // task-locals: the audit context goes along explicitly.
            let serve = Connection::new(state, slot).serve(socket);
            async move {
                match context {
                    Some(context) => context.scope(serve).await,
                    None => serve.await,
                }
            }
        })
}

/// An error answered over HTTP (before any upgrade), in the frames' error shape.
fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "action": null, "error": { "code": code, "message": message } }))).into_response()
}

/// An error reply: a wire code and a message safe to show.
#[derive(Debug)]
struct FrameError {
    code: &'static str,
    message: String,
}

impl FrameError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn invalid(field: &str, problem: &str) -> Self {
        Self::new("invalid_input", format!("message.{field} {problem}"))
    }
}

impl From<Error> for FrameError {
    /// The one mapping from core outcomes to this surface's errors; every variant is named.
    fn from(e: Error) -> Self {
        // A user without a password reads like a wrong password: this seed has no other answer.
        let e = match e {
            Error::PasswordResetRequired => Error::InvalidCredentials,
            e => e,
        };
        let code = e.code();
        let message = match &e {
            Error::InvalidToken => "The tokens are not valid tokens of this user's session",
            Error::TokenExpired => "A token has expired; refresh and send the new tokens",
            Error::SessionRevoked | Error::RefreshTokenReused => "The session has ended",
            Error::NotVerified => "The email address has not been confirmed",
            Error::UserDisabled => "The account is disabled",
            Error::RateLimited { .. } => "Too many attempts; try again later",
            Error::Overloaded { .. } => "The server is busy; try again shortly",
            Error::InvalidInput(_) => "Some fields are invalid",
            Error::InvalidCredentials
            | Error::PasswordResetRequired
            | Error::EmailTaken
            | Error::UsernameTaken
            | Error::ExternalIdTaken
            | Error::AlreadyVerified
            | Error::UserNotFound
            | Error::NoCodePending
            | Error::CodeExpired
            | Error::CodeMismatch { .. }
            | Error::TenantNotFound => "The request was refused",
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                "Something went wrong on our side"
            }
        };
        Self::new(code, message)
    }
}

/// The actions of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    SignUp,
    LogIn,
    LogOut,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "user-signup" => Some(Action::SignUp),
            "user-login" => Some(Action::LogIn),
            "user-logout" => Some(Action::LogOut),
            _ => None,
        }
    }
}

/// The `message` of an action frame; every field a string when present.
#[derive(Debug, Default)]
struct Fields {
    cog_id: Option<String>,
    username: Option<String>,
    email: Option<String>,
    access_token: Option<String>,
    id_token: Option<String>,
    refresh_token: Option<String>,
}

impl Fields {
    /// Reads the known fields of `message` (others are ignored): each must be a string or
    /// absent (`null` counts as absent).
    fn read(message: &Value) -> Result<Self, FrameError> {
        let Value::Object(map) = message else {
            return Err(FrameError::new("invalid_input", "message must be an object"));
        };
        let field = |name: &str| -> Result<Option<String>, FrameError> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(FrameError::invalid(name, "must be a string")),
            }
        };
        Ok(Self {
            cog_id: field("cogId")?,
            username: field("username")?,
            email: field("email")?,
            access_token: field("accessToken")?,
            id_token: field("idToken")?,
            refresh_token: field("refreshToken")?,
        })
    }

    fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, FrameError> {
        match value.as_deref() {
            None => Err(FrameError::invalid(name, "is required")),
            Some(s) if s.trim().is_empty() => Err(FrameError::invalid(name, "must not be empty")),
            Some(s) => Ok(s),
        }
    }

    fn email(&self) -> Result<Email, FrameError> {
        Email::parse(Self::required(&self.email, "email")?).map_err(|e| FrameError::invalid("email", &e.0))
    }
}

/// Reads one text frame: the action's name as sent, the action and its fields; or the error
/// frame to answer (`malformed_frame`, `unknown_action`, `invalid_input`).
fn parse_frame(text: &str) -> Result<(String, Action, Fields), Value> {
    let frame: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(error_frame(None, FrameError::new("malformed_frame", "A frame is a JSON object"))),
    };
    let Some(name) = frame.get("action").and_then(Value::as_str).map(str::to_owned) else {
        return Err(error_frame(None, FrameError::new("malformed_frame", "action must be a string")));
    };
    let Some(action) = Action::parse(&name) else {
        let e = FrameError::new("unknown_action", "action must be user-signup, user-login or user-logout");
        return Err(error_frame(Some(&name), e));
    };
    match Fields::read(frame.get("message").unwrap_or(&Value::Null)) {
        Ok(fields) => Ok((name, action, fields)),
        Err(e) => Err(error_frame(Some(&name), e)),
    }
}

/// Checks one text frame as far as it can be without a session: [`parse_frame`], then the
/// fields every action requires (`email`, `accessToken`). Returns the error frame a client
/// would get, or `None` when the frame would reach the core. For the fuzz targets.
#[doc(hidden)]
pub fn check_frame(text: &str) -> Option<Value> {
    let (name, _, fields) = match parse_frame(text) {
        Ok(parsed) => parsed,
        Err(reply) => return Some(reply),
    };
    let checked = fields.email().and_then(|_| Fields::required(&fields.access_token, "accessToken").map(|_| ()));
    checked.err().map(|e| error_frame(Some(&name), e))
}

/// One socket: its `sender` id, what it is signed in with, its limits.
struct Connection {
    state: RealtimeState,
    /// The `sender` of every frame to this socket.
    sender: String,
    conn: u64,
    _slot: AddressSlot,
    signed_in: Option<SignedIn>,
    push_tx: mpsc::Sender<SessionId>,
    push_rx: mpsc::Receiver<SessionId>,
    /// Frames still allowed now (token bucket), and when it was last refilled.
    allowance: f64,
    refilled: Instant,
}

/// Whether a socket may send one more frame now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowance {
    /// Within the allowance.
    Granted,
    /// Over it: the frame is answered `rate_limited` (control frames: ignored).
    Refused,
    /// Far over it, for long: the socket is closed (1008).
    Exhausted,
}

/// What ends a socket's loop.
enum Ending {
    /// The client vanished.
    Gone,
    /// The client sent a close frame: the reply goes out before the connection ends.
    ClosedByClient,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl Connection {
    fn new(state: RealtimeState, slot: AddressSlot) -> Self {
        let (push_tx, push_rx) = mpsc::channel(2);
        let conn = state.hub.next.fetch_add(1, Ordering::Relaxed);
        let allowance = f64::from(state.settings.frames_per_second) * 2.0;
        Self {
            state,
            sender: uuid::Uuid::new_v4().to_string(),
            conn,
            _slot: slot,
            signed_in: None,
            push_tx,
            push_rx,
            allowance,
            refilled: Instant::now(),
        }
    }

    /// Runs the socket until the client leaves, stops answering pings, breaks the protocol or
    /// sends too large a frame, or the server shuts down.
    async fn serve(mut self, mut socket: WebSocket) {
        let mut shutdown = self.state.shutdown.clone();
        let interval = self.state.settings.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard_since_ping = true;
        let ending = loop {
            tokio::select! {
                () = shutdown.begun() => break Ending::Close(close_code::AWAY, "server shutting down"),
                Some(sid) = self.push_rx.recv() => {
                    if self.signed_in.as_ref().is_some_and(|s| s.key.1 == sid) {
                        self.signed_in = None;
                        let frame = json!({
                            "sender": self.sender,
                            "action": "session-revoked",
                            "message": { "sid": sid.to_string() },
                        });
                        if send(&mut socket, &frame).await.is_err() {
                            break Ending::Gone;
                        }
                    }
                }
                _ = ping.tick() => {
                    if !heard_since_ping {
                        tracing::debug!(sender = %self.sender, "socket did not answer a ping; dropping it");
                        break Ending::Gone;
                    }
                    heard_since_ping = false;
                    if send_message(&mut socket, Message::Ping(Default::default())).await.is_err() {
                        break Ending::Gone;
                    }
                    // The safety net for revocations no announcement brought (another process
                    // on SQLite, a lost PostgreSQL notification): the session row itself.
                    if let Some(signed_in) = &self.signed_in
                        && matches!(self.state.auth.session_active(&signed_in.session).await, Ok(false))
                    {
                        let _ = self.push_tx.try_send(signed_in.session.id);
                    }
                }
                received = socket.recv() => {
                    heard_since_ping = true;
                    let message = match received {
                        None => break Ending::Gone,
                        Some(Err(e)) => break ending_of(e),
                        Some(Ok(Message::Close(_))) => break Ending::ClosedByClient,
                        Some(Ok(message)) => message,
                    };
                    let allowance = self.allow();
                    let reply = match message {
                        _ if allowance == Allowance::Exhausted => {
                            break Ending::Close(close_code::POLICY, "too many frames");
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                        _ if allowance == Allowance::Refused => {
                            Some(error_frame(None, FrameError::new("rate_limited", "Too many frames; slow down")))
                        }
                        Message::Binary(_) => {
                            let e = FrameError::new("malformed_frame", "Binary frames are not accepted; send JSON text");
                            Some(error_frame(None, e))
                        }
                        Message::Text(text) => self.handle(text).await,
                    };
                    if let Some(mut frame) = reply {
                        frame["sender"] = Value::String(self.sender.clone());
                        if send(&mut socket, &frame).await.is_err() {
                            break Ending::Gone;
                        }
                    }
                }
            }
        };
        if let Ending::ClosedByClient = ending {
            // tungstenite queued the close reply; reading once more writes it and then reports
            // the connection closed.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
        }
        if let Ending::Close(code, reason) = ending {
            let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
            let _ = send_message(&mut socket, Message::Close(Some(frame))).await;
            // Give the client a moment to answer the close, so that it reads our close frame
            // before the connection goes away.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = socket.recv().await {} })
                    .await;
        }
    }

    /// Takes one frame from the socket's allowance (a token bucket of twice the per-second
    /// rate, refilled continuously). Frames over the allowance still count, as debt: a socket
    /// ten seconds' worth of frames in debt is closed.
    fn allow(&mut self) -> Allowance {
        let rate = f64::from(self.state.settings.frames_per_second);
        let now = Instant::now();
        self.allowance = (self.allowance + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate * 2.0);
        self.refilled = now;
        self.allowance -= 1.0;
        if self.allowance >= 0.0 {
            Allowance::Granted
        } else if self.allowance > -rate * 10.0 {
            Allowance::Refused
        } else {
            Allowance::Exhausted
        }
    }

    /// Answers one text frame.
    async fn handle(&mut self, text: Utf8Bytes) -> Option<Value> {
        let (name, action, fields) = match parse_frame(text.as_str()) {
            Ok(parsed) => parsed,
            Err(reply) => return Some(reply),
        };
        let outcome = self.act(action, &fields).await;
        Some(match outcome {
            Ok(message) => json!({ "action": name, "message": message }),
            Err(e) => error_frame(Some(&name), e),
        })
    }

    /// Performs a well-formed action; returns the reply's `message`.
    async fn act(&mut self, action: Action, fields: &Fields) -> Result<Value, FrameError> {
        let email = fields.email()?;
        let access = Fields::required(&fields.access_token, "accessToken")?;
        let refresh = fields.refresh_token.as_deref().map(RefreshToken::from_client);
        let (id, refresh, cog_id) = match action {
            Action::SignUp => (
                Some(Fields::required(&fields.id_token, "idToken")?),
                Some(refresh.ok_or_else(|| FrameError::invalid("refreshToken", "is required"))?),
                Some(Fields::required(&fields.cog_id, "cogId")?),
            ),
            Action::LogIn => (
                Some(Fields::required(&fields.id_token, "idToken")?),
                Some(refresh.ok_or_else(|| FrameError::invalid("refreshToken", "is required"))?),
                None,
            ),
            // Signing out needs only the access token; whatever else is sent must match.
            Action::LogOut => (fields.id_token.as_deref(), refresh, fields.cog_id.as_deref()),
        };
        if let Some(username) = &fields.username
            && username.trim().to_lowercase() != email.normalized()
        {
            return Err(FrameError::invalid("username", "must be the email address"));
        }
        let tokens = PresentedTokens { access, id, refresh: refresh.as_ref() };
        let all_audiences = self.state.audiences.clone();
        let audiences: Vec<&str> = all_audiences.iter().map(String::as_str).collect();
        let auth = self.state.auth.clone();
        let proven = auth.verify_presented_tokens(&tokens, TenantId::DEFAULT, &audiences, &email, cog_id).await?;
        let (logged_in, text) = match action {
            Action::SignUp => (true, "user created"),
            Action::LogIn => (true, "user logged in"),
            Action::LogOut => (false, "user logged out"),
        };
        if logged_in {
            self.sign_in(&proven, access, &audiences).await?;
        } else {
            // This socket is signed out first, so that it gets the reply, not a push too.
            if self.signed_in.as_ref().is_some_and(|s| s.key == (proven.session.tenant, proven.session.id)) {
                self.signed_in = None;
            }
            auth.sign_out(&proven.session).await?;
        }
        let profile = auth.record_realtime_profile(&proven, fields.username.as_deref(), logged_in).await?;
        Ok(json!({
            "message": text,
            "user": {
                "cogId": profile.identity_id,
                "username": profile.username,
                "email": profile.email.as_str(),
                "loggedIn": profile.logged_in,
            },
        }))
    }

    /// Signs this socket in with the proven session: from now on it receives the session's
    /// revocation. The session is checked once more after registering, so a revocation that
    /// happened between the verification and the registration is not missed.
    async fn sign_in(&mut self, proven: &ProvenSession, access: &str, audiences: &[&str]) -> Result<(), FrameError> {
        self.signed_in = None;
        let registration = self.state.hub.register(&proven.session, self.conn, self.push_tx.clone());
        self.state.auth.authenticate(access, audiences).await?;
        self.signed_in = Some(registration);
        Ok(())
    }
}

/// How a read error ends the socket: 1009 for an oversized frame or message, 1002 for other
/// protocol violations, nothing more for a connection that is gone.
fn ending_of(e: axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    match e.into_inner().downcast::<WsError>().map(|e| *e) {
        Ok(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            Ending::Close(close_code::SIZE, "frames are limited to 64 KiB")
        }
        Ok(WsError::Protocol(_) | WsError::Utf8(_)) => Ending::Close(close_code::PROTOCOL, "protocol error"),
        _ => Ending::Gone,
    }
}

/// An error frame (without `sender`, which the connection adds).
fn error_frame(action: Option<&str>, e: FrameError) -> Value {
    json!({ "action": action, "error": { "code": e.code, "message": e.message } })
}

/// Sends one message, giving up after [`SEND_TIMEOUT`] (a client that stops reading must not
/// hold its connection's task, and its memory, forever).
async fn send_message(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

/// Sends one JSON text frame, as [`send_message`].
async fn send(socket: &mut WebSocket, frame: &Value) -> Result<(), ()> {
    send_message(socket, Message::Text(frame.to_string().into())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SurfaceSettings;

    #[test]
    fn settings_are_bounded_and_named_by_their_keys() {
        let mut raw = SurfaceSettings::default();
        let defaults: Settings = raw.extract().expect("defaults");
        assert_eq!(defaults.ping_interval, Duration::from_secs(30));
        assert_eq!(defaults.client_ids, vec!["local".to_owned()]);
        for (key, bad) in [
            ("realtime_ping_interval", "400d"),
            ("realtime_ping_interval", "0s"),
            ("realtime_ping_interval", "30"),
            ("realtime_sockets_per_address", "0"),
            ("realtime_frames_per_second", "1001"),
        ] {
            let mut settings = SurfaceSettings::default();
            settings.insert(key, bad);
            let e = settings.extract::<Settings>().expect_err(bad);
            assert_eq!(e.key, format!("LATCHKEY_{}", key.to_ascii_uppercase()), "{e}");
        }
        raw.insert("client_ids", "web, mobile");
        let s: Settings = raw.extract().expect("valid");
        assert_eq!(s.client_ids, vec!["web".to_owned(), "mobile".to_owned()]);
    }
}
