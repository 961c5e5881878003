//! Sessions: creation, the credential check every authenticated request makes, revocation
//! (announced on the [`RevocationBus`](crate::ports::RevocationBus)) and listing.

use std::time::Duration;

use super::{Auth, Authenticated, record};
use crate::audit::AuditKind;
use crate::error::{Error, Result};
use crate::identity::{SessionId, TenantId, User, UserId};
use crate::session::{ClientMeta, Revocation, Session};
use crate::session_cache::{CachedSession, SessionCache};
use crate::token::{Claims, Expectation, ID_TOKEN_TYP};

/// How often a session's `last_seen_at` is written at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

impl Auth {
    /// Creates a new session for `user` (after sign-in, or after an activation that signs in).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn start_session(&self, user: &User, meta: &ClientMeta) -> Result<Session> {
        let now = self.now();
        let session = Session {
            id: SessionId::random(),
            tenant: user.tenant,
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.0.settings.session_ttl,
            revoked_at: None,
            user_agent: meta.user_agent.as_ref().map(|ua| ua.chars().take(512).collect()),
            ip: meta.ip.clone(),
        };
        self.0.store.insert_session(&session).await?;
        self.audit_user(AuditKind::SignIn, user, None);
        Ok(session)
    }

    /// Verifies an access token of the default tenant (the tenant of every surface but
    /// `projects`, API.md "One directory") and the session it names: signature and claims
    /// (see [`KeyRing::verify`]), the `tid` claim (a token of any other tenant is refused as
    /// invalid), then the session row: it exists in the token's tenant, is neither revoked nor
    /// expired, and its user exists and is not disabled. Records the use on the session at
    /// most once a minute. [`Auth::authenticate_in`] does the same for another tenant.
    ///
    /// `audiences` lists the accepted `aud` values (empty: any).
    ///
    /// # Errors
    /// [`Error::InvalidToken`], [`Error::TokenExpired`], [`Error::SessionRevoked`].
    pub async fn authenticate(&self, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        self.authenticate_in(TenantId::DEFAULT, token, audiences).await
    }

    /// Verifies an ID token issued by Latchkey in the default tenant (signature, issuer,
    /// expiry, `tid`, live session).
    ///
    /// # Errors
    /// As [`Auth::authenticate`].
    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn verify_id_token(&self, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        let claims = self.0.keys.verify(token, Expectation { typ: ID_TOKEN_TYP, audiences }).await?;
        if TenantId::parse(&claims.tid).ok() != Some(TenantId::DEFAULT) {
            return Err(Error::InvalidToken);
        }
        let (user, session) = self.session_of(&claims).await?;
        Ok(Authenticated { user, session, claims })
    }

    /// The live session `claims` name and its user: from the session cache when it holds an
    /// entry fresh enough (see [`crate::session_cache`]), else from the store (then cached).
    pub(super) async fn session_of(&self, claims: &Claims) -> Result<(User, Session)> {
        let tenant = TenantId::parse(&claims.tid).map_err(|_| Error::InvalidToken)?;
        let sid = SessionId::parse(&claims.sid).map_err(|_| Error::InvalidToken)?;
        let subject = UserId::parse(&claims.sub).ok();
        let now = self.now();
        let cache = self.0.sessions.as_deref();
        if let Some(hit) = cache.and_then(|c| c.get(tenant, sid, now)) {
            if !hit.session.is_active(now) || hit.user.disabled || subject != Some(hit.user.id) {
                return Err(Error::SessionRevoked);
            }
            if now - hit.session.last_seen_at < TOUCH_INTERVAL {
                return Ok((hit.user.clone(), hit.session.clone()));
            }
        }
        let generation = cache.map(SessionCache::generation);
        let (mut session, record) = self.0.store.session_with_user(tenant, sid).await?.ok_or(Error::SessionRevoked)?;
        if !session.is_active(now) || record.user.disabled || subject != Some(record.user.id) {
            return Err(Error::SessionRevoked);
        }
        if now - session.last_seen_at >= TOUCH_INTERVAL {
            self.0.store.touch_session(tenant, sid, now).await?;
            session.last_seen_at = now;
        }
        if let (Some(cache), Some(generation)) = (cache, generation) {
            let entry = CachedSession { session: session.clone(), user: record.user.clone(), fetched_at: now };
            cache.insert(generation, entry);
        }
        Ok((record.user, session))
    }

    /// Revokes one session. Returns whether it was active.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all, fields(session = %session.id))]
    pub async fn sign_out(&self, session: &Session) -> Result<bool> {
        let revoked = self.0.store.revoke_session(session.tenant, session.id, self.now()).await?;
        if revoked {
            self.announce(session.tenant, session.user_id, [session.id]).await;
            self.audit_user_id(AuditKind::SignOut, session.tenant, session.user_id, None).await;
        }
        record("sign_out", "ok");
        Ok(revoked)
    }

    /// Revokes every session of a user except `keep` at the user's or the operator's request;
    /// returns how many were revoked. An audit event ([`AuditKind::SignOut`], `detail`
    /// `all_sessions`).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn sign_out_everywhere(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>) -> Result<usize> {
        let n = self.end_sessions(tenant, user, keep).await?;
        self.audit_user_id(AuditKind::SignOut, tenant, user, Some("all_sessions".into())).await;
        Ok(n)
    }

    /// Revokes every session of a user except `keep` as part of another operation (password
    /// reset or change, email change, disabling); returns how many were revoked.
    pub(super) async fn end_sessions(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>) -> Result<usize> {
        let revoked = self.0.store.revoke_user_sessions(tenant, user, keep, self.now()).await?;
        let n = revoked.len();
        self.announce(tenant, user, revoked).await;
        Ok(n)
    }

    /// Announces revoked sessions on the revocation bus (sockets and other instances' caches
    /// act on it), after forgetting them in this instance's session cache, so that the next
    /// request here is refused.
    pub(super) async fn announce(&self, tenant: TenantId, user: UserId, sessions: impl IntoIterator<Item = SessionId>) {
        let revocations: Vec<Revocation> =
            sessions.into_iter().map(|session| Revocation { tenant, session, user }).collect();
        if let Some(cache) = &self.0.sessions {
            for r in &revocations {
                cache.forget(r.tenant, r.session);
            }
        }
        if !revocations.is_empty() {
            self.0.revocations.publish(&revocations).await;
        }
    }

    /// The user's sessions that are still active, newest first.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn sessions(&self, tenant: TenantId, user: UserId) -> Result<Vec<Session>> {
        Ok(self.0.store.active_sessions(tenant, user, self.now()).await?)
    }

    /// Revokes the session `id` if it belongs to `user`; returns whether one was revoked.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn revoke_own_session(&self, tenant: TenantId, user: UserId, id: SessionId) -> Result<bool> {
        match self.0.store.session_with_user(tenant, id).await? {
            Some((session, _)) if session.user_id == user && session.revoked_at.is_none() => {
                self.sign_out(&session).await
            }
            _ => Ok(false),
        }
    }
}
