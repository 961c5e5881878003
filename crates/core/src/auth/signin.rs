//! Sign-in: password checks with equal work for unknown logins, re-hashing of outdated hashes,
//! and the state checks that come only after a matching password.

use super::{Auth, SignedIn, observed};
use crate::audit::AuditKind;
use crate::error::{Error, Result};
use crate::identity::{Login, PresentedPassword, TenantId, User};
use crate::limits::{LimitKind, address_key};
use crate::ports::UserRecord;
use crate::session::ClientMeta;

/// Whether `record` can sign in only after a password reset: a verified user with no password
/// (brought by `latchkey import` without a hash, e.g. from a Cognito pool, which exports none).
/// An unverified user without one is a pending passwordless sign-up, told apart elsewhere.
pub(super) fn needs_reset(record: &UserRecord) -> bool {
    record.password_hash.is_none() && record.user.email_verified
}

impl Auth {
    /// Signs in with a login and password and creates a session.
    ///
    /// The password is checked first, with the same hash work whether or not the login exists;
    /// only a matching password reveals that the account is unverified or disabled. A hash with
    /// outdated parameters is replaced.
    ///
    /// Limits (API.md, "Guessing"): attempts per client address (IPv6 per /64), and failures
    /// per account and client address first, so that guessing from one place does not lock the
    /// owner out from another, then per account overall (at most 100 a day). Only failures
    /// count against the account.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::Overloaded`] (hash queue full),
    /// [`Error::InvalidCredentials`], [`Error::PasswordResetRequired`] (a verified user with no
    /// password, imported without a hash: whatever the password, after the same hash work, and
    /// counted as a failure), then [`Error::UserDisabled`] or [`Error::NotVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_in(
        &self,
        tenant: TenantId,
        login: &Login,
        password: &PresentedPassword,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        observed("sign_in", async {
            let account = match login {
                Login::Email(e) => format!("{tenant}/email/{}", e.normalized()),
                Login::Username(u) => format!("{tenant}/username/{}", u.as_str()),
            };
            let mut limits = Vec::with_capacity(2);
            if let Some(ip) = &meta.ip {
                let address = address_key(ip);
                self.limit(LimitKind::SignInPerAddress, &address).await?;
                limits.push((LimitKind::SignInFailuresPerLoginAndAddress, format!("{account}@{address}")));
            }
            limits.push((LimitKind::SignInFailuresPerLogin, account));
            let user = self
                .guarded(
                    &limits,
                    |e| matches!(e, Error::InvalidCredentials | Error::PasswordResetRequired),
                    self.check_password(tenant, login, password),
                )
                .await?;
            self.admit(tenant, user, meta).await
        })
        .await
    }

    /// The state checks that follow a proven credential (password or SRP proof), then the new
    /// session: only a user who proved the credential learns that the account is disabled or
    /// unverified.
    ///
    /// # Errors
    /// [`Error::UserDisabled`], [`Error::NotVerified`] (when the tenant requires verification),
    /// [`Error::Internal`].
    pub(super) async fn admit(&self, tenant: TenantId, user: User, meta: &ClientMeta) -> Result<SignedIn> {
        if user.disabled {
            self.audit_user(AuditKind::SignInFailed, &user, Some("disabled".into()));
            return Err(Error::UserDisabled);
        }
        if user.email.is_some() && !user.email_verified && self.requires_verification(tenant).await? {
            self.audit_user(AuditKind::SignInFailed, &user, Some("not_verified".into()));
            return Err(Error::NotVerified);
        }
        let session = self.start_session(&user, meta).await?;
        Ok(SignedIn { user, session })
    }

    /// Verifies a password for a login, re-hashing it if the parameters changed, and computing
    /// the user's SRP verifier if they have none that opens.
    pub(super) async fn check_password(
        &self,
        tenant: TenantId,
        login: &Login,
        password: &PresentedPassword,
    ) -> Result<User> {
        let record = match login {
            Login::Email(email) => self.0.store.user_by_email(tenant, email).await?,
            Login::Username(name) => self.0.store.user_by_username(tenant, name.as_str()).await?,
        };
        let stored = record.as_ref().and_then(|r| r.password_hash.as_deref());
        let verification = self.0.hasher.verify(password, stored).await?;
        if record.as_ref().is_some_and(needs_reset) {
            self.audit_refused_sign_in(tenant, login, record.as_ref());
            return Err(Error::PasswordResetRequired);
        }
        let record = match record {
            Some(r) if verification.matched => r,
            other => {
                self.audit_refused_sign_in(tenant, login, other.as_ref());
                return Err(Error::InvalidCredentials);
            }
        };
        if verification.needs_rehash {
            let hash = self.0.hasher.rehash(password).await?;
            self.0.store.set_password_hash(tenant, record.user.id, &hash, self.now()).await?;
            self.user_changed();
            tracing::info!(user = %record.user.id, "password re-hashed with current parameters");
            self.store_srp_verifier(&record.user, &hash, password.expose()).await;
        } else {
            self.ensure_srp_verifier(&record, password.expose()).await?;
        }
        Ok(record.user)
    }

    /// Re-authenticates a signed-in user (to confirm a destructive or account-changing
    /// action), limited like sign-in: failures per user (10 per 5 minutes), taken before the
    /// hash so a flood is refused at once.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::Overloaded`], [`Error::InvalidCredentials`].
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn confirm_password(&self, user: &User, password: &PresentedPassword) -> Result<()> {
        let limits = [(LimitKind::ReauthFailuresPerUser, format!("{}/{}", user.tenant, user.id))];
        self.guarded(&limits, |e| matches!(e, Error::InvalidCredentials), async {
            let record = self.0.store.user_by_id(user.tenant, user.id).await?.ok_or(Error::UserNotFound)?;
            let verification = self.0.hasher.verify(password, record.password_hash.as_deref()).await?;
            if !verification.matched {
                self.audit_user(AuditKind::SignInFailed, user, Some("reauthentication".into()));
                return Err(Error::InvalidCredentials);
            }
            Ok(())
        })
        .await
    }
}
