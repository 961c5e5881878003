//! [`Auth`]: the operations every surface calls. Each rule of API.md's "Shared rules" is
//! written here once: verification policy, code attempts, password policy and hashing, session
//! creation and revocation, token issue and verification, refresh rotation with reuse
//! detection.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::code::{self, CodeHasher, CodePurpose, MAX_ATTEMPTS, OneTimeCode};
use crate::error::{Error, Result};
use crate::identity::{
    Email, ExternalId, Login, Password, PasswordPolicy, Profile, SessionId, TenantId, User, UserId, Username,
};
use crate::limits::{LimitKind, RateLimiter};
use crate::password::{HashParams, PasswordHasher};
use crate::ports::{CodeRecord, Mail, Mailer, RefreshTokenRecord, Rotation, Store, UserRecord};
use crate::secret::ServerSecret;
use crate::session::{ClientMeta, Revocation, Session};
use crate::time_util::seconds;
use crate::token::{
    ACCESS_TOKEN_TYP, Claims, Expectation, ID_TOKEN_TYP, KeyRing, RefreshToken, RefreshTokenHasher, SigningAlgorithm,
};

/// How often a session's `last_seen_at` is written at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Tunables of the core, each from a `LATCHKEY_*` setting of API.md "Configuration".
#[derive(Debug, Clone)]
pub struct Settings {
    /// Token issuer, `iss` (`LATCHKEY_PUBLIC_URL`).
    pub issuer: String,
    /// Lifetime of one-time codes (`LATCHKEY_CODE_TTL`, default 10 minutes).
    pub code_ttl: Duration,
    /// Lifetime of access tokens (`LATCHKEY_ACCESS_TOKEN_TTL`, default 15 minutes).
    pub access_token_ttl: Duration,
    /// Lifetime of sessions and their refresh tokens (`LATCHKEY_SESSION_TTL`, default 30 days).
    pub session_ttl: Duration,
    /// Grace window after a refresh token's rotation during which presenting it again returns
    /// the same successor (`LATCHKEY_REFRESH_REUSE_WINDOW`, default 10 seconds).
    pub refresh_reuse_window: Duration,
    /// Whether the default tenant requires a verified email to sign in
    /// (`LATCHKEY_REQUIRE_EMAIL_VERIFICATION`, default true).
    pub require_email_verification: bool,
    /// Password length rules (`LATCHKEY_PASSWORD_MIN_LENGTH`).
    pub password_policy: PasswordPolicy,
    /// Signing algorithm of new keys (`LATCHKEY_JWT_ALG`).
    pub signing_algorithm: SigningAlgorithm,
    /// Argon2id parameters for new hashes.
    pub hash_params: HashParams,
    /// Maximum concurrent password hashes (default: the number of cores).
    pub hash_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            code_ttl: Duration::from_secs(10 * 60),
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_window: Duration::from_secs(10),
            require_email_verification: true,
            password_policy: PasswordPolicy::default(),
            signing_algorithm: SigningAlgorithm::EdDSA,
            hash_params: HashParams::default(),
            hash_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Email address (needed for verification and email sign-in).
    pub email: Option<Email>,
    /// Username (for username sign-in).
    pub username: Option<Username>,
    /// External id.
    pub external_id: Option<ExternalId>,
    /// Password; `None` creates a user that must set one later (e.g. `graphql`'s
    /// `registerEmail`).
    pub password: Option<Password>,
    /// Profile attributes.
    pub profile: Profile,
}

/// Whether a code mail went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The relay accepted the mail.
    Sent,
    /// Sending failed (logged); the code is stored and the user can ask for a new one.
    Failed,
}

/// The result of [`Auth::sign_up`].
#[derive(Debug, Clone)]
pub struct SignedUp {
    /// The new user.
    pub user: User,
    /// The verification mail, when one was due (the user has an email and the tenant requires
    /// verification).
    pub verification: Option<Delivery>,
}

/// The result of a successful sign-in: the user and their new session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The signed-in user.
    pub user: User,
    /// The session created for this sign-in.
    pub session: Session,
}

/// A credential that passed every check: signature, expiry, session, user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user.
    pub user: User,
    /// The session the credential belongs to.
    pub session: Session,
    /// The credential's claims.
    pub claims: Claims,
}

