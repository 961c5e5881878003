//! One-time codes: issue (stored as a keyed hash, mailed), check, consume, with the attempt
//! limits of API.md "One-time codes".

use super::{Auth, Delivery, observed};
use crate::code::{self, CodePurpose, MAX_ATTEMPTS, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{Email, TenantId, User};
use crate::limits::LimitKind;
use crate::ports::{CodeRecord, Mail};

impl Auth {
    /// Counts a code mail to `to` against its recipient quota.
    pub(super) async fn limit_code_mail(&self, tenant: TenantId, to: &Email) -> Result<()> {
        self.limit(LimitKind::CodeMailPerRecipient, &format!("{tenant}/{}", to.normalized())).await
    }

    /// Mails a fresh verification code to the user with this email; the previous code stops
    /// working.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn resend_verification(&self, tenant: TenantId, email: &Email) -> Result<(User, Delivery)> {
        observed("resend_verification", async {
            // Counted before the lookup, so the limit reveals nothing about the address.
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            if user.email_verified {
                return Err(Error::AlreadyVerified);
            }
            let delivery = self.issue_code(&user, email, CodePurpose::VerifyEmail, None).await?;
            Ok((user, delivery))
        })
        .await
    }

    /// Checks a verification code and marks the email verified. Does not sign in; callers that
    /// sign in on activation call [`Auth::start_session`] next.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`], [`Error::NoCodePending`],
    /// [`Error::CodeExpired`], [`Error::CodeMismatch`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn verify_email(&self, tenant: TenantId, email: &Email, code: OneTimeCode) -> Result<User> {
        observed("verify_email", async {
            let mut user = self.user_by_email(tenant, email).await?;
            if user.email_verified {
                return Err(Error::AlreadyVerified);
            }
            self.consume_code(&user, CodePurpose::VerifyEmail, code).await?;
            let now = self.now();
            if !self.0.store.mark_email_verified(tenant, user.id, now).await? {
                return Err(Error::AlreadyVerified);
            }
            user.email_verified = true;
            user.updated_at = now;
            Ok(user)
        })
        .await
    }

    /// Generates, stores (replacing any pending one) and mails a code.
    pub(super) async fn issue_code(
        &self,
        user: &User,
        to: &Email,
        purpose: CodePurpose,
        target: Option<String>,
    ) -> Result<Delivery> {
        let code = OneTimeCode::generate();
        let now = self.now();
        let ttl = self.0.settings.code_ttl;
        self.0
            .store
            .put_code(&CodeRecord {
                tenant: user.tenant,
                user_id: user.id,
                purpose,
                code_hash: self.0.codes.hash(user.tenant, user.id, purpose, code),
                target,
                attempts: 0,
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        let mail = Mail {
            to: to.clone(),
            subject: purpose.mail_subject().to_owned(),
            text: code::mail_text(purpose, code, ttl.as_secs().div_ceil(60)),
        };
        match self.0.mailer.send(&mail).await {
            Ok(()) => {
                metrics::counter!("latchkey_mail_total", "outcome" => "sent").increment(1);
                Ok(Delivery::Sent)
            }
            Err(e) => {
                metrics::counter!("latchkey_mail_total", "outcome" => "failed").increment(1);
                tracing::error!(user = %user.id, to = %to.masked(), error = %e, "code mail could not be sent");
                Ok(Delivery::Failed)
            }
        }
    }

    /// Checks `code` against the pending code and consumes it on success. A wrong guess counts
    /// against the code; the [`MAX_ATTEMPTS`]th burns it. Returns the code's stored target.
    pub(super) async fn consume_code(
        &self,
        user: &User,
        purpose: CodePurpose,
        code: OneTimeCode,
    ) -> Result<Option<String>> {
        let record = self.pending_code(user, purpose).await?;
        let now = self.now();
        if self.0.codes.matches(user.tenant, user.id, purpose, code, &record.code_hash) {
            return match self
                .0
                .store
                .take_code(user.tenant, user.id, purpose, &record.code_hash, now, MAX_ATTEMPTS)
                .await?
            {
                Some(taken) => Ok(taken.target),
                // Consumed, replaced or burnt by a concurrent request in the meantime.
                None => Err(Error::NoCodePending),
            };
        }
        Err(self.count_wrong_guess(user, purpose, &record).await?)
    }

    /// The pending code, if it can still be guessed.
    pub(super) async fn pending_code(&self, user: &User, purpose: CodePurpose) -> Result<CodeRecord> {
        let record = self.0.store.code(user.tenant, user.id, purpose).await?.ok_or(Error::NoCodePending)?;
        if record.expires_at <= self.now() || record.attempts >= MAX_ATTEMPTS {
            return Err(Error::CodeExpired);
        }
        Ok(record)
    }

    pub(super) async fn count_wrong_guess(
        &self,
        user: &User,
        purpose: CodePurpose,
        record: &CodeRecord,
    ) -> Result<Error> {
        let attempts = self
            .0
            .store
            .record_code_failure(user.tenant, user.id, purpose, &record.code_hash)
            .await?
            .ok_or(Error::NoCodePending)?;
        Ok(Error::CodeMismatch { attempts_left: MAX_ATTEMPTS.saturating_sub(attempts) })
    }

    /// Whether `code` is the pending code, without consuming it; a wrong guess counts against
    /// the code like any other (API.md, `graphql` `isCodeValid`).
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::NoCodePending`], [`Error::CodeExpired`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn check_code(
        &self,
        tenant: TenantId,
        email: &Email,
        purpose: CodePurpose,
        code: OneTimeCode,
    ) -> Result<bool> {
        let user = self.user_by_email(tenant, email).await?;
        let record = self.pending_code(&user, purpose).await?;
        if self.0.codes.matches(tenant, user.id, purpose, code, &record.code_hash) {
            return Ok(true);
        }
        match self.count_wrong_guess(&user, purpose, &record).await? {
            Error::CodeMismatch { .. } => Ok(false),
            other => Err(other),
        }
    }
}
