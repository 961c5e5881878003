//! The audit trail: security events (sign-ups, sign-ins and their failures, sign-outs,
//! refreshes and replays, codes, password and email changes, API keys, rate-limit refusals,
//! operator actions on accounts) recorded where each happens in the core, so every surface
//! inherits them, and stored through [`AuditStore`](crate::ports::AuditStore).
//!
//! Who asked, from where, is a [`RequestContext`]: the surface's name, the client address and
//! the user agent, carried as a tokio task-local that the server sets around each request (and
//! each CLI command), so the core needs no extra parameter to know it.
//!
//! Events never wait for the database: [`AuditLog::record`] puts them in a bounded queue that a
//! background task drains in batches. When the queue is full the event is dropped and counted
//! in `latchkey_audit_dropped_total`, so a slow database slows no sign-in. Every event is
//! also a `tracing` event (target `latchkey::audit`) and counted in
//! `latchkey_audit_events_total{kind, surface}`.
//!
//! Nothing secret is ever recorded: no password, code, token or key. An event about an address
//! with no account carries the address as typed and no user id; [`AuditEvent::detail`] (e.g.
//! why a sign-in failed) is for operators only and never reaches the wire.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::identity::{TenantId, UserId};
use crate::ports::AuditStore;

/// Characters of the `User-Agent` header kept in an event.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// Events that may wait for the writer by default.
pub const DEFAULT_QUEUE: usize = 8192;

/// Events written in one batch at most.
const BATCH: usize = 512;

/// The surface name of events recorded outside any request or command (background work).
pub const NO_SURFACE: &str = "internal";

