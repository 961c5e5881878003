//! Sessions: one row per sign-in, checked on every authenticated request (API.md, "Sessions").
//!
//! Every credential Latchkey issues names its session (`sid`), so revoking the row ends every
//! credential of that sign-in at once, whichever surface issued it.

use time::OffsetDateTime;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::identity::{SessionId, TenantId, UserId};
use crate::ports::RevocationBus;

/// A session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id (`sid`).
    pub id: SessionId,
    /// Tenant of the user.
    pub tenant: TenantId,
    /// The signed-in user.
    pub user_id: UserId,
    /// When the session was created: the moment of authentication (`auth_time`).
    pub created_at: OffsetDateTime,
    /// When a credential of the session was last accepted (updated at most once a minute).
    pub last_seen_at: OffsetDateTime,
    /// When the session ends regardless of use (`created_at` + `LATCHKEY_SESSION_TTL`).
    pub expires_at: OffsetDateTime,
    /// When the session was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// `User-Agent` of the client that signed in (at most 512 characters).
    pub user_agent: Option<String>,
    /// IP address of the client that signed in.
    pub ip: Option<String>,
}

impl Session {
    /// Whether credentials of this session are accepted at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What is known about the client at sign-in, recorded on the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMeta {
    /// The client's IP address, as text.
    pub ip: Option<String>,
    /// The `User-Agent` header (truncated to 512 characters when stored).
    pub user_agent: Option<String>,
}

/// Published on the [`RevocationBus`] when a session is revoked; received by subscribers of
/// [`crate::Auth::subscribe_revocations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Tenant of the session.
    pub tenant: TenantId,
    /// The revoked session.
    pub session: SessionId,
    /// Its user.
    pub user: UserId,
}

/// The revocation bus of one process: an in-memory broadcast channel. Enough for one instance
/// (SQLite); instances sharing a database need a bus that reaches all of them.
#[derive(Debug, Clone)]
pub struct LocalRevocationBus(broadcast::Sender<Revocation>);

impl LocalRevocationBus {
    /// Announcements a slow subscriber may fall behind by before it misses some.
    pub const CAPACITY: usize = 1024;
}

impl Default for LocalRevocationBus {
    fn default() -> Self {
        Self(broadcast::channel(Self::CAPACITY).0)
    }
}

#[async_trait]
impl RevocationBus for LocalRevocationBus {
    async fn publish(&self, revocations: &[Revocation]) {
        for revocation in revocations {
            // No receivers is fine: nobody is listening.
            let _ = self.0.send(revocation.clone());
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.0.subscribe()
    }
}
