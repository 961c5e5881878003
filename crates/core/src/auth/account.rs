//! Account operations: lookups, password reset and change, email change, disabling and
//! deleting users, and the purge of ended rows.

use std::time::Duration;

use super::{Auth, Delivery, observed};
use crate::code::{CodePurpose, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{Email, NewPassword, PresentedPassword, TenantId, User, UserId};
use crate::session::Session;

impl Auth {
    /// Looks up a user by id.
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    pub async fn user(&self, tenant: TenantId, id: UserId) -> Result<User> {
        self.0.store.user_by_id(tenant, id).await?.map(|r| r.user).ok_or(Error::UserNotFound)
    }

    /// Finds a user by email (compared case-insensitively).
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    pub async fn user_by_email(&self, tenant: TenantId, email: &Email) -> Result<User> {
        self.0.store.user_by_email(tenant, email).await?.map(|r| r.user).ok_or(Error::UserNotFound)
    }

    /// Mails a password-reset code to the user with this email.
    ///
    /// # Errors
    /// [`Error::UserNotFound`] (surfaces that must not reveal accounts answer as if it was
    /// sent), [`Error::RateLimited`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn request_password_reset(&self, tenant: TenantId, email: &Email) -> Result<Delivery> {
        observed("request_password_reset", async {
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            self.issue_code(&user, email, CodePurpose::ResetPassword, None).await
        })
        .await
    }

    /// Sets a new password with a reset code. Resetting proves control of the mailbox, so it
    /// also verifies the email; every session of the user is revoked.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::NoCodePending`], [`Error::CodeExpired`],
    /// [`Error::CodeMismatch`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn reset_password(
        &self,
        tenant: TenantId,
        email: &Email,
        code: OneTimeCode,
        new_password: &NewPassword,
    ) -> Result<User> {
        observed("reset_password", async {
            let mut user = self.user_by_email(tenant, email).await?;
            self.consume_code(&user, CodePurpose::ResetPassword, code).await?;
            let hash = self.0.hasher.hash(new_password).await?;
            let now = self.now();
            self.0.store.set_password_hash(tenant, user.id, &hash, now).await?;
            if !user.email_verified {
                self.0.store.mark_email_verified(tenant, user.id, now).await?;
                user.email_verified = true;
            }
            user.has_password = true;
            self.sign_out_everywhere(tenant, user.id, None).await?;
            Ok(user)
        })
        .await
    }

    /// Changes the password of a signed-in user, who must give the current one. Every other
    /// session of the user is revoked; `current` stays.
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`] when the current password is wrong.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn change_password(
        &self,
        user: &User,
        current: &Session,
        old: &PresentedPassword,
        new: &NewPassword,
    ) -> Result<()> {
        observed("change_password", async {
            self.confirm_password(user, old).await?;
            let hash = self.0.hasher.hash(new).await?;
            self.0.store.set_password_hash(user.tenant, user.id, &hash, self.now()).await?;
            self.sign_out_everywhere(user.tenant, user.id, Some(current.id)).await?;
            Ok(())
        })
        .await
    }

    /// Starts an email change: mails a code to `new_email`. The current address stays in force
    /// until [`Auth::confirm_email_change`].
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::RateLimited`].
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn request_email_change(&self, user: &User, new_email: &Email) -> Result<Delivery> {
        observed("request_email_change", async {
            if self.0.store.user_by_email(user.tenant, new_email).await?.is_some() {
                return Err(Error::EmailTaken);
            }
            self.limit_code_mail(user.tenant, new_email).await?;
            self.issue_code(user, new_email, CodePurpose::ChangeEmail, Some(new_email.as_str().to_owned())).await
        })
        .await
    }

    /// Commits a pending email change with the code sent to the new address; the new address
    /// is verified by that code.
    ///
    /// # Errors
    /// [`Error::NoCodePending`], [`Error::CodeExpired`], [`Error::CodeMismatch`],
    /// [`Error::EmailTaken`] (someone registered the address in the meantime).
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn confirm_email_change(&self, user: &User, code: OneTimeCode) -> Result<User> {
        observed("confirm_email_change", async {
            let target = self.consume_code(user, CodePurpose::ChangeEmail, code).await?;
            let email = target
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(|e| Error::internal(format!("stored email change target: {e}")))?
                .ok_or_else(|| Error::internal("email change code without a target"))?;
            let now = self.now();
            self.0.store.set_email(user.tenant, user.id, &email, now).await?;
            Ok(User { email: Some(email), email_verified: true, updated_at: now, ..user.clone() })
        })
        .await
    }

    /// Disables or re-enables a user. A disabled user cannot sign in, and every credential of
    /// their sessions stops working at once (each use checks the user).
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn set_disabled(&self, tenant: TenantId, user: UserId, disabled: bool) -> Result<()> {
        if !self.0.store.set_disabled(tenant, user, disabled, self.now()).await? {
            return Err(Error::UserNotFound);
        }
        if disabled {
            self.sign_out_everywhere(tenant, user, None).await?;
        }
        Ok(())
    }

    /// Deletes a user with their codes, sessions and refresh tokens.
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn delete_user(&self, tenant: TenantId, user: UserId) -> Result<()> {
        let sessions = self.0.store.active_sessions(tenant, user, self.now()).await?;
        if !self.0.store.delete_user(tenant, user).await? {
            return Err(Error::UserNotFound);
        }
        self.announce(tenant, user, sessions.into_iter().map(|s| s.id)).await;
        tracing::info!(user = %user, "user deleted");
        Ok(())
    }

    /// Deletes codes and sessions that ended more than `retention` ago. Ended rows are kept
    /// that long so that an expired code still reads as expired rather than never sent, and a
    /// replayed refresh token of a recently revoked session is still recognised.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn purge_expired(&self, retention: Duration) -> Result<crate::ports::Purged> {
        Ok(self.0.store.purge_expired(self.now() - retention).await?)
    }
}
