//! The user directory under test: a fresh database per directory size (a temporary SQLite file,
//! or a PostgreSQL database created for the run and dropped afterwards), and seeding it with N
//! users straight through SQL.
//!
//! Signing N users up over HTTP would cost one argon2id hash each (hours for a million), so one
//! PHC hash of [`PASSWORD`] is computed with Latchkey's own hasher and parameters and shared by
//! every seeded row. Rows go in as multi-row `INSERT`s inside transactions, into the schema the
//! server's migrations created (the server must have started once on the database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use latchkey_core::identity::{PasswordPolicy, TenantId};
use latchkey_core::password::{HashParams, PasswordHasher};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection};

/// The password of every seeded user.
pub const PASSWORD: &str = "bench password 0123456789";

/// Rows per `INSERT` statement (7 bind parameters each, far below both backends' limits).
const ROWS_PER_STATEMENT: u64 = 1000;
/// Statements per transaction.
const STATEMENTS_PER_TRANSACTION: u64 = 20;

/// The email of seeded user `n` (1-based): `bench-<n>@example.com`, already lower-case, so it
/// is its own normalised form.
pub fn email(n: u64) -> String {
    format!("bench-{n}@example.com")
}

/// A database provisioned for one directory size.
#[derive(Debug)]
pub enum Directory {
    /// A SQLite file in a temporary directory, removed with it.
    Sqlite {
        /// The directory holding `bench.db` (and the servers' working files).
        dir: tempfile::TempDir,
        /// `sqlite://<dir>/bench.db`.
        url: String,
    },
    /// A PostgreSQL database created for this size, dropped by [`Directory::remove`].
    Postgres {
        /// The administrative connection URL used to create and drop it.
        admin_url: String,
        /// The database's name.
        name: String,
        /// Its connection URL.
        url: String,
        /// A working directory for the servers' files.
        dir: tempfile::TempDir,
    },
    /// A database given with `--database-url`: used as it is and never dropped.
    External {
        /// Its connection URL.
        url: String,
        /// A working directory for the servers' files.
        dir: tempfile::TempDir,
    },
}

impl Directory {
    /// A fresh SQLite file in a new temporary directory.
    ///
    /// # Errors
    /// When the temporary directory cannot be created.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("latchkey-bench-").tempdir().context("creating a temporary directory")?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        Ok(Self::Sqlite { dir, url })
    }

    /// A fresh PostgreSQL database `latchkey_bench_<random>` on the server of `admin_url`.
    ///
    /// # Errors
    /// When PostgreSQL is unreachable or refuses to create the database.
    pub async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("latchkey-bench-").tempdir().context("creating a temporary directory")?;
        let name = format!("latchkey_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url} (--postgres-url)"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = conn.close().await;
        let base = admin_url.split('?').next().unwrap_or(admin_url);
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(Self::Postgres { admin_url: admin_url.to_owned(), url: format!("{base}/{name}"), name, dir })
    }

    /// An existing database, used as it is.
    ///
    /// # Errors
    /// When the temporary working directory cannot be created.
    pub fn external(url: &str) -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("latchkey-bench-").tempdir().context("creating a temporary directory")?;
        Ok(Self::External { url: url.to_owned(), dir })
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } | Self::External { url, .. } => url,
        }
    }

    /// A scratch directory for the servers' working files.
    pub fn work_dir(&self) -> &std::path::Path {
        match self {
            Self::Sqlite { dir, .. } | Self::Postgres { dir, .. } | Self::External { dir, .. } => dir.path(),
        }
    }

    /// Removes what was created: the temporary directory, and the PostgreSQL database (with
    /// `WITH (FORCE)`, closing any connection left).
    ///
    /// # Errors
    /// When the PostgreSQL database cannot be dropped.
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Self::Postgres { admin_url, name, .. } = self {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.context("connecting to PostgreSQL")?;
            sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .with_context(|| format!("dropping database {name}"))?;
            let _ = conn.close().await;
        }
        Ok(())
    }
}

/// What seeding did.
#[derive(Debug, Clone, Serialize)]
pub struct SeedStats {
    /// Users asked for (emails `bench-1@example.com` to `bench-<users>@example.com`).
    pub users: u64,
    /// Rows actually inserted (fewer when some of those users existed already).
    pub inserted: u64,
    /// Wall time of the inserts, in seconds (the one password hash not included).
    pub seconds: f64,
}

/// One argon2id PHC string of [`PASSWORD`], made by Latchkey's own hasher with the parameters
/// `params` (the server's), exactly as sign-up would store it: a seeded user's sign-in then
/// verifies it without re-hashing.
///
/// # Errors
/// When hashing fails.
pub async fn password_hash(params: HashParams) -> anyhow::Result<String> {
    let hasher = PasswordHasher::new(params, 1, 1024).context("building Latchkey's password hasher")?;
    let password = PasswordPolicy::default().parse(PASSWORD).map_err(|e| anyhow::anyhow!("bench password: {e}"))?;
    hasher.hash(&password).await.context("hashing the bench password")
}

