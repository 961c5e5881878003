//! What the core needs from the outside world: a [`Store`] for persistence (one trait per
//! aggregate), a [`Mailer`] for outgoing mail and a [`RevocationBus`] for announcing revoked
//! sessions (the [`Clock`](crate::clock::Clock) and the rate limiter live in their own modules).
//!
//! The crates around the core implement these: `latchkey-store` (SQLite and PostgreSQL) and the
//! server's SMTP and log mailers. Every store method takes the tenant and filters by it; every
//! method that must be atomic under concurrency (consuming a code, rotating a refresh token,
//! claiming a unique email) is a single method here, so implementations can make it one
//! statement or one transaction.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditQuery};
use crate::code::CodePurpose;
use crate::identity::{ApiKeyId, Email, SessionId, TenantId, User, UserId};
use crate::session::{Revocation, Session};
use crate::tenant::{ApiKeyRecord, Tenant};
use tokio::sync::broadcast;

/// A unique key a write can collide with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKey {
    /// Email address (case-insensitive) within a tenant.
    Email,
    /// Username within a tenant.
    Username,
    /// External id within a tenant.
    ExternalId,
    /// Any other unique constraint.
    Other,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write would break a uniqueness rule enforced by the database.
    #[error("unique constraint violated: {0:?}")]
    Conflict(UniqueKey),
    /// The backend failed (connection, query, decoding, ...).
    #[error("storage backend failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A user row: the [`User`] plus the password hash (PHC string, `None` for users without one).
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The user.
    pub user: User,
    /// Argon2 PHC string.
    pub password_hash: Option<String>,
}

/// A pending one-time code. Only the keyed hash of the code is stored.
#[derive(Debug, Clone)]
pub struct CodeRecord {
    /// Tenant of the user.
    pub tenant: TenantId,
    /// The user the code was sent to.
    pub user_id: UserId,
    /// What the code is for; one pending code per user and purpose.
    pub purpose: CodePurpose,
    /// HMAC-SHA256 of the code (see [`crate::code::CodeHasher`]), 32 bytes.
    pub code_hash: Vec<u8>,
    /// Purpose-specific payload (for [`CodePurpose::ChangeEmail`]: the new address).
    pub target: Option<String>,
    /// Wrong guesses so far.
    pub attempts: u32,
    /// When the code was issued.
    pub created_at: OffsetDateTime,
    /// When the code stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// A refresh token row; the token itself is only stored as its keyed hash.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    /// HMAC-SHA256 of the token, 32 bytes; the primary key.
    pub token_hash: Vec<u8>,
    /// Tenant of the session.
    pub tenant: TenantId,
    /// The session the token belongs to.
    pub session_id: SessionId,
    /// When the token was issued.
    pub created_at: OffsetDateTime,
    /// When the token was exchanged for its successor, if it was.
    pub rotated_at: Option<OffsetDateTime>,
}

/// What happened when a refresh token was marked rotated.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// This call rotated it (it was fresh). `live` is its session and user as read in the same
    /// transaction (`None` if the session row is gone); the successor was stored only when
    /// that session was active at the rotation's moment and its user not disabled.
    Rotated {
        /// The token, now rotated.
        record: RefreshTokenRecord,
        /// Its session and user.
        live: Option<Box<(Session, UserRecord)>>,
    },
    /// It had been rotated before (at `record.rotated_at`); nothing was stored.
    AlreadyRotated(RefreshTokenRecord),
    /// No such token in this tenant.
    NotFound,
}

/// A signing key row. The private key is PKCS#8 DER, encrypted with the server secret.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Key id (`kid`).
    pub kid: String,
    /// Position in the ring: 1 for the first key, +1 per rotation. Unique, so two instances
    /// rotating at once create one new key, not two.
    pub generation: i64,
    /// JWS algorithm name (`EdDSA`, `ES256`, `RS256`).
    pub alg: String,
    /// The public key as a JWK (RFC 7517), JSON text.
    pub public_jwk: String,
    /// XChaCha20-Poly1305 nonce followed by the ciphertext of the PKCS#8 DER private key.
    pub private_key: Vec<u8>,
    /// When the key was created.
    pub created_at: OffsetDateTime,
}

/// What [`Store::purge_expired`] removes: rows older than these moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeBefore {
    /// Sessions that expired or were revoked, and codes that expired, before this.
    pub ended: OffsetDateTime,
    /// Users of this tenant whose email is still unverified and who were created before this
    /// moment (with their codes, sessions and tokens); `None` keeps them.
    pub unverified: Option<(TenantId, OffsetDateTime)>,
    /// Refresh tokens rotated before this (past the reuse window).
    pub rotated: OffsetDateTime,
}

