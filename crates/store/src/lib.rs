//! # latchkey-store
//!
//! Latchkey's [`Store`] on SQLite (the zero-setup default: one file, WAL, busy timeout, foreign
//! keys on) and PostgreSQL (the scale-out backend: any number of Latchkey instances share one
//! database). Both run the same queries (see `sql.rs`) against schemas kept in
//! `migrations/sqlite` and `migrations/postgres`, applied at start-up and by `latchkey migrate`.
//! Uniqueness (email, username, external id per tenant) is enforced by the database.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::audit::{AuditEvent, AuditKind, AuditQuery};
use latchkey_core::code::CodePurpose;
use latchkey_core::identity::ApiKeyId;
use latchkey_core::identity::{Email, ExternalId, Profile, SessionId, TenantId, User, UserId, Username};
use latchkey_core::ports::TenantStore;
use latchkey_core::ports::{
    AuditStore, CodeRecord, CodeStore, KeyRecord, KeyStore, PurgeBefore, Purged, RealtimeProfile, RealtimeProfileStore,
    RefreshTokenRecord, Rotation, SessionStore, SrpStore, Store, StoreError, UniqueKey, UserRecord, UserStore,
};
use latchkey_core::session::Session;
use latchkey_core::tenant::{ApiKeyRecord, Tenant, TenantSettings};
use latchkey_core::time_util::{from_millis, millis};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;

mod batch;
#[macro_use]
mod sql;
pub mod revocations;

pub use revocations::PgRevocationBus;

