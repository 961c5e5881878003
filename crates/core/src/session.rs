//! Sessions: one row per sign-in, checked on every authenticated request (API.md, "Sessions").
//!
//! Every credential Latchkey issues names its session (`sid`), so revoking the row ends every
//! credential of that sign-in at once, whichever surface issued it.

use time::OffsetDateTime;

use crate::identity::{SessionId, TenantId, UserId};

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

/// Sent to subscribers of [`crate::Auth::subscribe_revocations`] when a session is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Tenant of the session.
    pub tenant: TenantId,
    /// The revoked session.
    pub session: SessionId,
    /// Its user.
    pub user: UserId,
}
