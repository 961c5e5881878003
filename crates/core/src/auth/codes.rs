//! One-time codes: issue (stored as a keyed hash, mailed to the account's stored address),
//! check and consume, with the limits of API.md "One-time codes" and "Guessing": 5 wrong
//! guesses burn a code; 20 wrong guesses per account and purpose a day, across reissued codes,
//! then every check answers [`Error::RateLimited`] (a correct code included) until the window
//! closes; and code checks per client address.

use super::{Auth, observed, record};
use crate::audit::AuditKind;
use crate::code::{self, CodePurpose, MAX_ATTEMPTS, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{Email, TenantId, User};
use crate::limits::{LimitKind, address_key};
use crate::outbox::MailReceipt;
use crate::ports::{CodeRecord, Mail};
use crate::session::ClientMeta;
use std::future::Future;

impl Auth {
    /// Counts a code mail to `to` against its recipient quota.
    pub(super) async fn limit_code_mail(&self, tenant: TenantId, to: &Email) -> Result<()> {
        self.limit(LimitKind::CodeMailPerRecipient, &format!("{tenant}/{}", to.normalized())).await
    }

    /// Counts a code check from the client's address (IPv6 per /64), whatever the account.
    pub(super) async fn limit_code_check(&self, meta: &ClientMeta) -> Result<()> {
        match &meta.ip {
            Some(ip) => self.limit(LimitKind::CodeChecksPerAddress, &address_key(ip)).await,
            None => Ok(()),
        }
    }

    /// Runs a code check of the unauthenticated routes (verification, password reset,
    /// passwordless completion, `isCodeValid`) under the daily budget of failed checks for the
    /// address as typed, counted whether or not it has an account: a check that fails in any
    /// way (wrong, expired or burnt code, none pending, already verified, no such account)
    /// takes a unit, so the cut-off comes after the same number of failures for every address
    /// and does not tell accounts apart. (The account's own budget, across reissued codes,
    /// applies too: see `consume_code`.)
    pub(super) async fn typed_address_budget<T>(
        &self,
        tenant: TenantId,
        email: &Email,
        purpose: CodePurpose,
        check: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let key = [(
            LimitKind::CodeFailuresPerAccount,
            format!("{tenant}/email/{}/{}", email.normalized(), purpose.as_str()),
        )];
        let result = self
            .guarded(
                &key,
                |e| {
                    matches!(
                        e,
                        Error::CodeMismatch { .. }
                            | Error::CodeExpired
                            | Error::NoCodePending
                            | Error::AlreadyVerified
                            | Error::UserNotFound
                    )
                },
                check,
            )
            .await;
        if let Err(Error::UserNotFound) = &result {
            let detail = format!("{}: {}", purpose.as_str(), Error::UserNotFound.code());
            self.audit(AuditKind::CodeFailed, tenant, None, Some(email.as_str().to_owned()), Some(detail));
        }
        result
    }

    /// Records a failed check of `user`'s code for `purpose` when `result` is one.
    fn audit_code_check<T>(&self, user: &User, purpose: CodePurpose, result: &Result<T>) {
        if let Err(e @ (Error::CodeMismatch { .. } | Error::CodeExpired | Error::NoCodePending)) = result {
            self.audit_user(AuditKind::CodeFailed, user, Some(format!("{}: {}", purpose.as_str(), e.code())));
        }
    }

    /// Mails a fresh verification code to the stored address of the user with this email; the
    /// previous code stops working. For surfaces whose wire contract reveals accounts.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (per recipient, counted before the lookup),
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn resend_verification(&self, tenant: TenantId, email: &Email) -> Result<User> {
        observed("resend_verification", async {
            // Counted before the lookup, so the limit reveals nothing about the address.
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            if user.email_verified {
                return Err(Error::AlreadyVerified);
            }
            drop(self.issue_code(&user, CodePurpose::VerifyEmail, None).await?);
            Ok(user)
        })
        .await
    }

    /// Like [`Auth::resend_verification`], but unknown and verified addresses are not revealed:
    /// the outcome (and its metric) is the same whatever the account's state, and only a
    /// pending account gets a mail.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (per recipient), [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn resend_verification_quietly(&self, tenant: TenantId, email: &Email) -> Result<()> {
        let result = async {
            self.limit_code_mail(tenant, email).await?;
            match self.0.store.user_by_email(tenant, email).await? {
                Some(r) if !r.user.email_verified => {
                    drop(self.issue_code(&r.user, CodePurpose::VerifyEmail, None).await?);
                }
                Some(_) => tracing::debug!("verification requested for a verified address; nothing sent"),
                None => tracing::debug!("verification requested for an unknown address; nothing sent"),
            }
            Ok(())
        }
        .await;
        record("resend_verification_quietly", result.as_ref().map_or_else(Error::code, |()| "ok"));
        result
    }

    /// Checks a verification code and marks the email verified. Does not sign in; callers that
    /// sign in on activation call [`Auth::start_session`] next.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::UserNotFound`], [`Error::AlreadyVerified`],
    /// [`Error::NoCodePending`], [`Error::CodeExpired`], [`Error::CodeMismatch`]. Surfaces that
    /// must not reveal accounts answer all but the first alike; the first comes after the same
    /// number of failures whatever the account (see `typed_address_budget`).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn verify_email(
        &self,
        tenant: TenantId,
        email: &Email,
        code: OneTimeCode,
        meta: &ClientMeta,
    ) -> Result<User> {
        observed("verify_email", async {
            self.limit_code_check(meta).await?;
            self.typed_address_budget(tenant, email, CodePurpose::VerifyEmail, async {
                let mut user = self.user_by_email(tenant, email).await?;
                if user.email_verified {
                    return Err(Error::AlreadyVerified);
                }
                self.consume_code(&user, CodePurpose::VerifyEmail, code).await?;
                let now = self.now();
                if !self.0.store.mark_email_verified(tenant, user.id, now).await? {
                    return Err(Error::AlreadyVerified);
                }
                self.user_changed();
                user.email_verified = true;
                user.updated_at = now;
                Ok(user)
            })
            .await
        })
        .await
    }

    /// Generates and stores a code (replacing any pending one of the same purpose) and queues
    /// it for the account's stored address, or for `target` (the new address of an email
    /// change), never for an address as a client typed it (API.md, "Mail").
    pub(super) async fn issue_code(
        &self,
        user: &User,
        purpose: CodePurpose,
        target: Option<&Email>,
    ) -> Result<MailReceipt> {
        let pending = self.new_code(user, purpose, target)?;
        self.0.store.put_code(&pending.record).await?;
        Ok(self.mail_code(user, pending))
    }

    /// A fresh code for `user` and `purpose`, not yet stored: its record (the code's keyed
    /// hash) and what [`Auth::mail_code`] sends once the record is stored.
    ///
    /// # Errors
    /// [`Error::Internal`] for a user without an email address and no `target`.
    pub(super) fn new_code(&self, user: &User, purpose: CodePurpose, target: Option<&Email>) -> Result<PendingCode> {
        let to = target.or(user.email.as_ref()).ok_or_else(|| Error::internal("a code for a user without email"))?;
        let code = OneTimeCode::generate();
        let now = self.now();
        let record = CodeRecord {
            tenant: user.tenant,
            user_id: user.id,
            purpose,
            code_hash: self.0.codes.hash(user.tenant, user.id, purpose, code),
            target: target.map(|t| t.as_str().to_owned()),
            attempts: 0,
            created_at: now,
            expires_at: now + self.0.settings.code_ttl,
        };
        Ok(PendingCode { record, code, to: to.clone() })
    }

    /// Records and queues the mail of a code whose record is stored.
    pub(super) fn mail_code(&self, user: &User, pending: PendingCode) -> MailReceipt {
        let purpose = pending.record.purpose;
        self.audit_user(AuditKind::CodeSent, user, Some(purpose.as_str().to_owned()));
        self.send_mail(Mail {
            to: pending.to,
            subject: purpose.mail_subject().to_owned(),
            text: code::mail_text(purpose, pending.code, self.0.settings.code_ttl.as_secs().div_ceil(60)),
        })
    }

    /// The key of an account's daily budget of wrong codes for `purpose`.
    fn code_failures(user: &User, purpose: CodePurpose) -> [(LimitKind, String); 1] {
        [(LimitKind::CodeFailuresPerAccount, format!("{}/{}/{}", user.tenant, user.id, purpose.as_str()))]
    }

    /// Checks `code` against the pending code and consumes it on success. A wrong guess counts
    /// against the code (the [`MAX_ATTEMPTS`]th burns it) and against the account's daily
    /// budget. Returns the code's stored target.
    pub(super) async fn consume_code(
        &self,
        user: &User,
        purpose: CodePurpose,
        code: OneTimeCode,
    ) -> Result<Option<String>> {
        let result = self
            .guarded(&Self::code_failures(user, purpose), |e| matches!(e, Error::CodeMismatch { .. }), async {
                let record = self.guess(user, purpose, code).await?;
                match self
                    .0
                    .store
                    .take_code(user.tenant, user.id, purpose, &record.code_hash, self.now(), MAX_ATTEMPTS)
                    .await?
                {
                    Some(taken) => Ok(taken.target),
                    // Consumed or replaced by a concurrent request in the meantime.
                    None => Err(Error::NoCodePending),
                }
            })
            .await;
        self.audit_code_check(user, purpose, &result);
        result
    }

    /// The pending code, if it can still be guessed.
    pub(super) async fn pending_code(&self, user: &User, purpose: CodePurpose) -> Result<CodeRecord> {
        let record = self.0.store.code(user.tenant, user.id, purpose).await?.ok_or(Error::NoCodePending)?;
        if record.expires_at <= self.now() || record.attempts >= MAX_ATTEMPTS {
            return Err(Error::CodeExpired);
        }
        Ok(record)
    }

    /// One guess at the pending code: claims an attempt first, atomically in the store (so
    /// however many guesses arrive at once, at most [`MAX_ATTEMPTS`] are ever compared), then
    /// compares. A right guess returns the code with its attempt still claimed (the caller
    /// consumes the code or gives the attempt back); a wrong one keeps it counted.
    ///
    /// # Errors
    /// [`Error::NoCodePending`], [`Error::CodeExpired`] (expired, or burnt, also by concurrent
    /// guesses that took the last attempts), [`Error::CodeMismatch`].
    async fn guess(&self, user: &User, purpose: CodePurpose, code: OneTimeCode) -> Result<CodeRecord> {
        let record = self.pending_code(user, purpose).await?;
        let claimed = self
            .0
            .store
            .claim_code_attempt(user.tenant, user.id, purpose, &record.code_hash, self.now(), MAX_ATTEMPTS)
            .await?;
        let Some(attempts) = claimed else {
            return Err(Error::CodeExpired);
        };
        if self.0.codes.matches(user.tenant, user.id, purpose, code, &record.code_hash) {
            return Ok(record);
        }
        Err(Error::CodeMismatch { attempts_left: MAX_ATTEMPTS.saturating_sub(attempts) })
    }

    /// Whether `code` is the pending code, without consuming it; a wrong guess counts against
    /// the code and the account's budget like any other (API.md, `graphql` `isCodeValid`).
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::UserNotFound`], [`Error::NoCodePending`],
    /// [`Error::CodeExpired`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn check_code(
        &self,
        tenant: TenantId,
        email: &Email,
        purpose: CodePurpose,
        code: OneTimeCode,
        meta: &ClientMeta,
    ) -> Result<bool> {
        self.limit_code_check(meta).await?;
        let user = self.user_by_email(tenant, email).await?;
        let outcome = self
            .guarded(&Self::code_failures(&user, purpose), |e| matches!(e, Error::CodeMismatch { .. }), async {
                let record = self.guess(&user, purpose, code).await?;
                // A right guess is not a failure: its attempt goes back.
                self.0.store.release_code_attempt(tenant, user.id, purpose, &record.code_hash).await?;
                Ok(())
            })
            .await;
        self.audit_code_check(&user, purpose, &outcome);
        match outcome {
            Ok(()) => Ok(true),
            Err(Error::CodeMismatch { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }
}

/// A code generated by [`Auth::new_code`] whose mail waits until its record is stored.
pub(super) struct PendingCode {
    /// The row to store.
    pub(super) record: CodeRecord,
    /// The code itself, for the mail only.
    code: OneTimeCode,
    /// Where the mail goes.
    to: Email,
}
