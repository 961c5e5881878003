//! [`Auth`]: the operations every surface calls. Each rule of API.md's "Shared rules" is
//! written here once: verification policy, code attempts, password policy and hashing, session
//! creation and revocation, token issue and verification, refresh rotation with reuse
//! detection.
//!
//! One file per concern, each one `impl Auth` block: [`signup`](self) (sign-up), `codes`
//! (one-time codes), `signin` (password checks), `sessions` (session lifecycle and credential
//! checks), `tokens` (JWTs, refresh rotation, the key ring), `bound` (refresh tokens with a value
//! bound to them), `account` (reset, change, disable, delete), `identities` (Cognito-style
//! identity ids), `passwordless` (sign-up without a password first), `presented` (token sets
//! clients present, realtime profiles), `srp` (Cognito's SRP sign-in), `tenants` (tenants,
//! their API keys, credential checks bound to one tenant). This file holds the service itself
//! and what its operations share.

mod account;
pub(crate) mod bound;
mod codes;
mod identities;
pub(crate) mod import;
pub(crate) mod passwordless;
pub(crate) mod presented;
mod sessions;
mod signin;
mod signup;
pub(crate) mod srp;
pub(crate) mod tenants;
mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::audit::{self, AuditEvent, AuditKind, AuditLog, AuditQuery};
use crate::clock::Clock;
use crate::code::CodeHasher;
use crate::error::{Error, Result};
use crate::identity::{
    Email, ExternalId, Login, NewPassword, PasswordPolicy, Profile, TenantId, User, UserId, Username,
};
use crate::limits::{LimitKind, RateLimiter};
use crate::outbox::{MailQueue, MailReceipt};
use crate::password::{HashParams, PasswordHasher};
use crate::ports::{AuditStore, Mail, Mailer, RevocationBus, Store, UserRecord};
use crate::secret::{ServerSecret, SubKey};
use crate::session::{Revocation, Session};
use crate::session_cache::{SessionCache, SessionCacheSettings};
use crate::tenant::ApiKeyHasher;
use crate::token::{Claims, KeyRing, RefreshToken, RefreshTokenHasher, SigningAlgorithm};

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
    /// Password hashes that may wait for a hashing thread before new ones are refused with
    /// [`Error::Overloaded`] (`LATCHKEY_HASH_QUEUE`, default 256).
    pub hash_queue: usize,
    /// How long an account whose email was never verified is kept before the purge deletes it
    /// (`LATCHKEY_UNVERIFIED_ACCOUNT_TTL`, default 7 days).
    pub unverified_account_ttl: Duration,
    /// Mails that may wait for delivery (default 1024).
    pub mail_queue: usize,
    /// Region named in Cognito-style ids (`LATCHKEY_REGION`, default `local-1`).
    pub region: String,
    /// Cognito user pool id, `<region>_<pool name>` (`LATCHKEY_USER_POOL_ID`, default
    /// `<region>_latchkey`); the pool name enters every SRP verifier (COGNITO-SRP.md).
    pub user_pool_id: String,
    /// Whether Cognito SRP sign-in is offered (`LATCHKEY_SRP`, on, and the `cognito` surface
    /// mounted). Off: no SRP verifier is computed or kept (those stored earlier are deleted when
    /// the service starts), since a verifier is a cheaper offline-guessing target than an
    /// argon2id hash; [`Auth::srp_challenge`] still answers (with a stand-in) and every proof
    /// fails.
    pub srp: bool,
    /// Security events that may wait for the audit writer before new ones are dropped
    /// (default [`DEFAULT_QUEUE`](crate::audit::DEFAULT_QUEUE), 8192).
    pub audit_queue: usize,
    /// How long audit events are kept before [`Auth::purge_audit`] deletes them
    /// (`LATCHKEY_AUDIT_RETENTION`, default 90 days).
    pub audit_retention: Duration,
    /// The session cache of credential checks (see [`crate::session_cache`]).
    pub session_cache: SessionCacheSettings,
}

impl Settings {
    /// The SRP pool name: the part of [`Settings::user_pool_id`] after the first `_`.
    pub fn srp_pool_name(&self) -> &str {
        self.user_pool_id.split_once('_').map_or(self.user_pool_id.as_str(), |(_, name)| name)
    }
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
            hash_queue: 256,
            unverified_account_ttl: Duration::from_secs(7 * 24 * 3600),
            mail_queue: 1024,
            region: "local-1".into(),
            user_pool_id: "local-1_latchkey".into(),
            srp: true,
            audit_queue: crate::audit::DEFAULT_QUEUE,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            session_cache: SessionCacheSettings::default(),
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
    /// Password, checked by the policy; `None` creates a user that must set one later (e.g.
    /// `graphql`'s `registerEmail`).
    pub password: Option<NewPassword>,
    /// Profile attributes.
    pub profile: Profile,
}

/// The result of [`Auth::sign_up`].
#[derive(Debug)]
pub struct SignedUp {
    /// The new user.
    pub user: User,
    /// The verification mail, when one was due (the user has an email and the tenant requires
    /// verification): queued, not yet delivered.
    pub verification: Option<MailReceipt>,
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
    /// Where revocations are announced ([`crate::session::LocalRevocationBus`] in one process).
    pub revocations: Arc<dyn RevocationBus>,
}

