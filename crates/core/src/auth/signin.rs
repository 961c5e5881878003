//! Sign-in: password checks with equal work for unknown logins, re-hashing of outdated hashes,
//! and the state checks that come only after a matching password.

use super::{Auth, SignedIn, observed};
use crate::error::{Error, Result};
use crate::identity::{Login, PresentedPassword, TenantId, User};
use crate::limits::LimitKind;
use crate::session::ClientMeta;

impl Auth {
    /// Signs in with a login and password and creates a session.
    ///
    /// The password is checked first, with the same hash work whether or not the login exists;
    /// only a matching password reveals that the account is unverified or disabled. A hash with
    /// outdated parameters is replaced.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (per login and per client address), [`Error::InvalidCredentials`],
    /// then [`Error::UserDisabled`] or [`Error::NotVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_in(
        &self,
        tenant: TenantId,
        login: &Login,
        password: &PresentedPassword,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        observed("sign_in", async {
            if let Some(ip) = &meta.ip {
                self.limit(LimitKind::SignInPerAddress, ip).await?;
            }
            let key = match login {
                Login::Email(e) => format!("{tenant}/email/{}", e.normalized()),
                Login::Username(u) => format!("{tenant}/username/{}", u.as_str()),
            };
            self.limit(LimitKind::SignInPerLogin, &key).await?;
            let user = self.check_password(tenant, login, password).await?;
            if user.disabled {
                return Err(Error::UserDisabled);
            }
            if self.requires_verification(tenant) && user.email.is_some() && !user.email_verified {
                return Err(Error::NotVerified);
            }
            let session = self.start_session(&user, meta).await?;
            Ok(SignedIn { user, session })
        })
        .await
    }

    /// Verifies a password for a login, re-hashing it if the parameters changed.
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
        let Some(record) = record.filter(|_| verification.matched) else {
            return Err(Error::InvalidCredentials);
        };
        if verification.needs_rehash {
            let hash = self.0.hasher.rehash(password).await?;
            self.0.store.set_password_hash(tenant, record.user.id, &hash, self.now()).await?;
            tracing::info!(user = %record.user.id, "password re-hashed with current parameters");
        }
        Ok(record.user)
    }

    /// Checks a user's password without signing in (e.g. to confirm a destructive action).
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`].
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn confirm_password(&self, user: &User, password: &PresentedPassword) -> Result<()> {
        let record = self.0.store.user_by_id(user.tenant, user.id).await?.ok_or(Error::UserNotFound)?;
        let verification = self.0.hasher.verify(password, record.password_hash.as_deref()).await?;
        if verification.matched { Ok(()) } else { Err(Error::InvalidCredentials) }
    }
}
