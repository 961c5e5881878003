//! Passwordless-first sign-up (the `graphql` surface's flow, API.md `graphql`): an address is
//! registered without a password and gets a code; the code then proves the mailbox, sets the
//! first password (checked by the [`PasswordPolicy`](crate::identity::PasswordPolicy)),
//! verifies the address and signs in.
//!
//! A *pending* user is one without a password whose address is not verified yet; a *full*
//! user has a password. Whether an address is registered, and in which state, is what this
//! flow's wire contract reveals, so these operations tell those states apart; every other rule
//! (code attempts, limits, mail to the stored address) is the one the other flows use.

use super::{Auth, NewUser, SignedIn, observed};
use crate::code::{CodePurpose, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{Email, Login, NewPassword, ParseError, PresentedPassword, TenantId, User};
use crate::limits::{LimitKind, address_key};
use crate::outbox::MailReceipt;
use crate::session::ClientMeta;

/// What [`Auth::register_email`] found or did.
#[derive(Debug)]
pub enum Registration {
    /// A pending user was created (or a pending user without any code left got one) and a
    /// code was queued for the address; the receipt tells how its first delivery went.
    CodeSent(MailReceipt),
    /// The address belongs to a full user (one with a password).
    FullUser,
    /// A code was sent to this pending user and is still valid.
    CodeStillValid,
    /// A code was sent to this pending user and has expired or been burnt by wrong guesses.
    CodeExpired,
}

/// The step of [`Auth::register_email`] that failed: the wire contract reports a failure to
/// store the user apart from a failure to store its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStep {
    /// Looking the address up, or creating the pending user.
    User,
    /// Storing the code.
    Code,
}

/// A failed [`Auth::register_email`]: the core error and the step it happened in.
#[derive(Debug)]
pub struct RegistrationFailed {
    /// Where it failed.
    pub step: RegistrationStep,
    /// Why.
    pub error: Error,
}

impl RegistrationFailed {
    fn at(step: RegistrationStep) -> impl Fn(Error) -> Self + Copy {
        move |error| Self { step, error }
    }
}