/// The surface name of operator commands (`latchkey ...`).
pub const CLI_SURFACE: &str = "cli";

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What happened. The names ([`AuditKind::as_str`]) are stable: they are stored, used
        /// as metric labels and accepted by `latchkey audit --kind`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $($(#[$doc])* $variant,)*
        }

        impl AuditKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$variant,)*];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $name,)*
                }
            }

            /// The kind named `name` ([`AuditKind::as_str`]), if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(AuditKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A user was created (sign-up, registration, owner sign-up, takeover of an unverified
    /// account: `detail` `reclaimed_unverified`).
    SignUp => "sign_up",
    /// A session was created (password or SRP sign-in, sign-in on activation).
    SignIn => "sign_in",
    /// A sign-in or re-authentication was refused; `detail`: `unknown_user`, `no_password`,
    /// `wrong_password`, `wrong_proof`, `disabled`, `not_verified`, `reauthentication`.
    SignInFailed => "sign_in_failed",
    /// A session was ended by its user (`detail` `all_sessions`: every session at once).
    SignOut => "sign_out",
    /// A refresh token was exchanged for its successor.
    Refresh => "refresh",
    /// A rotated refresh token was presented again: its session was revoked.
    RefreshReuse => "refresh_reuse",
    /// A one-time code was issued and queued for mail; `detail`: its purpose.
    CodeSent => "code_sent",
    /// A one-time code check failed; `detail`: `<purpose>: <error code>`.
    CodeFailed => "code_failed",
    /// A password was set with a reset code.
    PasswordReset => "password_reset",
    /// A signed-in user changed their password.
    PasswordChange => "password_change",
    /// An email change was confirmed; `email` is the new address.
    EmailChange => "email_change",
    /// An API key (`detail`: `api_key <id>`) or signing key (`signing_key <kid>`) was created.
    KeyCreated => "key_created",
    /// An API key was revoked; `detail`: `api_key <id>`.
    KeyRevoked => "key_revoked",
    /// An attempt was refused by a rate limit; `detail`: the limit's name.
    RateLimited => "rate_limited",
    /// An account was disabled.
    AccountDisabled => "account_disabled",
    /// A disabled account was enabled again.
    AccountEnabled => "account_enabled",
    /// An account was deleted.
    AccountDeleted => "account_deleted",
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`AuditKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an audit event kind")]
pub struct UnknownKind(pub String);

impl FromStr for AuditKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditKind::from_name(s.trim()).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One stored security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Event id: a UUID version 7, so ids sort by time.
    pub id: Uuid,
    /// When it happened (by the core's clock).
    pub at: OffsetDateTime,
    /// The tenant of the account (or of the request).
    pub tenant: TenantId,
    /// The account, when one is known; `None` for addresses with no account.
    pub user_id: Option<UserId>,
    /// The address as the account stores it, or as typed when there is no account.
    pub email: Option<String>,
    /// What happened.
    pub kind: AuditKind,
    /// Where: a surface name (`users`, `auth`, `graphql`, `projects`, `cognito`, `realtime`,
    /// `v1`), [`CLI_SURFACE`] or [`NO_SURFACE`].
    pub surface: String,
    /// The client address as the server determined it (trusted proxies honoured).
    pub ip: Option<String>,
    /// The client's `User-Agent`, at most [`USER_AGENT_MAX_CHARS`] characters.
    pub user_agent: Option<String>,
    /// Operator-only detail (why a sign-in failed, which limit refused); never a secret.
    pub detail: Option<String>,
}

/// Who made the request an event belongs to: set by the server per request (and per CLI
/// command), read by the core when it records an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The surface's name (one of a fixed set: it is a metric label).
    pub surface: &'static str,
    /// The client address.
    pub ip: Option<String>,
    /// The client's `User-Agent`, at most [`USER_AGENT_MAX_CHARS`] characters.
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

impl RequestContext {
    /// A context for a request to `surface`; `user_agent` is truncated to
    /// [`USER_AGENT_MAX_CHARS`] characters.
    pub fn new(surface: &'static str, ip: Option<String>, user_agent: Option<&str>) -> Self {
        Self { surface, ip, user_agent: user_agent.map(|ua| ua.chars().take(USER_AGENT_MAX_CHARS).collect()) }
    }

    /// The context of an operator command: surface [`CLI_SURFACE`], no address.
    pub fn cli() -> Self {
        Self::new(CLI_SURFACE, None, None)
    }

    /// Runs `work` with this context as the current one (a tokio task-local: tasks spawned by
    /// `work` do not inherit it; capture [`RequestContext::current`] and scope them again).
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CONTEXT.scope(self, work).await
    }

    /// The context of the running task, if one is set.
    pub fn current() -> Option<Self> {
        CONTEXT.try_with(Clone::clone).ok()
    }
}

enum Message {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// The queue in front of the [`AuditStore`] and its writer task; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task on the current tokio runtime: it takes up to 512 queued events
    /// at a time and stores them in one [`AuditStore::insert_audit_events`] call. `capacity`
    /// events may wait (at least 1). A batch the store refuses is logged and counted as
    /// dropped (`latchkey_audit_dropped_total{reason="write_failed"}`).
    pub fn start(store: Arc<dyn AuditStore>, capacity: usize) -> Self {
        let (queue, mut rx) = mpsc::channel::<Message>(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        tokio::spawn(async move {
            let mut messages = Vec::with_capacity(BATCH);
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut messages, BATCH).await > 0 {
                for message in messages.drain(..) {
                    match message {
                        Message::Event(event) => batch.push(event),
                        Message::Flush(done) => {
                            write(store.as_ref(), &mut batch, &counter).await;
                            let _ = done.send(());
                        }
                    }
                }
                write(store.as_ref(), &mut batch, &counter).await;
            }
        });
        Self { queue, dropped }
    }

    /// Queues `event` for storage and returns at once; logs it (target `latchkey::audit`) and
    /// counts it in `latchkey_audit_events_total{kind, surface}`. When the queue is full the
    /// event is dropped and counted (`latchkey_audit_dropped_total{reason="queue_full"}`).
    pub fn record(&self, event: AuditEvent) {
        tracing::info!(
            target: "latchkey::audit",
            kind = event.kind.as_str(),
            surface = %event.surface,
            tenant = %event.tenant,
            user = event.user_id.map(|u| u.to_string()),
            ip = event.ip.as_deref(),
            detail = event.detail.as_deref(),
            "audit event"
        );
        let surface = label(&event.surface);
        metrics::counter!("latchkey_audit_events_total", "kind" => event.kind.as_str(), "surface" => surface)
            .increment(1);
        if self.queue.try_send(Message::Event(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("latchkey_audit_dropped_total", "reason" => "queue_full").increment(1);
        }
    }

    /// Waits until every event queued before this call has been stored (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Events dropped so far: the queue was full, or the store refused their batch.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The metric label of a surface name: one of the fixed set, else `other`.
fn label(surface: &str) -> &'static str {
    const KNOWN: [&str; 9] =
        ["users", "auth", "graphql", "projects", "cognito", "realtime", "v1", CLI_SURFACE, NO_SURFACE];
    KNOWN.into_iter().find(|k| *k == surface).unwrap_or("other")
}

async fn write(store: &dyn AuditStore, batch: &mut Vec<AuditEvent>, dropped: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.insert_audit_events(batch).await {
        let lost = batch.len() as u64;
        dropped.fetch_add(lost, Ordering::Relaxed);
        metrics::counter!("latchkey_audit_dropped_total", "reason" => "write_failed").increment(lost);
        tracing::error!(error = %e, lost, "audit events could not be stored");
    }
    batch.clear();
}

/// Which events [`AuditStore::audit_events`] returns: every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this tenant's events.
    pub tenant: Option<TenantId>,
    /// Only this user's events.
    pub user_id: Option<UserId>,
    /// Only events with this address, compared case-insensitively.
    pub email: Option<String>,
    /// Only these kinds (empty: every kind).
    pub kinds: Vec<AuditKind>,
    /// Only events at or after this moment.
    pub since: Option<OffsetDateTime>,
    /// Only events before this moment.
    pub until: Option<OffsetDateTime>,
    /// At most this many events, newest first.
    pub limit: u32,
}

/// Builds an event of `kind` at `at` with the current [`RequestContext`] (or none:
/// [`NO_SURFACE`], no address).
pub fn event(
    kind: AuditKind,
    at: OffsetDateTime,
    tenant: TenantId,
    user_id: Option<UserId>,
    email: Option<String>,
    detail: Option<String>,
) -> AuditEvent {
    let context = RequestContext::current();
    AuditEvent {
        id: Uuid::now_v7(),
        at,
        tenant,
        user_id,
        email,
        kind,
        surface: context.as_ref().map_or(NO_SURFACE, |c| c.surface).to_owned(),
        ip: context.as_ref().and_then(|c| c.ip.clone()),
        // Truncated here too: the context's fields are public.
        user_agent: context.and_then(|c| c.user_agent).map(|ua| ua.chars().take(USER_AGENT_MAX_CHARS).collect()),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_stable_and_read_back() {
        assert_eq!(AuditKind::ALL.len(), 17);
        for kind in AuditKind::ALL {
            assert_eq!(kind.as_str().parse::<AuditKind>(), Ok(*kind));
        }
        assert_eq!(AuditKind::SignInFailed.as_str(), "sign_in_failed");
        assert!("signin".parse::<AuditKind>().is_err());
    }

    #[tokio::test]
    async fn the_context_is_task_local_and_user_agents_are_truncated() {
        assert_eq!(RequestContext::current(), None);
        let long = "x".repeat(1000);
        let ctx = RequestContext::new("users", Some("192.0.2.1".into()), Some(&long));
        assert_eq!(ctx.user_agent.as_deref().map(str::len), Some(USER_AGENT_MAX_CHARS));
        let seen = ctx.clone().scope(async { RequestContext::current() }).await;
        assert_eq!(seen, Some(ctx));
        let built = RequestContext { surface: "v1", ip: None, user_agent: Some(long) };
        let e = built
            .scope(async { event(AuditKind::SignIn, OffsetDateTime::now_utc(), TenantId::DEFAULT, None, None, None) })
            .await;
        assert_eq!(e.user_agent.map(|ua| ua.chars().count()), Some(USER_AGENT_MAX_CHARS));
        let e = event(AuditKind::SignIn, OffsetDateTime::now_utc(), TenantId::DEFAULT, None, None, None);
        assert_eq!(e.surface, NO_SURFACE);
        assert_eq!(label("users"), "users");
        assert_eq!(label("someone@example.com"), "other");
    }
}
