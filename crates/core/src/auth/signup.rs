//! Sign-up: creating users, with the verification mail when the tenant requires one, and the
//! enumeration-safe variant that never reveals a registered address and never lets the first
//! registrant of an address keep an account they could not verify.

use super::{Auth, NewUser, SignedUp, observed, record};
use crate::audit::AuditKind;
use crate::code::CodePurpose;
use crate::error::{Error, Result};
use crate::identity::{TenantId, User, UserId};
use crate::limits::{LimitKind, address_key};
use crate::outbox::MailReceipt;
use crate::ports::{Mail, UserRecord};
use crate::session::ClientMeta;

impl Auth {
    /// Creates a user; when the user has an email and the tenant requires verification, queues
    /// a verification code for it. A mail failure does not undo the sign-up.
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::UsernameTaken`], [`Error::ExternalIdTaken`] (decided by
    /// the database's unique constraints, so concurrent sign-ups create exactly one user),
    /// [`Error::InvalidInput`] when neither email nor username is given,
    /// [`Error::RateLimited`] (per client address, IPv6 per /64), [`Error::Overloaded`],
    /// [`Error::TenantNotFound`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_up(&self, tenant: TenantId, new: NewUser, meta: &ClientMeta) -> Result<SignedUp> {
        observed("sign_up", async {
            self.limit_sign_up(meta).await?;
            let hash = self.hash_new_password(&new).await?;
            self.sign_up_inner(tenant, new, hash).await
        })
        .await
    }

    /// Like [`Auth::sign_up`], but whether the address was free is not revealed (the outcome
    /// and its metric are the same), after the same hash work either way:
    ///
    /// * a free address gets an account and a verification code;
    /// * a verified account's owner is mailed a notice (at its stored address);
    /// * an account that was never verified is taken over by this sign-up: its password and
    ///   profile are replaced, its sessions end, and a fresh code goes to the address, so
    ///   whoever proves the mailbox signs in with their own password and the first
    ///   registrant's password stops working (API.md, "Guessing"; pre-hijacking).
    ///
    /// # Errors
    /// As [`Auth::sign_up`], except [`Error::EmailTaken`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_up_quietly(&self, tenant: TenantId, new: NewUser, meta: &ClientMeta) -> Result<()> {
        let result = async {
            self.limit_sign_up(meta).await?;
            let hash = self.hash_new_password(&new).await?;
            let email = new.email.clone();
            match self.sign_up_inner(tenant, new.clone(), hash.clone()).await {
                Ok(_) => Ok(()),
                Err(Error::EmailTaken) => {
                    let existing = match &email {
                        Some(e) => self.0.store.user_by_email(tenant, e).await?,
                        None => None,
                    };
                    match existing {
                        Some(r) if !r.user.email_verified && self.requires_verification(tenant).await? => {
                            self.reclaim_unverified(r.user, new, hash).await
                        }
                        Some(r) => {
                            self.notify_taken(&r.user).await;
                            Ok(())
                        }
                        None => Ok(()),
                    }
                }
                Err(e) => Err(e),
            }
        }
        .await;
        record("sign_up_quietly", result.as_ref().map_or_else(Error::code, |()| "ok"));
        result
    }

    /// Like [`Auth::sign_up`] for surfaces whose wire contract reveals taken addresses
    /// (Cognito's `SignUp` answers `UsernameExistsException`), but an account for the same
    /// email that was never verified does not block the address: it is taken over as
    /// [`Auth::sign_up_quietly`] takes it over (password and profile replaced, sessions ended,
    /// a fresh code mailed to the address), and returned with `verification: None` (its code
    /// is queued all the same). So the first registrant of someone else's address cannot keep
    /// the account by having its owner confirm it later (pre-hijacking).
    ///
    /// # Errors
    /// As [`Auth::sign_up`]; [`Error::EmailTaken`] only for a verified address (or any taken
    /// address of a tenant that does not require verification).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_up_reclaiming(&self, tenant: TenantId, new: NewUser, meta: &ClientMeta) -> Result<SignedUp> {
        observed("sign_up", async {
            self.limit_sign_up(meta).await?;
            let hash = self.hash_new_password(&new).await?;
            let Some(email) = new.email.clone() else { return self.sign_up_inner(tenant, new, hash).await };
            match self.sign_up_inner(tenant, new.clone(), hash.clone()).await {
                Err(Error::EmailTaken) => match self.0.store.user_by_email(tenant, &email).await? {
                    Some(r) if !r.user.email_verified && self.requires_verification(tenant).await? => {
                        self.reclaim_unverified(r.user, new, hash).await?;
                        let user = self.user_by_email(tenant, &email).await?;
                        if user.email_verified {
                            // Verified in the meantime: an ordinary taken address now.
                            return Err(Error::EmailTaken);
                        }
                        Ok(SignedUp { user, verification: None })
                    }
                    _ => Err(Error::EmailTaken),
                },
                other => other,
            }
        })
        .await
    }

    async fn limit_sign_up(&self, meta: &ClientMeta) -> Result<()> {
        match &meta.ip {
            Some(ip) => self.limit(LimitKind::SignUpPerAddress, &address_key(ip)).await,
            None => Ok(()),
        }
    }

    async fn hash_new_password(&self, new: &NewUser) -> Result<Option<String>> {
        match &new.password {
            Some(p) => Ok(Some(self.0.hasher.hash(p).await?)),
            None => Ok(None),
        }
    }

    /// Gives an unverified account to a new sign-up for its address.
    async fn reclaim_unverified(&self, user: User, new: NewUser, hash: Option<String>) -> Result<()> {
        let now = self.now();
        let reclaimed = User {
            username: new.username,
            profile: new.profile,
            has_password: hash.is_some(),
            updated_at: now,
            ..user
        };
        let password = new.password;
        if !self
            .0
            .store
            .replace_unverified_user(&UserRecord { user: reclaimed.clone(), password_hash: hash.clone() })
            .await?
        {
            // Verified in the meantime: it is an ordinary taken address now.
            self.notify_taken(&reclaimed).await;
            return Ok(());
        }
        self.user_changed();
        tracing::info!(user = %reclaimed.id, "unverified account re-registered; previous password and sessions dropped");
        self.audit_user(AuditKind::SignUp, &reclaimed, Some("reclaimed_unverified".into()));
        if let (Some(password), Some(hash)) = (&password, &hash) {
            self.store_srp_verifier(&reclaimed, hash, password.expose()).await;
        }
        self.end_sessions(reclaimed.tenant, reclaimed.id, None).await?;
        drop(self.issue_code(&reclaimed, CodePurpose::VerifyEmail, None).await?);
        Ok(())
    }

    /// Tells a verified account's owner that someone tried to sign up with their address.
    async fn notify_taken(&self, user: &User) {
        let Some(to) = &user.email else { return };
        if self.limit_code_mail(user.tenant, to).await.is_err() {
            return;
        }
        drop(
            self.send_mail(Mail {
                to: to.clone(),
                subject: "Sign-up attempt for your Latchkey account".into(),
                text: "Someone tried to create an account with this email address, which already has one.\n\n\
                   If it was you, sign in or reset your password instead. If not, you can ignore this message.\n"
                    .into(),
            }),
        );
    }

    pub(super) async fn sign_up_inner(
        &self,
        tenant: TenantId,
        new: NewUser,
        password_hash: Option<String>,
    ) -> Result<SignedUp> {
        if new.email.is_none() && new.username.is_none() {
            return Err(Error::invalid("email", "an email address or a username is required"));
        }
        // Also refuses a tenant that does not exist, before anything is stored.
        let verify = self.requires_verification(tenant).await?;
        let (user, verification) = self.insert_new_user(tenant, new, password_hash, verify).await?;
        Ok(SignedUp { user, verification })
    }

    /// Stores a new, unverified user of `tenant` made from `new` (its password already hashed,
    /// or none) with the SRP verifier of its password and, when `with_code` and the user has
    /// an email address, a verification code, all in one transaction; the database's unique
    /// constraints decide conflicts. The code's mail is queued once the transaction commits.
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::UsernameTaken`], [`Error::ExternalIdTaken`],
    /// [`Error::Internal`].
    pub(super) async fn insert_new_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        password_hash: Option<String>,
        with_code: bool,
    ) -> Result<(User, Option<MailReceipt>)> {
        let now = self.now();
        let password = new.password;
        let user = User {
            id: UserId::random(),
            tenant,
            email: new.email,
            email_verified: false,
            username: new.username,
            external_id: new.external_id,
            profile: new.profile,
            has_password: password_hash.is_some(),
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        let verifier = match (&password, &password_hash) {
            (Some(password), Some(hash)) => self.sealed_srp_verifier(&user, hash, password.expose()).await,
            _ => None,
        };
        let code = match with_code && user.email.is_some() {
            true => Some(self.new_code(&user, CodePurpose::VerifyEmail, None)?),
            false => None,
        };
        let record = UserRecord { user, password_hash };
        self.0.store.insert_user_with(&record, verifier.as_deref(), code.as_ref().map(|c| &c.record)).await?;
        let user = record.user;
        tracing::info!(user = %user.id, has_password = user.has_password, "user created");
        self.audit_user(AuditKind::SignUp, &user, None);
        let receipt = code.map(|code| self.mail_code(&user, code));
        Ok((user, receipt))
    }
}