sql_store!(
    /// The store on SQLite.
    SqliteStore,
    sqlx::Sqlite
);
sql_store!(
    /// The store on PostgreSQL.
    PgStore,
    sqlx::Postgres
);

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`, or does not parse.
    #[error("unsupported database URL (expected sqlite://PATH, sqlite::memory: or postgres://...): {0}")]
    Url(String),
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Which backend a [`Database`] runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite; `path` is the database file (`None` for an in-memory database).
    Sqlite {
        /// The database file.
        path: Option<PathBuf>,
    },
    /// PostgreSQL.
    Postgres,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Maximum pooled connections (PostgreSQL; SQLite uses at most this many readers too).
    pub max_connections: u32,
    /// How long to wait for a free connection before failing a request.
    pub acquire_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

/// WAL pages (4 KiB each) after which SQLite's writing connection checkpoints on its own, in
/// its commit (SQLite's default is 1,000): a backstop only, for when [`checkpoint_wal`] falls
/// behind; it bounds the WAL file at about 32 MiB.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8_192;
/// The shortest wait between two runs of [`checkpoint_wal`]. Short, because a long WAL slows
/// every transaction that searches it: at concurrency 32, refresh p99 was 15–17 ms with
/// checkpoints every 100 ms, 11–14 ms every 20 ms and 9–10 ms every 5 ms.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);

/// The longest wait between two runs of [`checkpoint_wal`] while anything is written, and
/// between two looks at an idle WAL.
const CHECKPOINT_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// WAL frames (4 KiB pages) [`checkpoint_wal`] lets accumulate between checkpoints: the wait
/// after each checkpoint is the time these many frames took to arrive at the rate just seen.
/// Under a stream of refreshes that rate keeps the wait at [`CHECKPOINT_EVERY`]; a trickle of
/// writes (sign-ins, a few hundred a second) is checkpointed a few times a second rather than
/// after nearly every commit, where each checkpoint cost two `fsync`s plus one more in the
/// next commit (which restarts the WAL and syncs its header).
const CHECKPOINT_FRAMES: u32 = 64;

/// The wait before the next checkpoint, after one that found `frames` frames in the WAL
/// `elapsed` after the previous one: the time [`CHECKPOINT_FRAMES`] take at that rate, at most
/// twice the previous `wait` (a burst after a quiet spell shortens the wait at the first
/// checkpoint that sees it; a lull lengthens it gradually), within [`CHECKPOINT_EVERY`] and
/// [`CHECKPOINT_AT_MOST_EVERY`].
fn next_checkpoint_wait(wait: Duration, elapsed: Duration, frames: u64) -> Duration {
    let paced = match frames {
        0 => CHECKPOINT_AT_MOST_EVERY,
        n => elapsed.saturating_mul(CHECKPOINT_FRAMES) / u32::try_from(n).unwrap_or(u32::MAX),
    };
    paced.min(wait.saturating_mul(2)).clamp(CHECKPOINT_EVERY, CHECKPOINT_AT_MOST_EVERY)
}

/// A task that lives as long as the store holding it: aborted when the last clone of that
/// store is dropped.
#[derive(Debug)]
struct BackgroundTask(tokio::task::AbortHandle);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteStore {
    /// This store, running `task` until its last clone is dropped.
    fn with_background(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self._background = Some(Arc::new(BackgroundTask(task.abort_handle())));
        self
    }
}

/// Longest time [`checkpoint_wal`] goes without a checkpoint even when the WAL file looks
/// unchanged (a write within the file system's timestamp granularity can leave its size and
/// modification time as they were).
const CHECKPOINT_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Copies committed WAL pages into the database file on a reading connection
/// (`PRAGMA wal_checkpoint(PASSIVE)`: it waits for no one and blocks no one), so that the copy
/// and its two `fsync`s happen beside the one writing connection instead of inside its commits,
/// where SQLite's automatic checkpoint puts them. The wait between checkpoints follows the rate
/// of writes ([`next_checkpoint_wait`]): [`CHECKPOINT_EVERY`] (5 ms) under heavy writing, up
/// to [`CHECKPOINT_AT_MOST_EVERY`] (250 ms) under a trickle. A look is skipped when the WAL
/// file at `wal` has the size and modification time it had at the last checkpoint (nothing was
/// written since, or a write landed within the file system's timestamp granularity, a few
/// milliseconds), but never for longer than [`CHECKPOINT_AT_LEAST_EVERY`]: an idle server
/// looks at its WAL file four times a second and queries its database once a second. Runs
/// until `readers` is closed or the store that holds it is dropped.
async fn checkpoint_wal(readers: sqlx::SqlitePool, wal: std::path::PathBuf) {
    let mut wait = CHECKPOINT_EVERY;
    let mut last: Option<(u64, std::time::SystemTime)> = None;
    let mut last_at = tokio::time::Instant::now();
    while !readers.is_closed() {
        tokio::time::sleep(wait).await;
        let seen = wal_state(&wal);
        if seen.is_some() && seen == last && last_at.elapsed() < CHECKPOINT_AT_LEAST_EVERY {
            wait = next_checkpoint_wait(wait, last_at.elapsed(), 0);
            continue;
        }
        // Taken before the checkpoint: a write that lands during it changes the file again
        // and is checkpointed at the next tick.
        let elapsed = last_at.elapsed();
        (last, last_at) = (seen, tokio::time::Instant::now());
        // The result row: (busy, frames in the WAL, frames checkpointed).
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&readers).await {
            Ok((_, frames, _)) => wait = next_checkpoint_wait(wait, elapsed, u64::try_from(frames).unwrap_or(0)),
            Err(e) if !readers.is_closed() => {
                tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoints take over");
            }
            Err(_) => {}
        }
    }
}

/// The WAL file's size in bytes and modification time, or `None` if it cannot be read (then
/// every tick checkpoints).
fn wal_state(wal: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(wal).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// An open, migrated database.
#[derive(Clone)]
pub struct Database {
    store: Arc<dyn Store>,
    backend: Backend,
    sqlite: Option<SqliteStore>,
    postgres: Option<PgStore>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database at `url` and applies pending migrations.
    ///
    /// * `sqlite://PATH` (created if missing; relative to the working directory) or
    ///   `sqlite::memory:` (one private in-memory database, for tests);
    /// * `postgres://USER@HOST:PORT/DB` or `postgresql://...`.
    ///
    /// # Errors
    /// [`ConnectError`] naming what failed.
    pub async fn connect(url: &str, options: &Options) -> Result<Self, ConnectError> {
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, options).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, options).await
        } else {
            Err(ConnectError::Url(redact(url)))
        }
    }

    async fn connect_sqlite(url: &str, options: &Options) -> Result<Self, ConnectError> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| ConnectError::Url(format!("{}: {e}", redact(url))))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal);
        let path = (!memory).then(|| connect.get_filename().to_path_buf());
        let pool = if memory {
            // An in-memory database lives as long as its one connection.
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections.max(1))
        }
        // A file on this machine cannot hang up: no ping (a round trip to the connection's
        // thread) before every query.
        .test_before_acquire(false)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect.clone())
        .await
        .map_err(ConnectError::Connect)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(ConnectError::Migrate)?;
        let store = if memory {
            SqliteStore::new(pool)
        } else {
            let mut wal = connect.get_filename().as_os_str().to_owned();
            wal.push("-wal");
            // One writing connection: writers wait their turn in the pool (see
            // `SqliteStore::with_writer`); readers never block it (WAL).
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect.pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES.to_string()))
                .await
                .map_err(ConnectError::Connect)?;
            let checkpoints = tokio::spawn(checkpoint_wal(pool.clone(), wal.into()));
            SqliteStore::with_writer(pool, writer).with_background(checkpoints)
        };
        Ok(Self {
            store: Arc::new(store.clone()),
            backend: Backend::Sqlite { path },
            sqlite: Some(store),
            postgres: None,
        })
    }

    async fn connect_postgres(url: &str, options: &Options) -> Result<Self, ConnectError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| ConnectError::Url(format!("{}: {e}", redact(url))))?
            // Every execution is planned for the tables as they are now. A connection's cached
            // generic plan is made once, for the sizes of the moment: one made while
            // `refresh_tokens` held a few rows scans the whole table on every later refresh
            // (each refresh adds a row) until an ANALYZE invalidates it. Planning costs tens
            // of microseconds per statement; reads that a cache answers cost nothing.
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // A ping costs a round trip: only for connections idle long enough to have been
            // dropped (a database restart or failover), not before every query.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(ConnectError::Connect)?;
        // sqlx holds an advisory lock while migrating, so instances starting together are safe.
        sqlx::migrate!("./migrations/postgres").run(&pool).await.map_err(ConnectError::Migrate)?;
        let store = PgStore::new(pool);
        Ok(Self { store: Arc::new(store.clone()), backend: Backend::Postgres, sqlite: None, postgres: Some(store) })
    }

    /// The store, for [`latchkey_core::Auth`].
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Which backend this is.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The SQLite store, when on SQLite.
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        self.sqlite.as_ref()
    }

    /// The PostgreSQL store, when on PostgreSQL.
    pub fn postgres(&self) -> Option<&PgStore> {
        self.postgres.as_ref()
    }

    /// Closes every pooled connection, waiting for queries in flight.
    pub async fn close(&self) {
        if let Some(s) = &self.sqlite {
            s.pool().close().await;
            s.writer().close().await;
        }
        if let Some(p) = &self.postgres {
            p.pool().close().await;
        }
    }
}