struct Inner {
    store: Arc<dyn Store>,
    mail: MailQueue,
    clock: Arc<dyn Clock>,
    limiter: Arc<dyn RateLimiter>,
    settings: Settings,
    hasher: PasswordHasher,
    codes: CodeHasher,
    refresh: RefreshTokenHasher,
    identities: SubKey,
    srp_seal: SubKey,
    srp_mac: SubKey,
    api_keys: ApiKeyHasher,
    keys: KeyRing,
    revocations: Arc<dyn RevocationBus>,
    audit: AuditLog,
    /// `None` when [`Settings::session_cache`] turns it off.
    sessions: Option<Arc<SessionCache>>,
}

/// The authentication service: one user directory, one session model. Cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("settings", &self.0.settings).finish_non_exhaustive()
    }
}

/// Runs one public operation and counts its outcome in `latchkey_auth_outcomes_total`
/// (labels `operation` and `outcome`: `ok` or [`Error::code`]).
async fn observed<T>(operation: &'static str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let result = work.await;
    record(operation, result.as_ref().map_or_else(Error::code, |_| "ok"));
    result
}

/// Counts one outcome of `operation` in `latchkey_auth_outcomes_total`.
fn record(operation: &'static str, outcome: &'static str) {
    metrics::counter!("latchkey_auth_outcomes_total", "operation" => operation, "outcome" => outcome).increment(1);
}