/// Tokens minted on sign-in or refresh (OAuth 2.0 vocabulary, RFC 6749 section 5.1).
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// Access token (JWT, `typ: at+jwt`).
    pub access_token: String,
    /// ID token (JWT, OIDC claims).
    pub id_token: String,
    /// Refresh token (opaque).
    pub refresh_token: RefreshToken,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
}

/// Per-token claims a surface adds (e.g. Cognito's `token_use`), merged at the top level.
pub type ExtraClaims = serde_json::Map<String, serde_json::Value>;

/// What an [`Auth`] is built from.
pub struct Deps {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Outgoing mail.
    pub mailer: Arc<dyn Mailer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Attempt counting ([`crate::limits::Unlimited`] to switch limits off).
    pub limiter: Arc<dyn RateLimiter>,
}

struct Inner {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    limiter: Arc<dyn RateLimiter>,
    settings: Settings,
    hasher: PasswordHasher,
    codes: CodeHasher,
    refresh: RefreshTokenHasher,
    keys: KeyRing,
    revocations: broadcast::Sender<Revocation>,
}

/// The authentication service: one user directory, one session model. Cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("settings", &self.0.settings).finish_non_exhaustive()
    }
}

fn observe<T>(operation: &'static str, result: &Result<T>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("latchkey_auth_outcomes_total", "operation" => operation, "outcome" => outcome).increment(1);
}

impl Auth {
    /// Builds the service: prepares the password hasher (one dummy hash) and loads or creates
    /// the signing key ring.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails or holds keys sealed with another secret.
    pub async fn new(deps: Deps, secret: &ServerSecret, settings: Settings) -> Result<Self> {
        let hasher = PasswordHasher::new(settings.hash_params, settings.hash_concurrency)?;
        let keys = KeyRing::load(
            deps.store.clone(),
            secret.derive("signing-keys"),
            settings.signing_algorithm,
            settings.issuer.clone(),
            deps.clock.clone(),
        )
        .await?;
        let (revocations, _) = broadcast::channel(1024);
        Ok(Auth(Arc::new(Inner {
            store: deps.store,
            mailer: deps.mailer,
            clock: deps.clock,
            limiter: deps.limiter,
            hasher,
            codes: CodeHasher::new(secret.derive("codes")),
            refresh: RefreshTokenHasher::new(secret.derive("refresh-tokens")),
            keys,
            settings,
            revocations,
        })))
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The signing key ring (JWKS, rotation).
    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    /// The refresh-token hasher, for surfaces that bind further values to a refresh token.
    pub fn refresh_tokens(&self) -> &RefreshTokenHasher {
        &self.0.refresh
    }

    /// The current time by the injected clock.
    pub fn now(&self) -> OffsetDateTime {
        self.0.clock.now()
    }

    /// Checks that the store answers (for readiness probes).
    ///
    /// # Errors
    /// [`Error::Internal`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.0.store.ping().await?)
    }

    /// Receives every session revocation made through this instance from now on.
    pub fn subscribe_revocations(&self) -> broadcast::Receiver<Revocation> {
        self.0.revocations.subscribe()
    }

    /// Whether users of `tenant` must verify their email before signing in. Only the default
    /// tenant can require it (API.md, "Email verification").
    pub fn requires_verification(&self, tenant: TenantId) -> bool {
        tenant == TenantId::DEFAULT && self.0.settings.require_email_verification
    }

    // ---------------------------------------------------------------- sign-up and codes

    /// Counts one attempt of `kind` under `key`.
    async fn limit(&self, kind: LimitKind, key: &str) -> Result<()> {
        self.0.limiter.check(kind, key).await.map_err(|retry_after| {
            metrics::counter!("latchkey_rate_limited_total", "limit" => kind.as_str()).increment(1);
            Error::RateLimited { retry_after }
        })
    }