/// The text of an `INSERT` of `rows` users. `$1` is the tenant, `$2` the password hash, `$3`
/// the creation time in ms; each row then binds id, email (also its normalised form), given
/// name, family name, phone number and address. `TRUE`/`FALSE` are 1/0 on SQLite.
fn insert_sql(rows: u64) -> String {
    let mut sql = String::from(
        "INSERT INTO users (id, tenant_id, email, email_normalized, email_verified, password_hash, \
         given_name, family_name, phone_number, address, disabled, created_at, updated_at) VALUES ",
    );
    for row in 0..rows {
        let p = 4 + row * 6;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${p}, $1, ${}, ${}, TRUE, $2, ${}, ${}, ${}, ${}, FALSE, $3, $3)",
            p + 1,
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// Inserts users 1 to `$users` on connection `$conn` (a `&mut` SQLite or PostgreSQL
/// connection), `STATEMENTS_PER_TRANSACTION` statements per transaction, advancing `$progress`;
/// evaluates to the number of rows inserted. A macro, not a function: the two backends share
/// the code but not a type that sqlx lets a generic function name without a wall of bounds.
macro_rules! insert_all {
    ($conn:expr, $users:expr, $hash:expr, $now:expr, $progress:expr) => {{
        let full_sql: Arc<str> = insert_sql(ROWS_PER_STATEMENT.min($users.max(1))).into();
        let mut inserted = 0;
        let mut next = 1;
        while next <= $users {
            let mut tx = $conn.begin().await.context("beginning a transaction")?;
            for _ in 0..STATEMENTS_PER_TRANSACTION {
                if next > $users {
                    break;
                }
                let rows = ROWS_PER_STATEMENT.min($users - next + 1);
                let sql = if rows == ROWS_PER_STATEMENT { full_sql.clone() } else { insert_sql(rows).into() };
                let mut query = sqlx::query(AssertSqlSafe(sql)).bind(TenantId::DEFAULT.0).bind($hash).bind($now);
                for n in next..next + rows {
                    query = query
                        .bind(uuid::Uuid::new_v4())
                        .bind(email(n))
                        .bind("Bench")
                        .bind(format!("User {n}"))
                        .bind(format!("+1 555 {n:07}"))
                        .bind(format!("{n} Benchmark Street, Testville"));
                }
                let done = query
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("inserting users {next} to {}", next + rows - 1))?;
                inserted += done.rows_affected();
                next += rows;
                $progress.inc(rows);
            }
            tx.commit().await.context("committing seeded users")?;
        }
        inserted
    }};
}

/// Inserts users 1 to `users` into the database at `url` (SQLite or PostgreSQL) with the
/// password hash `hash`, verified emails and filled-in profiles, in the default tenant; users
/// that exist already are left alone. Shows a progress bar on standard error.
///
/// # Errors
/// When the database cannot be reached or an insert fails.
pub async fn seed(url: &str, users: u64, hash: &str) -> anyhow::Result<SeedStats> {
    let progress = ProgressBar::new(users).with_style(
        ProgressStyle::with_template(
            "  seeding {bar:40.cyan/blue} {human_pos}/{human_len} users ({per_sec}, {eta} left)",
        )
        .context("progress bar template")?,
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .context("the clock is out of range")?;
    let started = Instant::now();
    let inserted = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.with_context(|| format!("connecting to {url}"))?;
        // A large page cache keeps the random-UUID primary key index in memory while seeding.
        sqlx::query("PRAGMA cache_size = -262144").execute(&mut conn).await.context("setting the cache size")?;
        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut conn).await.context("setting the busy timeout")?;
        let inserted = insert_all!(conn, users, hash, now, progress);
        let _ = conn.close().await;
        inserted
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut conn = sqlx::PgConnection::connect(url).await.with_context(|| format!("connecting to {url}"))?;
        let inserted = insert_all!(conn, users, hash, now, progress);
        // Fresh statistics and visibility map, as autovacuum would have left them on a
        // directory that grew over time (lets lookups use index-only plans at once).
        sqlx::query("VACUUM ANALYZE users").execute(&mut conn).await.context("VACUUM ANALYZE users")?;
        let _ = conn.close().await;
        inserted
    } else {
        bail!("unsupported database URL {url}: expected sqlite://PATH or postgres://...");
    };
    progress.finish_and_clear();
    Ok(SeedStats { users, inserted, seconds: started.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_parameters_per_row() {
        let sql = insert_sql(2);
        assert!(sql.contains("($4, $1, $5, $5, TRUE, $2, $6, $7, $8, $9, FALSE, $3, $3)"), "{sql}");
        assert!(sql.contains("($10, $1, $11, $11, TRUE, $2, $12, $13, $14, $15, FALSE, $3, $3)"), "{sql}");
        assert!(sql.ends_with(" ON CONFLICT DO NOTHING"));
    }

    #[test]
    fn seeded_emails_are_their_own_normal_form() {
        let e = email(42);
        assert_eq!(e, "bench-42@example.com");
        assert_eq!(e, e.to_lowercase());
    }
}