impl Auth {
    /// Registers `email` in `tenant` as a pending user, without a password, and queues a
    /// verification code for it. An address already registered is not touched: the outcome
    /// says whether it is a full user or a pending one whose code is still valid or has
    /// expired. Concurrent registrations of one address create one user.
    ///
    /// Limits: sign-ups per client address (IPv6 per /64) and code mails per recipient.
    ///
    /// # Errors
    /// [`RegistrationFailed`] with [`Error::RateLimited`] or [`Error::Internal`], and the step
    /// that failed.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn register_email(
        &self,
        tenant: TenantId,
        email: &Email,
        meta: &ClientMeta,
    ) -> Result<Registration, RegistrationFailed> {
        let result = async {
            let user = RegistrationFailed::at(RegistrationStep::User);
            if let Some(ip) = &meta.ip {
                self.limit(LimitKind::SignUpPerAddress, &address_key(ip)).await.map_err(user)?;
            }
            if let Some(state) = self.registration_state(tenant, email).await.map_err(user)? {
                return Ok(state);
            }
            self.limit_code_mail(tenant, email).await.map_err(user)?;
            let new = NewUser { email: Some(email.clone()), ..NewUser::default() };
            let created = match self.insert_new_user(tenant, new, None, false).await {
                Ok((created, _)) => created,
                // Registered concurrently: report that registration's state.
                Err(Error::EmailTaken) => {
                    return self
                        .registration_state(tenant, email)
                        .await
                        .map_err(user)?
                        .ok_or_else(|| user(Error::internal("a taken address without a user")));
                }
                Err(e) => return Err(user(e)),
            };
            let receipt = self
                .issue_code(&created, CodePurpose::VerifyEmail, None)
                .await
                .map_err(RegistrationFailed::at(RegistrationStep::Code))?;
            Ok(Registration::CodeSent(receipt))
        }
        .await;
        super::record("register_email", result.as_ref().map_or_else(|f| f.error.code(), |_| "ok"));
        result
    }

    /// The state of an address already registered, or `None` when it is free.
    async fn registration_state(&self, tenant: TenantId, email: &Email) -> Result<Option<Registration>> {
        let Some(record) = self.0.store.user_by_email(tenant, email).await? else {
            return Ok(None);
        };
        if record.user.has_password || record.user.email_verified {
            return Ok(Some(Registration::FullUser));
        }
        Ok(Some(match self.pending_code(&record.user, CodePurpose::VerifyEmail).await {
            Ok(_) => Registration::CodeStillValid,
            Err(Error::CodeExpired | Error::NoCodePending) => Registration::CodeExpired,
            Err(e) => return Err(e),
        }))
    }

    /// Replaces the code of a pending user (registered by [`Auth::register_email`], no
    /// password and not verified yet) with a fresh one, mailed to the stored address; the
    /// previous code stops working. The mail is queued, not awaited.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (code mails per recipient, counted before the lookup),
    /// [`Error::UserNotFound`] when the address has no pending user (unknown, or a full user),
    /// [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn request_new_code(&self, tenant: TenantId, email: &Email) -> Result<User> {
        observed("request_new_code", async {
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            if user.has_password || user.email_verified {
                return Err(Error::UserNotFound);
            }
            drop(self.issue_code(&user, CodePurpose::VerifyEmail, None).await?);
            Ok(user)
        })
        .await
    }

    /// Completes a passwordless sign-up: checks the code mailed to `email`, sets the user's
    /// first password, marks the address verified and signs in (a new session). The password
    /// arrives as its parse result, so that the checks keep the wire contract's order: unknown
    /// address, already verified, password refused by the policy, code expired or burnt,
    /// wrong code. Setting the password ends any other session of the user.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (code checks per client address, wrong codes per account),
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`], [`Error::InvalidInput`] (field
    /// `password`), [`Error::NoCodePending`], [`Error::CodeExpired`], [`Error::CodeMismatch`],
    /// [`Error::Overloaded`], [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn complete_registration(
        &self,
        tenant: TenantId,
        email: &Email,
        code: OneTimeCode,
        password: Result<NewPassword, ParseError>,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        observed("complete_registration", async {
            self.limit_code_check(meta).await?;
            let mut user = self.user_by_email(tenant, email).await?;
            if user.email_verified {
                return Err(Error::AlreadyVerified);
            }
            let password = password.map_err(|e| Error::invalid("password", e.0))?;
            self.consume_code(&user, CodePurpose::VerifyEmail, code).await?;
            let hash = self.0.hasher.hash(&password).await?;
            let now = self.now();
            self.0.store.set_password_hash(tenant, user.id, &hash, now).await?;
            self.user_changed();
            self.store_srp_verifier(&user, &hash, password.expose()).await;
            if !self.0.store.mark_email_verified(tenant, user.id, now).await? {
                return Err(Error::AlreadyVerified);
            }
            self.user_changed();
            user.email_verified = true;
            user.has_password = true;
            user.updated_at = now;
            self.end_sessions(tenant, user.id, None).await?;
            let session = self.start_session(&user, meta).await?;
            Ok(SignedIn { user, session })
        })
        .await
    }

    /// Signs in with an email address and password like [`Auth::sign_in`] (same limits, same
    /// hash work), but tells an address with no user that has a password
    /// ([`Error::UserNotFound`]: unknown, or pending) from a wrong password
    /// ([`Error::InvalidCredentials`]), as the `graphql` seed's `loginUser` does.
    ///
    /// # Errors
    /// As [`Auth::sign_in`], plus [`Error::UserNotFound`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_in_telling_unknown(
        &self,
        tenant: TenantId,
        email: &Email,
        password: &PresentedPassword,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        match self.sign_in(tenant, &Login::Email(email.clone()), password, meta).await {
            Err(Error::InvalidCredentials) => match self.0.store.user_by_email(tenant, email).await? {
                Some(r) if r.user.has_password => Err(Error::InvalidCredentials),
                _ => Err(Error::UserNotFound),
            },
            other => other,
        }
    }
}