/// How long a PostgreSQL connection may sit in the pool before it is pinged on its way out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The schema's unique constraints that a client can collide with, by name (both migrations
/// name them alike), with the columns SQLite reports instead of the name.
const UNIQUE_CONSTRAINTS: &[(&str, &str, UniqueKey)] = &[
    ("users_tenant_email_key", "users.tenant_id, users.email_normalized", UniqueKey::Email),
    ("users_tenant_username_key", "users.tenant_id, users.username", UniqueKey::Username),
    ("users_tenant_external_id_key", "users.tenant_id, users.external_id", UniqueKey::ExternalId),
];

/// The key a unique violation hit: PostgreSQL names the constraint; SQLite's message is
/// `UNIQUE constraint failed: <table.column, ...>`. Anything else is [`UniqueKey::Other`].
fn unique_key(constraint: Option<&str>, message: &str) -> UniqueKey {
    let sqlite_columns = message.strip_prefix("UNIQUE constraint failed: ");
    UNIQUE_CONSTRAINTS
        .iter()
        .find(|(name, columns, _)| constraint == Some(*name) || sqlite_columns == Some(*columns))
        .map_or(UniqueKey::Other, |(_, _, key)| *key)
}

/// Maps a sqlx error to a [`StoreError`], turning unique violations into conflicts on the key
/// they hit, matched by exact constraint name.
fn store_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(unique_key(db.constraint(), db.message()));
    }
    StoreError::Backend(Box::new(e))
}