/// Forgets every session revoked anywhere the bus reaches, for as long as the cache lives. A
/// receiver that fell behind has missed some: then everything is forgotten.
async fn forget_revoked(cache: std::sync::Weak<SessionCache>, mut revocations: broadcast::Receiver<Revocation>) {
    loop {
        let received = revocations.recv().await;
        let Some(cache) = cache.upgrade() else { return };
        match received {
            Ok(r) => cache.forget(r.tenant, r.session),
            Err(broadcast::error::RecvError::Lagged(_)) => cache.forget_all(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Auth {
    /// Builds the service: prepares the password hasher (one dummy hash), loads or creates
    /// the signing key ring, and deletes stored SRP verifiers when [`Settings::srp`] is off.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails or holds keys sealed with another secret.
    pub async fn new(deps: Deps, secret: &ServerSecret, settings: Settings) -> Result<Self> {
        let hasher = PasswordHasher::new(settings.hash_params, settings.hash_concurrency, settings.hash_queue)?;
        let keys = KeyRing::load(
            deps.store.clone(),
            secret.derive("signing-keys"),
            settings.signing_algorithm,
            settings.issuer.clone(),
            deps.clock.clone(),
        )
        .await?;
        if !settings.srp {
            let dropped = deps.store.delete_srp_verifiers().await?;
            if dropped > 0 {
                tracing::info!(dropped, "SRP is off: stored SRP verifiers deleted");
            }
        }
        let audit_store: Arc<dyn AuditStore> = deps.store.clone();
        let sessions = SessionCache::new(settings.session_cache).map(Arc::new);
        if let Some(cache) = &sessions {
            tokio::spawn(forget_revoked(Arc::downgrade(cache), deps.revocations.subscribe()));
        }
        Ok(Auth(Arc::new(Inner {
            sessions,
            audit: AuditLog::start(audit_store, settings.audit_queue),
            store: deps.store,
            mail: MailQueue::start(deps.mailer, settings.mail_queue),
            clock: deps.clock,
            limiter: deps.limiter,
            revocations: deps.revocations,
            hasher,
            codes: CodeHasher::new(secret.derive("codes")),
            identities: secret.derive("identity-ids"),
            srp_seal: secret.derive("srp-seal"),
            srp_mac: secret.derive("srp-mac"),
            api_keys: ApiKeyHasher::new(secret.derive("api-keys")),
            refresh: RefreshTokenHasher::new(secret.derive("refresh-tokens")),
            keys,
            settings,
        })))
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
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

    /// Receives every session revocation from now on: made through this instance, and through
    /// every other instance the [`RevocationBus`] reaches.
    pub fn subscribe_revocations(&self) -> broadcast::Receiver<Revocation> {
        self.0.revocations.subscribe()
    }

    /// Whether users of `tenant` must verify their email before signing in (API.md, "Email
    /// verification"): for the default tenant, `LATCHKEY_REQUIRE_EMAIL_VERIFICATION`; for
    /// every other tenant, its own setting (tenants of `projects` and the owners' tenant do
    /// not require it).
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], [`Error::Internal`].
    pub async fn requires_verification(&self, tenant: TenantId) -> Result<bool> {
        if tenant == TenantId::DEFAULT {
            return Ok(self.0.settings.require_email_verification);
        }
        let tenant = self.0.store.tenant(tenant).await?.ok_or(Error::TenantNotFound)?;
        Ok(tenant.settings.require_email_verification)
    }

    /// Waits until queued mail is delivered or given up on, at most `timeout` (graceful
    /// shutdown). Returns whether the queue is empty.
    pub async fn flush_mail(&self, timeout: Duration) -> bool {
        self.0.mail.flush(timeout).await
    }

    /// Queues a mail; never waits for the relay.
    fn send_mail(&self, mail: Mail) -> MailReceipt {
        self.0.mail.enqueue(mail)
    }

    /// Counts one attempt of `kind` under `key`. A refusal is an audit event
    /// ([`AuditKind::RateLimited`], `detail` the limit's name) of the tenant that starts the
    /// key (`<tenant>/...`), else of the default tenant; it names no account.
    async fn limit(&self, kind: LimitKind, key: &str) -> Result<()> {
        self.0.limiter.check(kind, key).await.map_err(|retry_after| {
            metrics::counter!("latchkey_rate_limited_total", "limit" => kind.as_str()).increment(1);
            let tenant = key.split_once('/').and_then(|(t, _)| TenantId::parse(t).ok()).unwrap_or(TenantId::DEFAULT);
            self.audit(AuditKind::RateLimited, tenant, None, None, Some(kind.as_str().to_owned()));
            Error::RateLimited { retry_after }
        })
    }

    /// Forgets this instance's cached sessions after a change to a user's row, so that the
    /// next credential check here reads the change (see [`crate::session_cache`]). Such
    /// changes are rare next to credential checks, so everything is forgotten rather than
    /// tracked per user.
    fn user_changed(&self) {
        if let Some(cache) = &self.0.sessions {
            cache.forget_all();
        }
    }

    /// Records a security event (see [`crate::audit`]) with the current request context;
    /// never waits for the store.
    fn audit(
        &self,
        kind: AuditKind,
        tenant: TenantId,
        user_id: Option<UserId>,
        email: Option<String>,
        detail: Option<String>,
    ) {
        self.0.audit.record(audit::event(kind, self.now(), tenant, user_id, email, detail));
    }

    /// Records a refused password sign-in ([`AuditKind::SignInFailed`]): `detail`
    /// `unknown_user` (the address as typed, no user id), `no_password` or `wrong_password`.
    fn audit_refused_sign_in(&self, tenant: TenantId, login: &Login, record: Option<&UserRecord>) {
        match record {
            Some(r) => {
                let detail = if r.password_hash.is_some() { "wrong_password" } else { "no_password" };
                self.audit_user(AuditKind::SignInFailed, &r.user, Some(detail.into()));
            }
            None => {
                let typed = match login {
                    Login::Email(e) => Some(e.as_str().to_owned()),
                    Login::Username(_) => None,
                };
                self.audit(AuditKind::SignInFailed, tenant, None, typed, Some("unknown_user".into()));
            }
        }
    }

    /// Records a security event about the user `id` of `tenant`, with the address their account
    /// stores (one lookup; none when it fails or the user is gone).
    async fn audit_user_id(&self, kind: AuditKind, tenant: TenantId, id: UserId, detail: Option<String>) {
        let email = self.0.store.user_by_id(tenant, id).await.ok().flatten().and_then(|r| r.user.email);
        self.audit(kind, tenant, Some(id), email.map(|e| e.as_str().to_owned()), detail);
    }

    /// Records a security event about `user`, with the address their account stores.
    fn audit_user(&self, kind: AuditKind, user: &User, detail: Option<String>) {
        self.audit(kind, user.tenant, Some(user.id), user.email.as_ref().map(|e| e.as_str().to_owned()), detail);
    }

    /// Waits until every audit event recorded before this call is stored (tests, and
    /// operator commands before they close the database).
    pub async fn flush_audit(&self) {
        self.0.audit.flush().await;
    }

    /// Audit events dropped so far because the queue was full or the store failed (also
    /// counted in `latchkey_audit_dropped_total`).
    pub fn audit_dropped(&self) -> u64 {
        self.0.audit.dropped()
    }

    /// Stored audit events matching `query`, newest first (for `latchkey audit`).
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        Ok(self.0.store.audit_events(query).await?)
    }

    /// Deletes audit events older than [`Settings::audit_retention`]; returns how many.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn purge_audit(&self) -> Result<u64> {
        let before = self.now() - self.0.settings.audit_retention;
        Ok(self.0.store.purge_audit_events(before).await?)
    }

    /// Runs `attempt` under limits on failures: a unit of each `(kind, key)` is taken first
    /// (so a flood of concurrent guesses is refused at once), and given back unless the attempt
    /// failed in a way `is_failure` counts. A refused unit gives back those already taken.
    async fn guarded<T>(
        &self,
        limits: &[(LimitKind, String)],
        is_failure: impl Fn(&Error) -> bool,
        attempt: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        for (taken, (kind, key)) in limits.iter().enumerate() {
            if let Err(e) = self.limit(*kind, key).await {
                for (kind, key) in &limits[..taken] {
                    self.0.limiter.refund(*kind, key).await;
                }
                return Err(e);
            }
        }
        let result = attempt.await;
        if !matches!(&result, Err(e) if is_failure(e)) {
            for (kind, key) in limits {
                self.0.limiter.refund(*kind, key).await;
            }
        }
        result
    }
}
