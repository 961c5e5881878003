//! The [`Store`] implementation, written once and instantiated for SQLite and PostgreSQL; one
//! file per aggregate trait (`users.rs`, `codes.rs`, `sessions.rs`, `keys.rs`, `srp.rs`,
//! `tenants.rs`, `realtime.rs`, `audit.rs`), this file holding the row decoding they share and the `Store`
//! supertrait itself.
//!
//! Both schemas use the same column names and types that decode to the same Rust types
//! (UUIDs, `i64` milliseconds, booleans, byte strings), and SQLite accepts PostgreSQL's `$n`
//! placeholders, so every query text is shared. The macro only substitutes the sqlx database
//! type. Every operation that must be atomic is a single statement.

/// Columns of a user row, prefixed for joins.
macro_rules! user_columns {
    () => {
        "u.id, u.tenant_id, u.email, u.email_verified, u.username, u.external_id, u.password_hash, \
         u.given_name, u.family_name, u.phone_number, u.address, u.picture, u.disabled, \
         u.created_at, u.updated_at"
    };
}

/// Columns of a session row, aliased so they never clash with user columns in joins.
macro_rules! session_columns {
    () => {
        "s.id AS s_id, s.tenant_id AS s_tenant_id, s.user_id AS s_user_id, s.created_at AS s_created_at, \
         s.last_seen_at AS s_last_seen_at, s.expires_at AS s_expires_at, s.revoked_at AS s_revoked_at, \
         s.user_agent AS s_user_agent, s.ip AS s_ip"
    };
}

macro_rules! code_columns {
    () => {
        "tenant_id, user_id, purpose, code_hash, target, attempts, created_at, expires_at"
    };
}

macro_rules! refresh_columns {
    () => {
        "token_hash, tenant_id, session_id, created_at, rotated_at"
    };
}

#[macro_use]
mod users;
#[macro_use]
mod codes;
#[macro_use]
pub(crate) mod sessions;
#[macro_use]
mod keys;
#[macro_use]
mod srp;
#[macro_use]
mod tenants;
#[macro_use]
mod realtime;
#[macro_use]
mod audit;

macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $db:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            /// Reads.
            pool: sqlx::Pool<$db>,
            /// Writes (every INSERT, UPDATE and DELETE, and transactions that write).
            writer: sqlx::Pool<$db>,
            /// Refresh-token rotations, committed in batches (group commit).
            rotations: std::sync::Arc<crate::batch::Batcher<crate::sql::sessions::RotateItem, Result<Option<Rotation>, StoreError>>>,
            /// Work that lives as long as the store (SQLite's WAL checkpoints).
            _background: Option<std::sync::Arc<crate::BackgroundTask>>,
        }

        impl $name {
            /// Wraps a connection pool whose database has been migrated; it serves reads and
            /// writes.
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { writer: pool.clone(), pool, rotations: Default::default(), _background: None }
            }

            /// Reads through `readers` and writes through `writer` (both on one migrated
            /// database). SQLite admits one writer at a time: a one-connection `writer` pool
            /// queues writers in the pool, in order, instead of in SQLite's busy handler,
            /// which retries after sleeps of up to 100 ms.
            pub fn with_writer(readers: sqlx::Pool<$db>, writer: sqlx::Pool<$db>) -> Self {
                Self { pool: readers, writer, rotations: Default::default(), _background: None }
            }

            /// The pool that serves reads.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            /// The pool that serves writes (the same as [`Self::pool`] unless built by
            /// [`Self::with_writer`]).
            pub fn writer(&self) -> &sqlx::Pool<$db> {
                &self.writer
            }

            /// `INSERT` of a new user row (the statement of [`UserStore::insert_user`]).
            fn insert_user_query<'q>(r: &'q UserRecord) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                let u = &r.user;
                sqlx::query(
                    "INSERT INTO users (id, tenant_id, email, email_normalized, email_verified, username, external_id, \
                     password_hash, given_name, family_name, phone_number, address, picture, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(u.id.0)
                .bind(u.tenant.0)
                .bind(u.email.as_ref().map(Email::as_str))
                .bind(u.email.as_ref().map(Email::normalized))
                .bind(u.email_verified)
                .bind(u.username.as_ref().map(Username::as_str))
                .bind(u.external_id.as_ref().map(ExternalId::as_str))
                .bind(r.password_hash.as_deref())
                .bind(u.profile.given_name.as_deref())
                .bind(u.profile.family_name.as_deref())
                .bind(u.profile.phone_number.as_deref())
                .bind(u.profile.address.as_deref())
                .bind(u.profile.picture.as_deref())
                .bind(u.disabled)
                .bind(millis(u.created_at))
                .bind(millis(u.updated_at))
            }

            /// Upsert of a user's sealed SRP verifier (the statement of
            /// [`SrpStore::put_srp_verifier`]). The join on users keeps the write inside the
            /// tenant: a user id of another tenant inserts nothing.
            fn put_srp_verifier_query<'q>(
                tenant: TenantId,
                user: UserId,
                sealed: &'q [u8],
                at: OffsetDateTime,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                sqlx::query(
                    "INSERT INTO srp_verifiers (user_id, tenant_id, sealed, updated_at) \
                     SELECT id, tenant_id, $3, $4 FROM users WHERE tenant_id = $1 AND id = $2 \
                     ON CONFLICT (user_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(sealed)
                .bind(millis(at))
            }

            /// Upsert of a one-time code (the statement of [`CodeStore::put_code`]): it
            /// replaces any pending code of the same user and purpose.
            fn put_code_query<'q>(c: &'q CodeRecord) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                sqlx::query(
                    "INSERT INTO one_time_codes (tenant_id, user_id, purpose, code_hash, target, attempts, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7) \
                     ON CONFLICT (user_id, purpose) DO UPDATE SET tenant_id = excluded.tenant_id, \
                     code_hash = excluded.code_hash, target = excluded.target, attempts = 0, \
                     created_at = excluded.created_at, expires_at = excluded.expires_at",
                )
                .bind(c.tenant.0)
                .bind(c.user_id.0)
                .bind(c.purpose.as_str())
                .bind(c.code_hash.as_slice())
                .bind(c.target.as_deref())
                .bind(millis(c.created_at))
                .bind(millis(c.expires_at))
            }

            fn user_from_row(row: &<$db as sqlx::Database>::Row) -> Result<UserRecord, sqlx::Error> {
                let email: Option<String> = row.try_get("email")?;
                let username: Option<String> = row.try_get("username")?;
                let external_id: Option<String> = row.try_get("external_id")?;
                let password_hash: Option<String> = row.try_get("password_hash")?;
                let user = User {
                    id: UserId(row.try_get("id")?),
                    tenant: TenantId(row.try_get("tenant_id")?),
                    email: email.as_deref().map(Email::parse).transpose().map_err(decode_err("email"))?,
                    email_verified: row.try_get("email_verified")?,
                    username: username.as_deref().map(Username::parse).transpose().map_err(decode_err("username"))?,
                    external_id: external_id
                        .as_deref()
                        .map(ExternalId::parse)
                        .transpose()
                        .map_err(decode_err("external_id"))?,
                    profile: Profile {
                        given_name: row.try_get("given_name")?,
                        family_name: row.try_get("family_name")?,
                        phone_number: row.try_get("phone_number")?,
                        address: row.try_get("address")?,
                        picture: row.try_get("picture")?,
                    },
                    has_password: password_hash.is_some(),
                    disabled: row.try_get("disabled")?,
                    created_at: from_millis(row.try_get("created_at")?),
                    updated_at: from_millis(row.try_get("updated_at")?),
                };
                Ok(UserRecord { user, password_hash })
            }

            fn session_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Session, sqlx::Error> {
                let revoked_at: Option<i64> = row.try_get("s_revoked_at")?;
                Ok(Session {
                    id: SessionId(row.try_get("s_id")?),
                    tenant: TenantId(row.try_get("s_tenant_id")?),
                    user_id: UserId(row.try_get("s_user_id")?),
                    created_at: from_millis(row.try_get("s_created_at")?),
                    last_seen_at: from_millis(row.try_get("s_last_seen_at")?),
                    expires_at: from_millis(row.try_get("s_expires_at")?),
                    revoked_at: revoked_at.map(from_millis),
                    user_agent: row.try_get("s_user_agent")?,
                    ip: row.try_get("s_ip")?,
                })
            }

            fn code_from_row(row: &<$db as sqlx::Database>::Row) -> Result<CodeRecord, sqlx::Error> {
                let purpose: String = row.try_get("purpose")?;
                let attempts: i64 = row.try_get("attempts")?;
                Ok(CodeRecord {
                    tenant: TenantId(row.try_get("tenant_id")?),
                    user_id: UserId(row.try_get("user_id")?),
                    purpose: CodePurpose::from_name(&purpose)
                        .ok_or_else(|| sqlx::Error::Decode(format!("unknown code purpose {purpose:?}").into()))?,
                    code_hash: row.try_get("code_hash")?,
                    target: row.try_get("target")?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    created_at: from_millis(row.try_get("created_at")?),
                    expires_at: from_millis(row.try_get("expires_at")?),
                })
            }

            fn refresh_from_row(row: &<$db as sqlx::Database>::Row) -> Result<RefreshTokenRecord, sqlx::Error> {
                let rotated_at: Option<i64> = row.try_get("rotated_at")?;
                Ok(RefreshTokenRecord {
                    token_hash: row.try_get("token_hash")?,
                    tenant: TenantId(row.try_get("tenant_id")?),
                    session_id: SessionId(row.try_get("session_id")?),
                    created_at: from_millis(row.try_get("created_at")?),
                    rotated_at: rotated_at.map(from_millis),
                })
            }

            fn key_from_row(row: &<$db as sqlx::Database>::Row) -> Result<KeyRecord, sqlx::Error> {
                Ok(KeyRecord {
                    kid: row.try_get("kid")?,
                    generation: row.try_get("generation")?,
                    alg: row.try_get("alg")?,
                    public_jwk: row.try_get("public_jwk")?,
                    private_key: row.try_get("private_key")?,
                    created_at: from_millis(row.try_get("created_at")?),
                })
            }

            async fn user_where(&self, sql: &'static str, tenant: TenantId, value: &str) -> Result<Option<UserRecord>, StoreError> {
                let row = sqlx::query(sql)
                    .bind(tenant.0)
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.as_ref().map(Self::user_from_row).transpose().map_err(store_err)
            }
        }

        #[async_trait]
        impl Store for $name {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(store_err)?;
                Ok(())
            }

            async fn purge_expired(&self, before: &PurgeBefore) -> Result<Purged, StoreError> {
                const BATCH: i64 = 1000;
                /// Runs a batched DELETE (`$1`: the horizon, `$2`: the batch size) until it
                /// deletes less than a batch; returns the rows deleted.
                async fn batches(pool: &sqlx::Pool<$db>, sql: &'static str, horizon: OffsetDateTime) -> Result<u64, StoreError> {
                    let mut total = 0;
                    loop {
                        let done = sqlx::query(sql)
                            .bind(millis(horizon))
                            .bind(BATCH)
                            .execute(pool)
                            .await
                            .map_err(store_err)?;
                        total += done.rows_affected();
                        if done.rows_affected() < BATCH as u64 {
                            return Ok(total);
                        }
                    }
                }
                Ok(Purged {
                    codes: batches(
                        &self.writer,
                        "DELETE FROM one_time_codes WHERE expires_at < $1 AND user_id IN \
                         (SELECT user_id FROM one_time_codes WHERE expires_at < $1 LIMIT $2)",
                        before.ended,
                    )
                    .await?,
                    sessions: batches(
                        &self.writer,
                        "DELETE FROM sessions WHERE id IN \
                         (SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)",
                        before.ended,
                    )
                    .await?,
                    unverified_users: match before.unverified {
                        None => 0,
                        Some((tenant, created)) => {
                            let mut total = 0;
                            loop {
                                let done = sqlx::query(
                                    "DELETE FROM users WHERE id IN (SELECT id FROM users WHERE tenant_id = $3 \
                                     AND email IS NOT NULL AND email_verified = $4 AND created_at < $1 LIMIT $2)",
                                )
                                .bind(millis(created))
                                .bind(BATCH)
                                .bind(tenant.0)
                                .bind(false)
                                .execute(&self.writer)
                                .await
                                .map_err(store_err)?;
                                total += done.rows_affected();
                                if done.rows_affected() < BATCH as u64 {
                                    break total;
                                }
                            }
                        }
                    },
                    refresh_tokens: batches(
                        &self.writer,
                        "DELETE FROM refresh_tokens WHERE token_hash IN \
                         (SELECT token_hash FROM refresh_tokens WHERE rotated_at < $1 LIMIT $2)",
                        before.rotated,
                    )
                    .await?,
                    srp_challenges: batches(
                        &self.writer,
                        "DELETE FROM srp_used_challenges WHERE id IN \
                         (SELECT id FROM srp_used_challenges WHERE expires_at < $1 LIMIT $2)",
                        before.ended,
                    )
                    .await?,
                })
            }
        }

        sql_users!($name, $db);
        sql_codes!($name, $db);
        sql_sessions!($name, $db);
        sql_keys!($name, $db);
        sql_srp!($name, $db);
        sql_tenants!($name, $db);
        sql_realtime!($name, $db);
        sql_audit!($name, $db);
    };
}