/// A stored value that no longer parses (written by something other than Latchkey).
fn decode_err(column: &'static str) -> impl Fn(latchkey_core::identity::ParseError) -> sqlx::Error {
    move |e| sqlx::Error::Decode(format!("users.{column}: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_violations_are_matched_by_exact_constraint() {
        assert_eq!(unique_key(Some("users_tenant_email_key"), "duplicate key"), UniqueKey::Email);
        assert_eq!(unique_key(Some("users_tenant_username_key"), ""), UniqueKey::Username);
        assert_eq!(
            unique_key(None, "UNIQUE constraint failed: users.tenant_id, users.external_id"),
            UniqueKey::ExternalId
        );
        assert_eq!(
            unique_key(None, "UNIQUE constraint failed: users.tenant_id, users.email_normalized"),
            UniqueKey::Email
        );
        // Names that merely contain a column name are not guessed at.
        assert_eq!(unique_key(Some("signing_keys_tenant_generation_key"), ""), UniqueKey::Other);
        assert_eq!(unique_key(Some("email_outbox_pkey"), ""), UniqueKey::Other);
        assert_eq!(unique_key(None, "UNIQUE constraint failed: refresh_tokens.token_hash"), UniqueKey::Other);
    }

    /// Committed writes reach the database file itself, not only the WAL, without waiting for
    /// the writer's own checkpoint (which would take [`WRITER_AUTOCHECKPOINT_PAGES`] of writes).
    #[tokio::test]
    async fn committed_writes_are_checkpointed_into_the_database_file() {
        let dir = std::env::temp_dir().join(format!("latchkey-checkpoint-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join("latchkey.db");
        let db = Database::connect(&format!("sqlite://{}", path.display()), &Options::default()).await.expect("open");
        let writer = db.sqlite().expect("on SQLite").writer().clone();
        sqlx::raw_sql("CREATE TABLE probe (n INTEGER); INSERT INTO probe VALUES (1), (2), (3);")
            .execute(&writer)
            .await
            .expect("write");

        // An immutable connection reads the database file and ignores the WAL.
        let file_only = SqliteConnectOptions::new().filename(&path).immutable(true).read_only(true);
        let rows_in_file = |expected: i64| {
            let file_only = file_only.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let mut conn = sqlx::ConnectOptions::connect(&file_only).await.expect("read the file");
                    let rows: Result<i64, _> =
                        sqlx::query_scalar("SELECT count(*) FROM probe").fetch_one(&mut conn).await;
                    drop(conn);
                    match rows {
                        Ok(rows) if rows == expected => break rows,
                        _ if std::time::Instant::now() < deadline => tokio::time::sleep(CHECKPOINT_EVERY).await,
                        other => panic!("the writes never reached the database file: {other:?}"),
                    }
                }
            }
        };
        assert_eq!(rows_in_file(3).await, 3);
        // A later write, after the checkpointer has seen the WAL unchanged for a while, is
        // copied too.
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        sqlx::query("INSERT INTO probe VALUES (4)").execute(&writer).await.expect("write again");
        assert_eq!(rows_in_file(4).await, 4);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sign-up's user, verifier and code are stored together or not at all: a code that
    /// cannot be stored (here: for a user that does not exist) leaves no user behind.
    #[tokio::test]
    async fn a_sign_up_is_stored_whole_or_not_at_all() {
        let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("open");
        let store = db.store();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a time");
        let user = |email: &str| UserRecord {
            user: User {
                id: UserId(uuid::Uuid::new_v4()),
                tenant: TenantId::DEFAULT,
                email: Some(Email::parse(email).expect("an address")),
                email_verified: false,
                username: None,
                external_id: None,
                profile: Profile::default(),
                has_password: true,
                disabled: false,
                created_at: now,
                updated_at: now,
            },
            password_hash: Some("$argon2id$stand-in".into()),
        };
        let code = |user_id: UserId| latchkey_core::ports::CodeRecord {
            tenant: TenantId::DEFAULT,
            user_id,
            purpose: CodePurpose::VerifyEmail,
            code_hash: vec![7; 32],
            target: None,
            attempts: 0,
            created_at: now,
            expires_at: now + time::Duration::minutes(15),
        };

        let whole = user("whole@example.com");
        store.insert_user_with(&whole, Some(b"sealed"), Some(&code(whole.user.id))).await.expect("stored");
        assert!(store.user_by_id(TenantId::DEFAULT, whole.user.id).await.expect("read").is_some());
        assert_eq!(
            store.srp_verifier(TenantId::DEFAULT, whole.user.id).await.expect("read").as_deref(),
            Some(&b"sealed"[..])
        );
        assert!(store.code(TenantId::DEFAULT, whole.user.id, CodePurpose::VerifyEmail).await.expect("read").is_some());

        let broken = user("broken@example.com");
        let stray = code(UserId(uuid::Uuid::new_v4()));
        assert!(store.insert_user_with(&broken, Some(b"sealed"), Some(&stray)).await.is_err());
        assert!(store.user_by_id(TenantId::DEFAULT, broken.user.id).await.expect("read").is_none(), "rolled back");
        assert!(store.srp_verifier(TenantId::DEFAULT, broken.user.id).await.expect("read").is_none(), "rolled back");
    }

    #[test]
    fn checkpoints_follow_the_rate_of_writes() {
        let ms = Duration::from_millis;
        // A stream of writes: 64 frames in 5 ms or fewer keeps the shortest wait.
        assert_eq!(next_checkpoint_wait(ms(5), ms(5), 200), CHECKPOINT_EVERY);
        assert_eq!(next_checkpoint_wait(ms(250), ms(250), 10_000), CHECKPOINT_EVERY);
        // A trickle: 8 frames in 10 ms would pace at 80 ms, but the wait at most doubles.
        assert_eq!(next_checkpoint_wait(ms(10), ms(10), 8), ms(20));
        assert_eq!(next_checkpoint_wait(ms(80), ms(80), 8), ms(160));
        assert_eq!(next_checkpoint_wait(ms(160), ms(160), 8), CHECKPOINT_AT_MOST_EVERY);
        // 64 frames in 40 ms: wait 40 ms.
        assert_eq!(next_checkpoint_wait(ms(40), ms(40), 64), ms(40));
        // Nothing written: the wait doubles up to the longest.
        assert_eq!(next_checkpoint_wait(ms(5), ms(5), 0), ms(10));
        assert_eq!(next_checkpoint_wait(ms(200), ms(200), 0), CHECKPOINT_AT_MOST_EVERY);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://latchkey.db"), "sqlite://latchkey.db");
    }
}
