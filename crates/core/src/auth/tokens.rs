//! Tokens: access and ID tokens (JWTs signed by the key ring), opaque refresh tokens with
//! rotation and reuse detection, and the key ring's public face (JWKS, rotation).

use time::OffsetDateTime;

use super::{Auth, ExtraClaims, TokenSet, observed};
use crate::audit::AuditKind;
use crate::error::{Error, Result};
use crate::identity::{SessionId, TenantId, User};
use crate::limits::LimitKind;
use crate::ports::{RefreshTokenRecord, Rotation};
use crate::session::Session;
use crate::time_util::seconds;
use jsonwebtoken::jwk::JwkSet;

use crate::token::{ACCESS_TOKEN_TYP, Claims, ID_TOKEN_TYP, RefreshKind, RefreshToken, SigningAlgorithm};

impl Auth {
    pub(super) fn claims(
        &self,
        session: &Session,
        user: &User,
        audience: &str,
        exp: OffsetDateTime,
        extra: ExtraClaims,
    ) -> Claims {
        let now = self.now();
        Claims {
            iss: self.0.settings.issuer.clone(),
            sub: user.id.to_string(),
            aud: audience.to_owned(),
            exp: seconds(exp),
            iat: seconds(now),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session.id.to_string(),
            tid: session.tenant.to_string(),
            extra,
        }
    }

    /// An access token valid for the whole session (the `session` cookie of `users`, the
    /// `token` of `graphql` and `projects`): revocation still ends it at once, because every
    /// use checks the session row.
    ///
    /// # Errors
    /// [`Error::Internal`] when signing fails.
    pub async fn session_token(&self, session: &Session, user: &User, audience: &str) -> Result<String> {
        let claims = self.claims(session, user, audience, session.expires_at, ExtraClaims::new());
        self.0.keys.sign(ACCESS_TOKEN_TYP, &claims).await
    }

    /// A short-lived access token (`LATCHKEY_ACCESS_TOKEN_TTL`, never beyond the session's
    /// end) with `extra` claims. Returns the token and its lifetime in seconds.
    ///
    /// # Errors
    /// [`Error::Internal`] when signing fails.
    pub async fn access_token(
        &self,
        session: &Session,
        user: &User,
        audience: &str,
        extra: ExtraClaims,
    ) -> Result<(String, u64)> {
        let now = self.now();
        let exp = (now + self.0.settings.access_token_ttl).min(session.expires_at);
        let claims = self.claims(session, user, audience, exp, extra);
        let lifetime = u64::try_from(claims.exp - claims.iat).unwrap_or(0);
        Ok((self.0.keys.sign(ACCESS_TOKEN_TYP, &claims).await?, lifetime))
    }

    /// An ID token (OIDC Core section 2) with the user's `email`, `email_verified` and profile
    /// claims, plus `extra`. Lives as long as an access token.
    ///
    /// # Errors
    /// [`Error::Internal`] when signing fails.
    pub async fn id_token(
        &self,
        session: &Session,
        user: &User,
        audience: &str,
        mut extra: ExtraClaims,
    ) -> Result<String> {
        use serde_json::Value;
        if let Some(email) = &user.email {
            extra.insert("email".into(), Value::String(email.to_string()));
            extra.insert("email_verified".into(), Value::Bool(user.email_verified));
        }
        let p = &user.profile;
        for (name, value) in [
            ("given_name", &p.given_name),
            ("family_name", &p.family_name),
            ("phone_number", &p.phone_number),
            ("address", &p.address),
            ("picture", &p.picture),
        ] {
            if let Some(v) = value {
                let v = if name == "address" {
                    // OIDC Core section 5.1.1: the address claim is an object.
                    serde_json::json!({ "formatted": v })
                } else {
                    Value::String(v.clone())
                };
                extra.insert(name.into(), v);
            }
        }
        if let Some(username) = &user.username {
            extra.insert("preferred_username".into(), Value::String(username.as_str().to_owned()));
        }
        extra.insert("auth_time".into(), Value::from(seconds(session.created_at)));
        let now = self.now();
        let exp = (now + self.0.settings.access_token_ttl).min(session.expires_at);
        let claims = self.claims(session, user, audience, exp, extra);
        self.0.keys.sign(ID_TOKEN_TYP, &claims).await
    }

