//! Sign-up: creating users, with the verification mail when the tenant requires one.

use super::{Auth, NewUser, SignedUp, observed};
use crate::code::CodePurpose;
use crate::error::{Error, Result};
use crate::identity::{TenantId, User, UserId};
use crate::limits::LimitKind;
use crate::ports::{Mail, UserRecord};
use crate::session::ClientMeta;

impl Auth {
    /// Creates a user; when the user has an email and the tenant requires verification, mails
    /// a verification code. A mail failure does not undo the sign-up (see [`Delivery`]).
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::UsernameTaken`], [`Error::ExternalIdTaken`] (decided by
    /// the database's unique constraints, so concurrent sign-ups create exactly one user),
    /// [`Error::InvalidInput`] when neither email nor username is given,
    /// [`Error::RateLimited`] (per client address).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_up(&self, tenant: TenantId, new: NewUser, meta: &ClientMeta) -> Result<SignedUp> {
        observed("sign_up", async {
            if let Some(ip) = &meta.ip {
                self.limit(LimitKind::SignUpPerAddress, ip).await?;
            }
            self.sign_up_inner(tenant, new).await
        })
        .await
    }

    /// Like [`Auth::sign_up`], but an address that is already registered is not revealed:
    /// its owner is mailed a notice instead and `Ok(None)` is returned, after the same hash
    /// work as a real sign-up.
    ///
    /// # Errors
    /// As [`Auth::sign_up`], except [`Error::EmailTaken`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn sign_up_quietly(&self, tenant: TenantId, new: NewUser, meta: &ClientMeta) -> Result<Option<SignedUp>> {
        let email = new.email.clone();
        match self.sign_up(tenant, new, meta).await {
            Ok(signed_up) => Ok(Some(signed_up)),
            Err(Error::EmailTaken) => {
                if let Some(to) = email
                    && self.limit_code_mail(tenant, &to).await.is_ok()
                {
                    let mail = Mail {
                        to: to.clone(),
                        subject: "Sign-up attempt for your Latchkey account".into(),
                        text: "Someone tried to create an account with this email address, which already has one.\n\n\
                               If it was you, sign in or reset your password instead. If not, you can ignore this message.\n"
                            .into(),
                    };
                    if let Err(e) = self.0.mailer.send(&mail).await {
                        tracing::error!(to = %to.masked(), error = %e, "account notice could not be sent");
                    }
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn sign_up_inner(&self, tenant: TenantId, new: NewUser) -> Result<SignedUp> {
        if new.email.is_none() && new.username.is_none() {
            return Err(Error::invalid("email", "an email address or a username is required"));
        }
        let password_hash = match &new.password {
            Some(p) => Some(self.0.hasher.hash(p).await?),
            None => None,
        };
        let now = self.now();
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
        self.0.store.insert_user(&UserRecord { user: user.clone(), password_hash }).await?;
        tracing::info!(user = %user.id, "user created");
        let verification = match &user.email {
            Some(email) if self.requires_verification(tenant) => {
                Some(self.issue_code(&user, email, CodePurpose::VerifyEmail, None).await?)
            }
            _ => None,
        };
        Ok(SignedUp { user, verification })
    }
}
