//! Account operations: lookups, password reset and change, email change, disabling and
//! deleting users, and the purge of ended rows.

use std::time::Duration;

use super::{Auth, observed};
use crate::audit::AuditKind;
use crate::code::{CodePurpose, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{Email, NewPassword, PresentedPassword, TenantId, User, UserId};
use crate::limits::LimitKind;
use crate::ports::Mail;
use crate::session::{ClientMeta, Session};

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

    /// Queues a password-reset code for the stored address of the user with this email. The
    /// outcome (and its metric) is the same whether or not the address has an account: no
    /// surface learns more from this than that the request was accepted.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (per recipient, counted before the lookup), [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn request_password_reset(&self, tenant: TenantId, email: &Email) -> Result<()> {
        observed("request_password_reset", async {
            self.limit_code_mail(tenant, email).await?;
            match self.0.store.user_by_email(tenant, email).await? {
                Some(r) => drop(self.issue_code(&r.user, CodePurpose::ResetPassword, None).await?),
                None => tracing::debug!("password reset requested for an unknown address; nothing sent"),
            }
            Ok(())
        })
        .await
    }

    /// Sets a new password with a reset code. Resetting proves control of the mailbox, so it
    /// also verifies the email; every session of the user is revoked.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::UserNotFound`], [`Error::NoCodePending`],
    /// [`Error::CodeExpired`], [`Error::CodeMismatch`] (surfaces that must not reveal accounts
    /// answer all but the first alike; the first comes after the same number of failures
    /// whatever the account), [`Error::Overloaded`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn reset_password(
        &self,
        tenant: TenantId,
        email: &Email,
        code: OneTimeCode,
        new_password: &NewPassword,
        meta: &ClientMeta,
    ) -> Result<User> {
        observed("reset_password", async {
            self.limit_code_check(meta).await?;
            let mut user = self
                .typed_address_budget(tenant, email, CodePurpose::ResetPassword, async {
                    let user = self.user_by_email(tenant, email).await?;
                    self.consume_code(&user, CodePurpose::ResetPassword, code).await?;
                    Ok(user)
                })
                .await?;
            let hash = self.0.hasher.hash(new_password).await?;
            let now = self.now();
            self.0.store.set_password_hash(tenant, user.id, &hash, now).await?;
            self.user_changed();
            self.store_srp_verifier(&user, &hash, new_password.expose()).await;
            if !user.email_verified {
                self.0.store.mark_email_verified(tenant, user.id, now).await?;
                self.user_changed();
                user.email_verified = true;
            }
            user.has_password = true;
            self.end_sessions(tenant, user.id, None).await?;
            self.audit_user(AuditKind::PasswordReset, &user, None);
            Ok(user)
        })
        .await
    }

    /// Changes the password of a signed-in user, who must give the current one (limited like
    /// sign-in, see [`Auth::confirm_password`]). Every other session of the user is revoked;
    /// `current` stays.
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`] when the current password is wrong, [`Error::RateLimited`],
    /// [`Error::Overloaded`].
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
            self.user_changed();
            self.store_srp_verifier(user, &hash, new.expose()).await;
            self.end_sessions(user.tenant, user.id, Some(current.id)).await?;
            self.audit_user(AuditKind::PasswordChange, user, None);
            Ok(())
        })
        .await
    }

    /// Starts an email change for a signed-in user, who must give the current password: queues
    /// a code for `new_email`. The current address stays in force until
    /// [`Auth::confirm_email_change`]. Whether `new_email` is taken is not revealed here (the
    /// conflict surfaces at confirmation, to the holder of the code).
    ///
    /// # Errors
    /// [`Error::RateLimited`] (email changes per user, code mails per recipient, failed
    /// re-authentications), [`Error::InvalidCredentials`] (no code goes out),
    /// [`Error::Overloaded`].
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn request_email_change(
        &self,
        user: &User,
        current_password: &PresentedPassword,
        new_email: &Email,
    ) -> Result<()> {
        observed("request_email_change", async {
            self.limit(LimitKind::EmailChangePerUser, &format!("{}/{}", user.tenant, user.id)).await?;
            self.confirm_password(user, current_password).await?;
            self.limit_code_mail(user.tenant, new_email).await?;
            drop(self.issue_code(user, CodePurpose::ChangeEmail, Some(new_email)).await?);
            Ok(())
        })
        .await
    }

    /// Commits a pending email change with the code sent to the new address; the new address
    /// is verified by that code. The old address is told (which address the account moved to,
    /// and how to recover), and every other session of the user ends; `current` stays.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::NoCodePending`], [`Error::CodeExpired`],
    /// [`Error::CodeMismatch`], [`Error::EmailTaken`] (the address is someone else's).
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn confirm_email_change(&self, user: &User, current: &Session, code: OneTimeCode) -> Result<User> {
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
            self.user_changed();
            if let Some(old) = &user.email {
                drop(self.send_mail(Mail {
                    to: old.clone(),
                    subject: "Your Latchkey account's email address was changed".into(),
                    text: format!(
                        "The email address of your Latchkey account was changed from this address to {}.\n\n\
                         If you did not make this change, someone else may control your account: reset your \
                         password with the new address if you can reach it, or contact the service's \
                         administrator, who can disable the account and restore the address.\n",
                        email
                    ),
                }));
            }
            self.end_sessions(user.tenant, user.id, Some(current.id)).await?;
            let changed = User { email: Some(email), email_verified: true, updated_at: now, ..user.clone() };
            self.audit_user(AuditKind::EmailChange, &changed, None);
            Ok(changed)
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
        self.user_changed();
        if disabled {
            self.end_sessions(tenant, user, None).await?;
        }
        let kind = if disabled { AuditKind::AccountDisabled } else { AuditKind::AccountEnabled };
        self.audit_user_id(kind, tenant, user, None).await;
        Ok(())
    }

    /// Deletes a user with their codes, sessions and refresh tokens.
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant, user = %user))]
    pub async fn delete_user(&self, tenant: TenantId, user: UserId) -> Result<()> {
        let sessions = self.0.store.active_sessions(tenant, user, self.now()).await?;
        let email = self.0.store.user_by_id(tenant, user).await?.and_then(|r| r.user.email);
        if !self.0.store.delete_user(tenant, user).await? {
            return Err(Error::UserNotFound);
        }
        self.user_changed();
        self.audit(AuditKind::AccountDeleted, tenant, Some(user), email.map(|e| e.as_str().to_owned()), None);
        self.announce(tenant, user, sessions.into_iter().map(|s| s.id)).await;
        tracing::info!(user = %user, "user deleted");
        Ok(())
    }

    /// Deletes codes and sessions that ended more than `retention` ago (kept that long so that
    /// an expired code still reads as expired rather than never sent), accounts never verified
    /// within `LATCHKEY_UNVERIFIED_ACCOUNT_TTL`, and refresh-token rows rotated longer ago than
    /// the reuse window (a replay of such a token is still recognised by its tag, see
    /// [`crate::token::RefreshTokenHasher::session_of`]).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn purge_expired(&self, retention: Duration) -> Result<crate::ports::Purged> {
        let now = self.now();
        let horizons = crate::ports::PurgeBefore {
            ended: now - retention,
            unverified: self
                .requires_verification(TenantId::DEFAULT)
                .await?
                .then(|| (TenantId::DEFAULT, now - self.0.settings.unverified_account_ttl)),
            rotated: now - self.0.settings.refresh_reuse_window,
        };
        Ok(self.0.store.purge_expired(&horizons).await?)
    }
}