/// Counts of rows removed by [`Store::purge_expired`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired or long-revoked sessions (their refresh tokens go with them).
    pub sessions: u64,
    /// Expired one-time codes.
    pub codes: u64,
    /// Accounts never verified in time.
    pub unverified_users: u64,
    /// Refresh tokens rotated past the reuse window.
    pub refresh_tokens: u64,
    /// Records of answered SRP challenges whose secret block has expired.
    pub srp_challenges: u64,
}

/// Persistence of the user directory, codes, sessions, refresh tokens, keys, SRP state, tenants,
/// realtime profiles and the audit trail: one trait per aggregate ([`UserStore`], [`CodeStore`],
/// [`SessionStore`], [`KeyStore`], [`SrpStore`], [`TenantStore`], [`RealtimeProfileStore`],
/// [`AuditStore`]), joined here.
///
/// Every method is scoped to one tenant. Implementations must map unique-constraint
/// violations to [`StoreError::Conflict`] with the right [`UniqueKey`].
#[async_trait]
pub trait Store:
    UserStore + CodeStore + SessionStore + KeyStore + SrpStore + TenantStore + RealtimeProfileStore + AuditStore
{
    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Deletes what [`PurgeBefore`] names: ended sessions (their refresh tokens go with them)
    /// and codes, unverified users, rotated refresh tokens. Runs in batches of at most 1000
    /// rows so it never holds locks for long.
    async fn purge_expired(&self, before: &PurgeBefore) -> Result<Purged, StoreError>;
}

