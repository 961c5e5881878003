//! The session cache: the session row and user that the credential check of every
//! authenticated request reads ([`crate::Auth::authenticate`]), kept in memory for a short,
//! bounded time so that a busy client's requests do not each read the database.
//!
//! What bounds its staleness:
//!
//! * **This instance** forgets a session in the same call that revokes it, and every user of a
//!   changed account (password, email, verification, disabled flag, deletion) before the
//!   change's operation returns, so the next request on this instance sees the change.
//! * **Other instances** forget a session when its revocation reaches them over the
//!   [`RevocationBus`](crate::ports::RevocationBus) (PostgreSQL `NOTIFY`: milliseconds).
//! * **Whatever happens to that bus** (a dropped listening connection, a lagging receiver, a
//!   process on the same SQLite file with no bus at all), an entry is used for at most
//!   [`SessionCacheSettings::ttl`] after it was read from the store (default one second), by
//!   the injected clock. Profile changes made on another instance also show within that time.
//!
//! A read that started before an invalidation never refills the cache with what it read: every
//! invalidation advances a generation counter, and an entry stored by a reader that saw an
//! older generation is removed again (see [`SessionCache::insert`]).
//!
//! Only sessions that passed every check are cached; a refused credential reads the store
//! every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::identity::{SessionId, TenantId, User};
use crate::session::Session;

/// How the session cache is sized and how long an entry may be used
/// (`LATCHKEY_SESSION_CACHE_TTL`, `LATCHKEY_SESSION_CACHE_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCacheSettings {
    /// Longest time an entry is used after it was read from the store; zero turns the cache
    /// off (every check reads the store). Default one second.
    pub ttl: Duration,
    /// Most sessions kept (approximately; the least useful are dropped first). Default
    /// 10,000, about 10 MiB at most.
    pub capacity: usize,
}

impl Default for SessionCacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(1), capacity: 10_000 }
    }
}

/// One cached credential check: the session row and its user as read at `fetched_at`.
#[derive(Debug, Clone)]
pub(crate) struct CachedSession {
    /// The session as stored (its `last_seen_at` as last written by this instance).
    pub session: Session,
    /// The session's user (without the password hash).
    pub user: User,
    /// When the store was read, by the injected clock.
    pub fetched_at: OffsetDateTime,
}

type Key = (TenantId, SessionId);

/// A bounded map of recently checked sessions with generation-guarded invalidation.
pub(crate) struct SessionCache {
    entries: quick_cache::sync::Cache<Key, Arc<CachedSession>>,
    generation: AtomicU64,
    ttl: Duration,
}

impl SessionCache {
    /// A cache per `settings`; `None` when its TTL is zero (off).
    pub fn new(settings: SessionCacheSettings) -> Option<Self> {
        (!settings.ttl.is_zero() && settings.capacity > 0).then(|| Self {
            entries: quick_cache::sync::Cache::new(settings.capacity),
            generation: AtomicU64::new(0),
            ttl: settings.ttl,
        })
    }

    /// The current generation: read it before reading the store, and pass it to
    /// [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The entry of a session, if one was read from the store less than the TTL before `now`
    /// (an entry from the future, after the clock went back, is not used).
    pub fn get(&self, tenant: TenantId, session: SessionId, now: OffsetDateTime) -> Option<Arc<CachedSession>> {
        let entry = self.entries.get(&(tenant, session))?;
        let age = now - entry.fetched_at;
        (age >= time::Duration::ZERO && age < self.ttl).then_some(entry)
    }

    /// Stores what a reader read at generation `seen`. When an invalidation happened since
    /// (the generation moved on), the entry is removed again: the reader may have read the
    /// store before the change that caused it.
    pub fn insert(&self, seen: u64, entry: CachedSession) {
        let key = (entry.session.tenant, entry.session.id);
        self.entries.insert(key, Arc::new(entry));
        // SeqCst on both sides: either the invalidation's removal comes after this insert,
        // or this load sees its generation.
        if self.generation.load(Ordering::SeqCst) != seen {
            self.entries.remove(&key);
        }
    }

    /// Forgets one session (revoked, or changed).
    pub fn forget(&self, tenant: TenantId, session: SessionId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(&(tenant, session));
    }

    /// Forgets every session (a user changed; or revocations may have been missed).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").field("ttl", &self.ttl).field("len", &self.entries.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserId;

    fn entry(at: OffsetDateTime) -> CachedSession {
        let user = User {
            id: UserId::random(),
            tenant: TenantId::DEFAULT,
            email: None,
            email_verified: true,
            username: None,
            external_id: None,
            profile: Default::default(),
            has_password: true,
            disabled: false,
            created_at: at,
            updated_at: at,
        };
        let session = Session {
            id: SessionId::random(),
            tenant: TenantId::DEFAULT,
            user_id: user.id,
            created_at: at,
            last_seen_at: at,
            expires_at: at + Duration::from_secs(3600),
            revoked_at: None,
            user_agent: None,
            ip: None,
        };
        CachedSession { session, user, fetched_at: at }
    }

    fn cache() -> SessionCache {
        SessionCache::new(SessionCacheSettings::default()).expect("on by default")
    }

    #[test]
    fn an_entry_is_used_for_less_than_the_ttl() {
        let cache = cache();
        let t0 = OffsetDateTime::now_utc();
        let e = entry(t0);
        let (tenant, id) = (e.session.tenant, e.session.id);
        cache.insert(cache.generation(), e);
        assert!(cache.get(tenant, id, t0).is_some());
        assert!(cache.get(tenant, id, t0 + Duration::from_millis(999)).is_some());
        assert!(cache.get(tenant, id, t0 + Duration::from_secs(1)).is_none());
        assert!(cache.get(tenant, id, t0 - Duration::from_millis(1)).is_none(), "clock went back");
    }

    #[test]
    fn a_read_from_before_an_invalidation_is_not_kept() {
        let cache = cache();
        let t0 = OffsetDateTime::now_utc();
        let e = entry(t0);
        let (tenant, id) = (e.session.tenant, e.session.id);
        let seen = cache.generation();
        // The session is revoked (and forgotten) while the reader is reading the store.
        cache.forget(tenant, id);
        cache.insert(seen, e);
        assert!(cache.get(tenant, id, t0).is_none());
    }

    #[test]
    fn forgetting_one_session_keeps_the_others_and_forget_all_drops_every_one() {
        let cache = cache();
        let t0 = OffsetDateTime::now_utc();
        let (a, b) = (entry(t0), entry(t0));
        let (ka, kb) = ((a.session.tenant, a.session.id), (b.session.tenant, b.session.id));
        cache.insert(cache.generation(), a);
        cache.insert(cache.generation(), b);
        cache.forget(ka.0, ka.1);
        assert!(cache.get(ka.0, ka.1, t0).is_none());
        assert!(cache.get(kb.0, kb.1, t0).is_some());
        cache.forget_all();
        assert!(cache.get(kb.0, kb.1, t0).is_none());
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        assert!(SessionCache::new(SessionCacheSettings { ttl: Duration::ZERO, capacity: 10 }).is_none());
    }
}
