//! Token sets a client presents as proof of its sign-in (the `realtime` surface, API.md
//! `realtime`; seed `000_a7dc8425a1030ba6.txt`, whose browser sends its access, ID and refresh
//! tokens over a WebSocket), and the profile records such clients keep.
//!
//! The seed's server trusted those tokens blindly; Latchkey verifies each one and that they
//! belong together, and never stores them. The refresh token is checked read-only: it is not
//! rotated, so presenting it here does not disturb the client's refresh chain.

use super::{Auth, observed};
use crate::error::{Error, Result};
use crate::identity::{Email, SessionId, TenantId, User};
use crate::ports::RealtimeProfile;
use crate::secret::constant_time_eq;
use crate::session::Session;
use crate::token::RefreshToken;

/// The tokens of one sign-in as a client presents them (the seed's `accessToken`, `idToken`,
/// `refreshToken`). `Debug` prints none of them.
#[derive(Clone)]
pub struct PresentedTokens<'a> {
    /// An access token (JWT, `typ: at+jwt`).
    pub access: &'a str,
    /// An ID token (JWT); `None` when the client did not send one (allowed only where the
    /// caller says so, e.g. sign-out).
    pub id: Option<&'a str>,
    /// The session's current refresh token (opaque); `None` as for `id`.
    pub refresh: Option<&'a RefreshToken>,
}

impl std::fmt::Debug for PresentedTokens<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedTokens")
            .field("id", &self.id.is_some())
            .field("refresh", &self.refresh.is_some())
            .finish_non_exhaustive()
    }
}

/// The sign-in a verified [`PresentedTokens`] proves.
#[derive(Debug, Clone)]
pub struct ProvenSession {
    /// The user, as stored now.
    pub user: User,
    /// The live session all the tokens belong to.
    pub session: Session,
    /// The user's identity id (`<region>:<uuid>`, see [`Auth::identity_id`]).
    pub identity_id: String,
}

impl Auth {
    /// Verifies that `tokens` are genuine, live tokens of one sign-in of the confirmed user of
    /// `tenant` whose email is `email`:
    ///
    /// * the access token and (when given) the ID token verify as in [`Auth::authenticate`] and
    ///   [`Auth::verify_id_token`]: signature by a key of the ring, `iss`, `typ`, an `aud` in
    ///   `audiences` (empty: any), `exp` in the future, and a live session of a user who is not
    ///   disabled, in `tenant`;
    /// * the refresh token (when given) is a current, unrotated refresh token of that same
    ///   session, looked up read-only (nothing is rotated or revoked, whatever is presented);
    /// * all tokens name the same session and user;
    /// * the user's email equals `email` (compared normalized, API.md "One directory") and is
    ///   verified;
    /// * when `identity_id` is given, it is the user's identity id (compared in constant time).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] (forged, another tenant's, foreign audience or type, tokens of
    /// different sessions,
    /// an unknown or rotated refresh token, another user's email or identity id),
    /// [`Error::TokenExpired`], [`Error::SessionRevoked`], [`Error::NotVerified`] (the email is
    /// not confirmed), [`Error::Internal`].
    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn verify_presented_tokens(
        &self,
        tokens: &PresentedTokens<'_>,
        tenant: TenantId,
        audiences: &[&str],
        email: &Email,
        identity_id: Option<&str>,
    ) -> Result<ProvenSession> {
        observed("verify_presented_tokens", async {
            let access = self.authenticate(tokens.access, audiences).await?;
            if access.session.tenant != tenant {
                return Err(Error::InvalidToken);
            }
            if let Some(id_token) = tokens.id {
                let id = self.verify_id_token(id_token, audiences).await?;
                if id.session.id != access.session.id || id.user.id != access.user.id {
                    return Err(Error::InvalidToken);
                }
            }
            if let Some(refresh) = tokens.refresh {
                let session = self.refresh_token_session(access.session.tenant, refresh).await?;
                if session != access.session.id {
                    return Err(Error::InvalidToken);
                }
            }
            let user = access.user;
            let owns_email = user.email.as_ref().is_some_and(|e| e.normalized() == email.normalized());
            if !owns_email {
                return Err(Error::InvalidToken);
            }
            if !user.email_verified {
                return Err(Error::NotVerified);
            }
            let own_id = self.identity_id(&user);
            if let Some(claimed) = identity_id
                && !constant_time_eq(claimed.as_bytes(), own_id.as_bytes())
            {
                return Err(Error::InvalidToken);
            }
            Ok(ProvenSession { user, session: access.session, identity_id: own_id })
        })
        .await
    }

    /// Whether `session` is still active at this moment: its row exists, is neither revoked nor
    /// expired, and its user is not disabled (the state every credential check reads). For
    /// long-lived connections, to notice revocations no announcement reached them (for example
    /// made by another process on SQLite, which has no bus between processes).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn session_active(&self, session: &Session) -> Result<bool> {
        let found = self.0.store.session_with_user(session.tenant, session.id).await?;
        Ok(found.is_some_and(|(s, record)| s.is_active(self.now()) && !record.user.disabled))
    }

    /// The session of a current (unrotated) refresh token of `tenant`, read-only.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for unknown or already rotated tokens, [`Error::Internal`].
    async fn refresh_token_session(&self, tenant: TenantId, token: &RefreshToken) -> Result<SessionId> {
        let hash = self.0.refresh.hash(token);
        match self.0.store.refresh_token(tenant, &hash).await? {
            Some(record) if record.rotated_at.is_none() => Ok(record.session_id),
            _ => Err(Error::InvalidToken),
        }
    }

    /// Records the realtime profile of a proven sign-in: `{cogId, username, email, loggedIn}`
    /// keyed by the user (and so by email and identity id), created or replaced. The tokens are
    /// not part of it. Returns the record as stored.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn record_realtime_profile(
        &self,
        proven: &ProvenSession,
        username: Option<&str>,
        logged_in: bool,
    ) -> Result<RealtimeProfile> {
        let email = proven.user.email.as_ref().ok_or(Error::InvalidToken)?;
        let existing = self.0.store.realtime_profile(proven.user.tenant, proven.user.id).await?;
        let username = match (username, existing) {
            (Some(u), _) => u.to_owned(),
            (None, Some(old)) => old.username,
            (None, None) => email.as_str().to_owned(),
        };
        let profile = RealtimeProfile {
            tenant: proven.user.tenant,
            user_id: proven.user.id,
            identity_id: proven.identity_id.clone(),
            username,
            email: email.clone(),
            logged_in,
            updated_at: self.now(),
        };
        self.0.store.put_realtime_profile(&profile).await?;
        Ok(profile)
    }
}