/// Users: the directory itself.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a new user. Fails with `Conflict` if the email, username or external id is
    /// taken in the tenant.
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Inserts a new user with what a sign-up stores beside it, in one transaction: the
    /// user's sealed SRP verifier (see [`SrpStore::put_srp_verifier`]) and its first one-time
    /// code (see [`CodeStore::put_code`]), each when given. Fails as
    /// [`UserStore::insert_user`] does, and then stores nothing.
    async fn insert_user_with(
        &self,
        user: &UserRecord,
        srp_verifier: Option<&[u8]>,
        code: Option<&CodeRecord>,
    ) -> Result<(), StoreError>;
    /// Finds a user by id.
    async fn user_by_id(&self, tenant: TenantId, id: UserId) -> Result<Option<UserRecord>, StoreError>;
    /// Finds a user by email, compared with [`Email::normalized`].
    async fn user_by_email(&self, tenant: TenantId, email: &Email) -> Result<Option<UserRecord>, StoreError>;
    /// Finds a user by exact username.
    async fn user_by_username(&self, tenant: TenantId, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Marks the user's email verified; returns whether a row changed (false: already verified
    /// or no such user).
    async fn mark_email_verified(&self, tenant: TenantId, id: UserId, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// Replaces the password hash.
    async fn set_password_hash(
        &self,
        tenant: TenantId,
        id: UserId,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Replaces the email address and marks it verified. `Conflict(Email)` if taken.
    async fn set_email(
        &self,
        tenant: TenantId,
        id: UserId,
        email: &Email,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Sets or clears the disabled flag; returns whether the user exists.
    async fn set_disabled(
        &self,
        tenant: TenantId,
        id: UserId,
        disabled: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes the user and, by cascade, their codes, sessions and refresh tokens.
    async fn delete_user(&self, tenant: TenantId, id: UserId) -> Result<bool, StoreError>;
    /// Replaces the password hash, username and profile of a user whose email is still
    /// unverified, atomically with that check; returns false (and changes nothing) when the
    /// user is verified or gone. `Conflict(Username)` if the new username is taken.
    async fn replace_unverified_user(&self, user: &UserRecord) -> Result<bool, StoreError>;
    /// The users of `tenant` holding any of these normalised email addresses
    /// ([`Email::normalized`]), usernames or external ids, in one query (`latchkey import`
    /// checks a batch of rows at once). At most [`BATCH_LIMIT`] values in each list.
    async fn users_matching(
        &self,
        tenant: TenantId,
        emails: &[String],
        usernames: &[String],
        external_ids: &[String],
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// Which of `ids` (at most [`BATCH_LIMIT`]) belong to a user, of any tenant.
    async fn existing_user_ids(&self, ids: &[UserId]) -> Result<Vec<UserId>, StoreError>;
    /// Inserts `users` (at most [`BATCH_LIMIT`]) in one statement, skipping every one that
    /// would break a unique rule (id, or email, username or external id in its tenant);
    /// returns the ids inserted, in no particular order.
    async fn insert_users(&self, users: &[UserRecord]) -> Result<Vec<UserId>, StoreError>;
    /// Refreshes the query planner's statistics of the users table after a bulk insert, so that
    /// its plans follow the table's new size (PostgreSQL `ANALYZE users`; nothing on SQLite,
    /// whose plans for these lookups do not depend on statistics).
    async fn refresh_user_statistics(&self) -> Result<(), StoreError>;
}

/// The most values one batched store operation takes ([`UserStore::users_matching`],
/// [`UserStore::existing_user_ids`], [`UserStore::insert_users`]): 1000 users of 16 columns
/// stay under both backends' limits on bound parameters (SQLite 32,766, PostgreSQL 65,535).
pub const BATCH_LIMIT: usize = 1000;

/// One-time codes: at most one pending code per user and purpose.
#[async_trait]
pub trait CodeStore: Send + Sync + 'static {
    /// Stores a code, replacing any pending code of the same user and purpose.
    async fn put_code(&self, code: &CodeRecord) -> Result<(), StoreError>;
    /// The pending code of a user for a purpose, expired or not.
    async fn code(
        &self,
        tenant: TenantId,
        user: UserId,
        purpose: CodePurpose,
    ) -> Result<Option<CodeRecord>, StoreError>;
    /// Claims one guess at the pending code whose hash is `code_hash`, atomically: adds one to
    /// its attempt count only if the code is unexpired at `now` and has fewer than
    /// `max_attempts` attempts, and returns the new count; `None` (nothing changed) when the
    /// code is gone, replaced, expired or out of attempts. Claimed before the guess is
    /// compared, so concurrent guesses can never evaluate more than `max_attempts`.
    async fn claim_code_attempt(
        &self,
        tenant: TenantId,
        user: UserId,
        purpose: CodePurpose,
        code_hash: &[u8],
        now: OffsetDateTime,
        max_attempts: u32,
    ) -> Result<Option<u32>, StoreError>;
    /// Gives back an attempt claimed by a guess that turned out right (and did not consume
    /// the code), so that only wrong guesses stay counted.
    async fn release_code_attempt(
        &self,
        tenant: TenantId,
        user: UserId,
        purpose: CodePurpose,
        code_hash: &[u8],
    ) -> Result<(), StoreError>;
    /// Atomically removes and returns the pending code whose hash is `code_hash`, provided it is
    /// unexpired at `now` and has at most `max_attempts` attempts (the caller's own claimed
    /// attempt included). Exactly one of two
    /// concurrent callers gets it.
    async fn take_code(
        &self,
        tenant: TenantId,
        user: UserId,
        purpose: CodePurpose,
        code_hash: &[u8],
        now: OffsetDateTime,
        max_attempts: u32,
    ) -> Result<Option<CodeRecord>, StoreError>;
}

/// Sessions and their refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a new session.
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    /// A session and its user, in one lookup (the hot path of every authenticated request).
    async fn session_with_user(
        &self,
        tenant: TenantId,
        id: SessionId,
    ) -> Result<Option<(Session, UserRecord)>, StoreError>;
    /// Records use of the session at `at`.
    async fn touch_session(&self, tenant: TenantId, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Revokes one session; returns whether it was active.
    async fn revoke_session(&self, tenant: TenantId, id: SessionId, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// Revokes every active session of a user except `keep`; returns the revoked ids.
    async fn revoke_user_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        keep: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>, StoreError>;
    /// The user's sessions that are neither revoked nor expired at `now`, newest first.
    async fn active_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError>;

    /// Inserts a refresh token; inserting one that exists already is not an error (a
    /// concurrent refresh may have created the same successor).
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError>;
    /// The refresh token with this hash, if its row exists.
    async fn refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &[u8],
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;
    /// One refresh (the hot path of token refresh), in one transaction: marks the token
    /// `token_hash` rotated at `at` unless it already was (so exactly one of two concurrent
    /// calls rotates it), reads its session and user, and, when that session is active at `at`
    /// and its user not disabled, stores the successor `successor_hash` (created at `at`;
    /// storing one that exists already is not an error). See [`Rotation`].
    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<Rotation, StoreError>;
}

/// The signing key ring.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The signing keys, newest generation first, at most `limit`.
    async fn signing_keys(&self, tenant: TenantId, limit: u32) -> Result<Vec<KeyRecord>, StoreError>;
    /// Inserts a key; returns false (and inserts nothing) if its generation exists already.
    async fn insert_signing_key(&self, tenant: TenantId, key: &KeyRecord) -> Result<bool, StoreError>;
}

/// Carries session revocations to whoever must act on them at once: sockets signed in with
/// the session and caches of session state, on this instance and, with a backend that reaches
/// them, on every instance sharing the database.
///
/// The session row is revoked before anything is published, and every credential check reads
/// it, so a lost announcement delays pushes, never the refusal of a revoked credential.
#[async_trait]
pub trait RevocationBus: Send + Sync + 'static {
    /// Announces revoked sessions. Failures are logged by the implementation, not returned.
    async fn publish(&self, revocations: &[Revocation]);
    /// Receives every revocation published from now on, from every instance the bus reaches.
    fn subscribe(&self) -> broadcast::Receiver<Revocation>;
}

/// One outgoing message. The body is plain text; it may hold a one-time code, so `Debug`
/// shows only the recipient (masked) and subject.
#[derive(Clone)]
pub struct Mail {
    /// Recipient.
    pub to: Email,
    /// Subject line; names the purpose.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("to", &self.to).field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Why a mail could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("mail delivery failed: {0}")]
pub struct MailError(pub String);

/// Delivers mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends one message, returning once the relay accepted it.
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// State of Cognito's SRP sign-in (COGNITO-SRP.md): per-user verifiers, and the challenges
/// already answered.
#[async_trait]
pub trait SrpStore: Send + Sync + 'static {
    /// The user's sealed verifier (opaque bytes, see `Auth::srp_challenge`), if one is stored.
    async fn srp_verifier(&self, tenant: TenantId, user: UserId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores or replaces the user's sealed verifier.
    async fn put_srp_verifier(
        &self,
        tenant: TenantId,
        user: UserId,
        sealed: &[u8],
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Deletes every stored verifier (SRP turned off); returns how many there were.
    async fn delete_srp_verifiers(&self) -> Result<u64, StoreError>;
    /// Records that the challenge `id` has been answered, atomically: returns true for the
    /// first call with this id and false for every later one (a replayed secret block). The
    /// record may be purged after `expires_at`, when the block is refused for its age anyway.
    async fn use_srp_challenge(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

/// Tenants, their API keys, and the listing of a tenant's users (API.md, `projects`; the
/// operator CLI).
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Inserts a tenant and, in the same transaction, its first API key (if given): either
    /// both exist afterwards or neither. `Conflict(Other)` if the owner has a tenant already.
    async fn insert_tenant(&self, tenant: &Tenant, first_key: Option<&ApiKeyRecord>) -> Result<(), StoreError>;
    /// The tenant with this id.
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError>;
    /// The tenant owned by the project owner `owner` (a user of the owners' tenant).
    async fn tenant_of_owner(&self, owner: UserId) -> Result<Option<Tenant>, StoreError>;
    /// Every tenant, oldest first.
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Inserts an API key of an existing tenant.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// The key whose hash is `key_hash`, in any tenant, revoked or not.
    async fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The tenant's keys, revoked ones included, oldest first.
    async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes the tenant's key `id` at `at`; returns false when the tenant has no such
    /// unrevoked key.
    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// Records use of the key at `at`.
    async fn touch_api_key(&self, tenant: TenantId, id: ApiKeyId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// One page of the tenant's users, oldest first (then by id): at most `limit` after
    /// skipping `offset`.
    async fn list_users(&self, tenant: TenantId, limit: u32, offset: u64) -> Result<Vec<UserRecord>, StoreError>;
    /// The tenant's next `limit` users in the same order, after the user created at `after`'s
    /// time with its id (keyset paging: each page costs the same however deep); from the first
    /// when `after` is `None`.
    async fn users_after(
        &self,
        tenant: TenantId,
        after: Option<(OffsetDateTime, UserId)>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError>;
}

/// The profile record of the `realtime` surface (API.md `realtime`; seed
/// `000_a7dc8425a1030ba6.txt`, "set table keys: email, cogId; set logged in"): one per user,
/// never holding a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeProfile {
    /// Tenant of the user.
    pub tenant: TenantId,
    /// The user the record belongs to (deleted with the user).
    pub user_id: UserId,
    /// The user's identity id, `<region>:<uuid>` (the seed's `cogId`).
    pub identity_id: String,
    /// The username the client reported (the seed sends the email).
    pub username: String,
    /// The user's email address when the record was written.
    pub email: Email,
    /// Whether the client reported itself signed in (`loggedIn`).
    pub logged_in: bool,
    /// When the record was last written.
    pub updated_at: OffsetDateTime,
}

/// Realtime profile records (table `realtime_profiles`, migration 0003).
#[async_trait]
pub trait RealtimeProfileStore: Send + Sync + 'static {
    /// The record of a user, if one was written.
    async fn realtime_profile(&self, tenant: TenantId, user: UserId) -> Result<Option<RealtimeProfile>, StoreError>;
    /// Creates or replaces the record of `profile.user_id`, in one statement.
    async fn put_realtime_profile(&self, profile: &RealtimeProfile) -> Result<(), StoreError>;
}

/// The audit trail (table `audit_events`, migration 0005): security events, kept until the
/// retention (`LATCHKEY_AUDIT_RETENTION`) purges them. Rows name users and tenants without
/// foreign keys, so an account's events outlive the account.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Stores `events` (in one statement or transaction per call).
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// The events matching `query`, newest first, at most `query.limit`.
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes events that happened before `before`, in batches of at most 1000 rows; returns
    /// how many were deleted.
    async fn purge_audit_events(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