    /// Counts a code mail to `to` against its recipient quota.
    async fn limit_code_mail(&self, tenant: TenantId, to: &Email) -> Result<()> {
        self.limit(LimitKind::CodeMailPerRecipient, &format!("{tenant}/{}", to.normalized())).await
    }

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
        let result = async {
            if let Some(ip) = &meta.ip {
                self.limit(LimitKind::SignUpPerAddress, ip).await?;
            }
            self.sign_up_inner(tenant, new).await
        }
        .await;
        observe("sign_up", &result);
        result
    }

    /// Like [`Auth::sign_up`], but an address that is already registered is not revealed:
    /// its owner is mailed a notice instead and `Ok(None)` is returned, after the same hash
    /// work as a real sign-up.
    ///
    /// # Errors
    /// As [`Auth::sign_up`], except [`Error::EmailTaken`].
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

    async fn sign_up_inner(&self, tenant: TenantId, new: NewUser) -> Result<SignedUp> {
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

    /// Mails a fresh verification code to the user with this email; the previous code stops
    /// working.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn resend_verification(&self, tenant: TenantId, email: &Email) -> Result<(User, Delivery)> {
        let result = async {
            // Counted before the lookup, so the limit reveals nothing about the address.
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            if user.email_verified {
                return Err(Error::AlreadyVerified);
            }
            let delivery = self.issue_code(&user, email, CodePurpose::VerifyEmail, None).await?;
            Ok((user, delivery))
        }
        .await;
        observe("resend_verification", &result);
        result
    }

    /// Checks a verification code and marks the email verified. Does not sign in; callers that
    /// sign in on activation call [`Auth::start_session`] next.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::AlreadyVerified`], [`Error::NoCodePending`],
    /// [`Error::CodeExpired`], [`Error::CodeMismatch`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn verify_email(&self, tenant: TenantId, email: &Email, code: OneTimeCode) -> Result<User> {
        let result = async {
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
        }
        .await;
        observe("verify_email", &result);
        result
    }

    /// Finds a user by email (compared case-insensitively).
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    pub async fn user_by_email(&self, tenant: TenantId, email: &Email) -> Result<User> {
        self.0.store.user_by_email(tenant, email).await?.map(|r| r.user).ok_or(Error::UserNotFound)
    }

    /// Generates, stores (replacing any pending one) and mails a code.
    async fn issue_code(
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
    async fn consume_code(&self, user: &User, purpose: CodePurpose, code: OneTimeCode) -> Result<Option<String>> {
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
    async fn pending_code(&self, user: &User, purpose: CodePurpose) -> Result<CodeRecord> {
        let record = self.0.store.code(user.tenant, user.id, purpose).await?.ok_or(Error::NoCodePending)?;
        if record.expires_at <= self.now() || record.attempts >= MAX_ATTEMPTS {
            return Err(Error::CodeExpired);
        }
        Ok(record)
    }

    async fn count_wrong_guess(&self, user: &User, purpose: CodePurpose, record: &CodeRecord) -> Result<Error> {
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

    // ---------------------------------------------------------------- sign-in and sessions

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
        password: &Password,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        let result = async {
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
        }
        .await;
        observe("sign_in", &result);
        result
    }

    /// Verifies a password for a login, re-hashing it if the parameters changed.
    async fn check_password(&self, tenant: TenantId, login: &Login, password: &Password) -> Result<User> {
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
            let hash = self.0.hasher.hash(password).await?;
            self.0.store.set_password_hash(tenant, record.user.id, &hash, self.now()).await?;
            tracing::info!(user = %record.user.id, "password re-hashed with current parameters");
        }
        Ok(record.user)
    }

    /// Creates a new session for `user` (after sign-in, or after an activation that signs in).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn start_session(&self, user: &User, meta: &ClientMeta) -> Result<Session> {
        let now = self.now();
        let session = Session {
            id: SessionId::random(),
            tenant: user.tenant,
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.0.settings.session_ttl,
            revoked_at: None,
            user_agent: meta.user_agent.as_ref().map(|ua| ua.chars().take(512).collect()),
            ip: meta.ip.clone(),
        };
        self.0.store.insert_session(&session).await?;
        Ok(session)
    }

    /// Verifies an access token and the session it names: signature and claims (see
    /// [`KeyRing::verify`]), then the session row: it exists in the token's tenant, is neither
    /// revoked nor expired, and its user exists and is not disabled. Records the use on the
    /// session at most once a minute.
    ///
    /// `audiences` lists the accepted `aud` values (empty: any).
    ///
    /// # Errors
    /// [`Error::InvalidToken`], [`Error::TokenExpired`], [`Error::SessionRevoked`].
    pub async fn authenticate(&self, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        let claims = self.0.keys.verify(token, Expectation { typ: ACCESS_TOKEN_TYP, audiences }).await?;
        let (user, session) = self.session_of(&claims).await?;
        Ok(Authenticated { user, session, claims })
    }

    /// Verifies an ID token issued by Latchkey (signature, issuer, expiry, live session).
    ///
    /// # Errors
    /// As [`Auth::authenticate`].
    pub async fn verify_id_token(&self, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        let claims = self.0.keys.verify(token, Expectation { typ: ID_TOKEN_TYP, audiences }).await?;
        let (user, session) = self.session_of(&claims).await?;
        Ok(Authenticated { user, session, claims })
    }

    async fn session_of(&self, claims: &Claims) -> Result<(User, Session)> {
        let tenant = TenantId::parse(&claims.tid).map_err(|_| Error::InvalidToken)?;
        let sid = SessionId::parse(&claims.sid).map_err(|_| Error::InvalidToken)?;
        let (session, record) = self.0.store.session_with_user(tenant, sid).await?.ok_or(Error::SessionRevoked)?;
        let now = self.now();
        if !session.is_active(now) || record.user.disabled || UserId::parse(&claims.sub).ok() != Some(record.user.id) {
            return Err(Error::SessionRevoked);
        }
        if now - session.last_seen_at >= TOUCH_INTERVAL {
            self.0.store.touch_session(tenant, sid, now).await?;
        }
        Ok((record.user, session))
    }

    /// Revokes one session. Returns whether it was active.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn sign_out(&self, session: &Session) -> Result<bool> {
        let revoked = self.0.store.revoke_session(session.tenant, session.id, self.now()).await?;
        if revoked {
            self.announce(session.tenant, session.user_id, [session.id]);
        }
        observe("sign_out", &Ok::<_, Error>(()));
        Ok(revoked)
    }

    /// Revokes every session of a user except `keep`; returns how many were revoked.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn sign_out_everywhere(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>) -> Result<usize> {
        let revoked = self.0.store.revoke_user_sessions(tenant, user, keep, self.now()).await?;
        let n = revoked.len();
        self.announce(tenant, user, revoked);
        Ok(n)
    }

    fn announce(&self, tenant: TenantId, user: UserId, sessions: impl IntoIterator<Item = SessionId>) {
        for session in sessions {
            // No receivers is fine: nobody is listening.
            let _ = self.0.revocations.send(Revocation { tenant, session, user });
        }
    }

    // ---------------------------------------------------------------- tokens

    fn claims(
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
        let token = RefreshToken::generate();
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
    ///   so two tabs refreshing at once both continue.
    /// * A token rotated earlier is a replay: the whole session is revoked, which signs out the
    ///   legitimate holder too, and [`Error::RefreshTokenReused`] is returned.
    ///
    /// Returns the session, its user and the successor token.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for unknown tokens, [`Error::SessionRevoked`] when the session
    /// ended, [`Error::RefreshTokenReused`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        token: &RefreshToken,
    ) -> Result<(User, Session, RefreshToken)> {
        let result = self.rotate_inner(tenant, token).await;
        observe("refresh", &result);
        result
    }

    async fn rotate_inner(&self, tenant: TenantId, token: &RefreshToken) -> Result<(User, Session, RefreshToken)> {
        let now = self.now();
        let hash = self.0.refresh.hash(token);
        let record = match self.0.store.rotate_refresh_token(tenant, &hash, now).await? {
            Rotation::NotFound => return Err(Error::InvalidToken),
            Rotation::Rotated(record) => record,
            Rotation::AlreadyRotated(record) => {
                let rotated_at = record.rotated_at.unwrap_or(now);
                if now - rotated_at > self.0.settings.refresh_reuse_window {
                    let (session, _) = self
                        .0
                        .store
                        .session_with_user(tenant, record.session_id)
                        .await?
                        .ok_or(Error::SessionRevoked)?;
                    tracing::warn!(session = %record.session_id, "refresh token reused; revoking the session");
                    self.sign_out(&session).await?;
                    return Err(Error::RefreshTokenReused);
                }
                record
            }
        };
        let (session, user) =
            self.0.store.session_with_user(tenant, record.session_id).await?.ok_or(Error::SessionRevoked)?;
        if !session.is_active(now) || user.user.disabled {
            return Err(Error::SessionRevoked);
        }
        let successor = self.0.refresh.successor(token);
        self.0
            .store
            .insert_refresh_token(&RefreshTokenRecord {
                token_hash: self.0.refresh.hash(&successor),
                tenant,
                session_id: session.id,
                created_at: now,
                rotated_at: None,
            })
            .await?;
        Ok((user.user, session, successor))
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

    /// The user's sessions that are still active, newest first.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn sessions(&self, tenant: TenantId, user: UserId) -> Result<Vec<Session>> {
        Ok(self.0.store.active_sessions(tenant, user, self.now()).await?)
    }

    /// Revokes the session `id` if it belongs to `user`; returns whether one was revoked.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn revoke_own_session(&self, tenant: TenantId, user: UserId, id: SessionId) -> Result<bool> {
        match self.0.store.session_with_user(tenant, id).await? {
            Some((session, _)) if session.user_id == user && session.revoked_at.is_none() => {
                self.sign_out(&session).await
            }
            _ => Ok(false),
        }
    }

    /// Mails a password-reset code to the user with this email.
    ///
    /// # Errors
    /// [`Error::UserNotFound`] (surfaces that must not reveal accounts answer as if it was
    /// sent), [`Error::RateLimited`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn request_password_reset(&self, tenant: TenantId, email: &Email) -> Result<Delivery> {
        let result = async {
            self.limit_code_mail(tenant, email).await?;
            let user = self.user_by_email(tenant, email).await?;
            self.issue_code(&user, email, CodePurpose::ResetPassword, None).await
        }
        .await;
        observe("request_password_reset", &result);
        result
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
        new_password: &Password,
    ) -> Result<User> {
        let result = async {
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
        }
        .await;
        observe("reset_password", &result);
        result
    }

    /// Changes the password of a signed-in user, who must give the current one. Every other
    /// session of the user is revoked; `current` stays.
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`] when the current password is wrong.
    pub async fn change_password(&self, user: &User, current: &Session, old: &Password, new: &Password) -> Result<()> {
        let result = async {
            self.confirm_password(user, old).await?;
            let hash = self.0.hasher.hash(new).await?;
            self.0.store.set_password_hash(user.tenant, user.id, &hash, self.now()).await?;
            self.sign_out_everywhere(user.tenant, user.id, Some(current.id)).await?;
            Ok(())
        }
        .await;
        observe("change_password", &result);
        result
    }

    /// Starts an email change: mails a code to `new_email`. The current address stays in force
    /// until [`Auth::confirm_email_change`].
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::RateLimited`].
    pub async fn request_email_change(&self, user: &User, new_email: &Email) -> Result<Delivery> {
        let result = async {
            if self.0.store.user_by_email(user.tenant, new_email).await?.is_some() {
                return Err(Error::EmailTaken);
            }
            self.limit_code_mail(user.tenant, new_email).await?;
            self.issue_code(user, new_email, CodePurpose::ChangeEmail, Some(new_email.as_str().to_owned())).await
        }
        .await;
        observe("request_email_change", &result);
        result
    }

    /// Commits a pending email change with the code sent to the new address; the new address
    /// is verified by that code.
    ///
    /// # Errors
    /// [`Error::NoCodePending`], [`Error::CodeExpired`], [`Error::CodeMismatch`],
    /// [`Error::EmailTaken`] (someone registered the address in the meantime).
    pub async fn confirm_email_change(&self, user: &User, code: OneTimeCode) -> Result<User> {
        let result = async {
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
        }
        .await;
        observe("confirm_email_change", &result);
        result
    }

    /// Disables or re-enables a user. A disabled user cannot sign in, and every credential of
    /// their sessions stops working at once (each use checks the user).
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
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
    pub async fn delete_user(&self, tenant: TenantId, user: UserId) -> Result<()> {
        let sessions = self.0.store.active_sessions(tenant, user, self.now()).await?;
        if !self.0.store.delete_user(tenant, user).await? {
            return Err(Error::UserNotFound);
        }
        self.announce(tenant, user, sessions.into_iter().map(|s| s.id));
        tracing::info!(user = %user, "user deleted");
        Ok(())
    }

    /// Checks a user's password without signing in (e.g. to confirm a destructive action).
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`].
    pub async fn confirm_password(&self, user: &User, password: &Password) -> Result<()> {
        let record = self.0.store.user_by_id(user.tenant, user.id).await?.ok_or(Error::UserNotFound)?;
        let verification = self.0.hasher.verify(password, record.password_hash.as_deref()).await?;
        if verification.matched { Ok(()) } else { Err(Error::InvalidCredentials) }
    }

    /// Looks up a user by id.
    ///
    /// # Errors
    /// [`Error::UserNotFound`].
    pub async fn user(&self, tenant: TenantId, id: UserId) -> Result<User> {
        self.0.store.user_by_id(tenant, id).await?.map(|r| r.user).ok_or(Error::UserNotFound)
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