    /// A new refresh token for the session, stored as its keyed hash.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn refresh_token(&self, session: &Session) -> Result<RefreshToken> {
        self.issue_refresh_token(session, RefreshKind::Bare).await
    }

    /// Stores and returns a new refresh token of `kind` for the session.
    pub(super) async fn issue_refresh_token(&self, session: &Session, kind: RefreshKind) -> Result<RefreshToken> {
        let token = self.0.refresh.issue(session.id, kind);
        self.0
            .store
            .insert_refresh_token(&RefreshTokenRecord {
                token_hash: self.0.refresh.hash(&token),
                tenant: session.tenant,
                session_id: session.id,
                created_at: self.now(),
                rotated_at: None,
            })
            .await?;
        Ok(token)
    }

    /// Exchanges a refresh token for its successor (rotation on every use, RFC 6749 section
    /// 10.4; OAuth 2.0 Security BCP section 4.14.2).
    ///
    /// * A fresh token is marked rotated and its successor stored.
    /// * A token rotated less than `refresh_reuse_window` ago returns the same successor again,
    ///   so two tabs refreshing at once both continue, as long as that successor has not been
    ///   used itself.
    /// * A token rotated earlier, or whose successor was used, is a replay: the whole session
    ///   is revoked, which signs out the legitimate holder too, and
    ///   [`Error::RefreshTokenReused`] is returned. So is a token this server issued whose row
    ///   was purged after its rotation.
    /// * Refreshes are limited per session ([`LimitKind::RefreshPerSession`]).
    /// * The token of a bound pair ([`Auth::refresh_pair`]) is refused here, before anything is
    ///   rotated or revoked: it refreshes only with its bound value.
    ///
    /// Returns the session, its user and the successor token.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for unknown tokens and tokens of bound pairs,
    /// [`Error::SessionRevoked`] when the session ended, [`Error::RefreshTokenReused`],
    /// [`Error::RateLimited`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        token: &RefreshToken,
    ) -> Result<(User, Session, RefreshToken)> {
        observed("refresh", async {
            if matches!(self.0.refresh.issued(token), Some((_, RefreshKind::Bound))) {
                return Err(Error::InvalidToken);
            }
            self.rotate_inner(tenant, token, RefreshKind::Bare).await
        })
        .await
    }

    /// Rotates `token` into a successor of `kind` (see [`Auth::rotate_refresh_token`]). A fresh
    /// token costs one store transaction ([`crate::ports::SessionStore::rotate_refresh_token`]):
    /// the rotation, the session and user it serves, and the successor. The per-session limit
    /// is counted first for the tokens this server issues (they name their session), so a
    /// refused refresh rotates nothing.
    pub(super) async fn rotate_inner(
        &self,
        tenant: TenantId,
        token: &RefreshToken,
        kind: RefreshKind,
    ) -> Result<(User, Session, RefreshToken)> {
        let now = self.now();
        let hash = self.0.refresh.hash(token);
        let successor = self.0.refresh.successor(token, kind);
        let successor_hash = self.0.refresh.hash(&successor);
        let named = self.0.refresh.session_of(token);
        if let Some(session) = named {
            self.limit(LimitKind::RefreshPerSession, &format!("{tenant}/{session}")).await?;
        }
        let (record, live) = match self.0.store.rotate_refresh_token(tenant, &hash, &successor_hash, now).await? {
            Rotation::NotFound => {
                // A token this server issued whose row is gone was rotated and purged after the
                // reuse window (or its session ended long ago): a replay all the same.
                return match named {
                    Some(session) if self.revoke_for_reuse(tenant, session).await? => Err(Error::RefreshTokenReused),
                    _ => Err(Error::InvalidToken),
                };
            }
            Rotation::Rotated { record, live } => (record, live),
            Rotation::AlreadyRotated(record) => {
                let rotated_at = record.rotated_at.unwrap_or(now);
                // The grace window returns the same successor only while that successor has
                // not been used itself; otherwise the chain would fork.
                let successor_used =
                    self.0.store.refresh_token(tenant, &successor_hash).await?.is_some_and(|r| r.rotated_at.is_some());
                if successor_used || now - rotated_at > self.0.settings.refresh_reuse_window {
                    self.revoke_for_reuse(tenant, record.session_id).await?;
                    return Err(Error::RefreshTokenReused);
                }
                let live = self.0.store.session_with_user(tenant, record.session_id).await?.map(Box::new);
                if live.as_ref().is_some_and(|l| l.0.is_active(now) && !l.1.user.disabled) {
                    self.0
                        .store
                        .insert_refresh_token(&RefreshTokenRecord {
                            token_hash: successor_hash,
                            tenant,
                            session_id: record.session_id,
                            created_at: now,
                            rotated_at: None,
                        })
                        .await?;
                }
                (record, live)
            }
        };
        if named.is_none() {
            self.limit(LimitKind::RefreshPerSession, &format!("{tenant}/{}", record.session_id)).await?;
        }
        let (session, user) = *live.ok_or(Error::SessionRevoked)?;
        if !session.is_active(now) || user.user.disabled {
            return Err(Error::SessionRevoked);
        }
        self.audit_user(AuditKind::Refresh, &user.user, None);
        Ok((user.user, session, successor))
    }

    /// Revokes a refresh token by ending its session, so its access and ID tokens stop working
    /// too (RFC 7009 section 2.1: revoking a refresh token ends the grant it belongs to;
    /// Cognito `RevokeToken`). Rotated tokens of the session revoke it as well. Returns whether
    /// an active session was ended; a token this server did not issue, the token of a bound
    /// pair (it acts only with its bound value), or one of a session that already ended is not
    /// an error (RFC 7009 section 2.2) and ends nothing.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn revoke_refresh_token(&self, tenant: TenantId, token: &RefreshToken) -> Result<bool> {
        let session = match self.0.refresh.issued(token) {
            // The token of a bound pair acts only with its bound value, here too.
            Some((_, RefreshKind::Bound)) => return Ok(false),
            Some((session, RefreshKind::Bare)) => Some(session),
            None => self.0.store.refresh_token(tenant, &self.0.refresh.hash(token)).await?.map(|r| r.session_id),
        };
        let Some(session) = session else { return Ok(false) };
        match self.0.store.session_with_user(tenant, session).await? {
            Some((session, _)) if session.revoked_at.is_none() => self.sign_out(&session).await,
            _ => Ok(false),
        }
    }

    /// Revokes a session whose refresh token was replayed; returns whether the session exists.
    async fn revoke_for_reuse(&self, tenant: TenantId, session: SessionId) -> Result<bool> {
        let Some((session, record)) = self.0.store.session_with_user(tenant, session).await? else {
            return Ok(false);
        };
        tracing::warn!(session = %session.id, "refresh token reused; revoking the session");
        if self.0.store.revoke_session(tenant, session.id, self.now()).await? {
            self.announce(tenant, session.user_id, [session.id]).await;
        }
        self.audit_user(AuditKind::RefreshReuse, &record.user, None);
        Ok(true)
    }

    /// Access, ID and refresh tokens for a session.
    ///
    /// # Errors
    /// [`Error::Internal`] when signing or the store fails.
    pub async fn token_set(&self, session: &Session, user: &User, audience: &str) -> Result<TokenSet> {
        let (access_token, expires_in) = self.access_token(session, user, audience, ExtraClaims::new()).await?;
        let id_token = self.id_token(session, user, audience, ExtraClaims::new()).await?;
        let refresh_token = self.refresh_token(session).await?;
        Ok(TokenSet { access_token, id_token, refresh_token, expires_in })
    }

    /// The public signing keys, current and previous, as a JWK Set (RFC 7517 section 5), for
    /// `/.well-known/jwks.json`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn jwks(&self) -> Result<JwkSet> {
        self.0.keys.jwks().await
    }

    /// Creates a new current signing key (the previous one keeps verifying until the next
    /// rotation) and returns its `kid`, for `latchkey keys rotate`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    #[tracing::instrument(skip_all)]
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let kid = self.0.keys.rotate().await?;
        self.audit(AuditKind::KeyCreated, TenantId::DEFAULT, None, None, Some(format!("signing_key {kid}")));
        Ok(kid)
    }

    /// The JWS algorithm of the current signing key (`alg`), for discovery documents.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        self.0.keys.algorithm()
    }
}
