//! The [`Store`] implementation, written once and instantiated for SQLite and PostgreSQL.
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

macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $db:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            /// Wraps a connection pool whose database has been migrated.
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }

            /// The underlying pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
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

            async fn insert_user(&self, r: &UserRecord) -> Result<(), StoreError> {
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
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn user_by_id(&self, tenant: TenantId, id: UserId) -> Result<Option<UserRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.tenant_id = $1 AND u.id = $2"))
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.as_ref().map(Self::user_from_row).transpose().map_err(store_err)
            }

            async fn user_by_email(&self, tenant: TenantId, email: &Email) -> Result<Option<UserRecord>, StoreError> {
                self.user_where(
                    concat!("SELECT ", user_columns!(), " FROM users u WHERE u.tenant_id = $1 AND u.email_normalized = $2"),
                    tenant,
                    &email.normalized(),
                )
                .await
            }

            async fn user_by_username(&self, tenant: TenantId, username: &str) -> Result<Option<UserRecord>, StoreError> {
                self.user_where(
                    concat!("SELECT ", user_columns!(), " FROM users u WHERE u.tenant_id = $1 AND u.username = $2"),
                    tenant,
                    username,
                )
                .await
            }

            async fn mark_email_verified(&self, tenant: TenantId, id: UserId, at: OffsetDateTime) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE users SET email_verified = TRUE, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2 AND email_verified = FALSE",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(millis(at))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_password_hash(&self, tenant: TenantId, id: UserId, hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET password_hash = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(hash)
                    .bind(millis(at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(())
            }

            async fn set_email(&self, tenant: TenantId, id: UserId, email: &Email, at: OffsetDateTime) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE users SET email = $3, email_normalized = $4, email_verified = TRUE, updated_at = $5 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(email.as_str())
                .bind(email.normalized())
                .bind(millis(at))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn set_disabled(&self, tenant: TenantId, id: UserId, disabled: bool, at: OffsetDateTime) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE users SET disabled = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(disabled)
                    .bind(millis(at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_user(&self, tenant: TenantId, id: UserId) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
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
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn code(&self, tenant: TenantId, user: UserId, purpose: CodePurpose) -> Result<Option<CodeRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ", code_columns!(), " FROM one_time_codes WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3"
                ))
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                row.as_ref().map(Self::code_from_row).transpose().map_err(store_err)
            }

            async fn record_code_failure(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code_hash: &[u8]) -> Result<Option<u32>, StoreError> {
                let attempts: Option<i64> = sqlx::query_scalar(
                    "UPDATE one_time_codes SET attempts = attempts + 1 \
                     WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND code_hash = $4 RETURNING attempts",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(attempts.map(|a| u32::try_from(a).unwrap_or(u32::MAX)))
            }

            async fn take_code(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code_hash: &[u8], now: OffsetDateTime, max_attempts: u32) -> Result<Option<CodeRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "DELETE FROM one_time_codes WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND code_hash = $4 \
                     AND expires_at > $5 AND attempts < $6 RETURNING ", code_columns!()
                ))
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .bind(code_hash)
                .bind(millis(now))
                .bind(i64::from(max_attempts))
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                row.as_ref().map(Self::code_from_row).transpose().map_err(store_err)
            }

            async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (id, tenant_id, user_id, created_at, last_seen_at, expires_at, revoked_at, user_agent, ip) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(s.id.0)
                .bind(s.tenant.0)
                .bind(s.user_id.0)
                .bind(millis(s.created_at))
                .bind(millis(s.last_seen_at))
                .bind(millis(s.expires_at))
                .bind(s.revoked_at.map(millis))
                .bind(s.user_agent.as_deref())
                .bind(s.ip.as_deref())
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn session_with_user(&self, tenant: TenantId, id: SessionId) -> Result<Option<(Session, UserRecord)>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ", session_columns!(), ", ", user_columns!(),
                    " FROM sessions s JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
                     WHERE s.tenant_id = $1 AND s.id = $2"
                ))
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                match row {
                    Some(row) => Ok(Some((
                        Self::session_from_row(&row).map_err(store_err)?,
                        Self::user_from_row(&row).map_err(store_err)?,
                    ))),
                    None => Ok(None),
                }
            }

            async fn touch_session(&self, tenant: TenantId, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
                sqlx::query("UPDATE sessions SET last_seen_at = $3 WHERE tenant_id = $1 AND id = $2 AND last_seen_at < $3")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(millis(at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(())
            }

            async fn revoke_session(&self, tenant: TenantId, id: SessionId, at: OffsetDateTime) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(millis(at))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_user_sessions(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>, at: OffsetDateTime) -> Result<Vec<SessionId>, StoreError> {
                // A nil UUID never names a session, so it stands for "keep none".
                let keep = keep.map_or(uuid::Uuid::nil(), |s| s.0);
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $3 \
                     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL AND id <> $4 RETURNING id",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(millis(at))
                .bind(keep)
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(ids.into_iter().map(SessionId).collect())
            }

            async fn active_sessions(&self, tenant: TenantId, user: UserId, now: OffsetDateTime) -> Result<Vec<Session>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ", session_columns!(), " FROM sessions s \
                     WHERE s.tenant_id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3 \
                     ORDER BY s.created_at DESC"
                ))
                .bind(tenant.0)
                .bind(user.0)
                .bind(millis(now))
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
                rows.iter().map(Self::session_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn insert_refresh_token(&self, t: &RefreshTokenRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at, rotated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(t.token_hash.as_slice())
                .bind(t.tenant.0)
                .bind(t.session_id.0)
                .bind(millis(t.created_at))
                .bind(t.rotated_at.map(millis))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn rotate_refresh_token(&self, tenant: TenantId, token_hash: &[u8], at: OffsetDateTime) -> Result<Rotation, StoreError> {
                let rotated = sqlx::query(concat!(
                    "UPDATE refresh_tokens SET rotated_at = $3 \
                     WHERE tenant_id = $1 AND token_hash = $2 AND rotated_at IS NULL RETURNING ", refresh_columns!()
                ))
                .bind(tenant.0)
                .bind(token_hash)
                .bind(millis(at))
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                if let Some(row) = rotated {
                    return Ok(Rotation::Rotated(Self::refresh_from_row(&row).map_err(store_err)?));
                }
                let existing = sqlx::query(concat!(
                    "SELECT ", refresh_columns!(), " FROM refresh_tokens WHERE tenant_id = $1 AND token_hash = $2"
                ))
                .bind(tenant.0)
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                match existing {
                    Some(row) => Ok(Rotation::AlreadyRotated(Self::refresh_from_row(&row).map_err(store_err)?)),
                    None => Ok(Rotation::NotFound),
                }
            }

            async fn signing_keys(&self, tenant: TenantId, limit: u32) -> Result<Vec<KeyRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT kid, generation, alg, public_jwk, private_key, created_at FROM signing_keys \
                     WHERE tenant_id = $1 ORDER BY generation DESC LIMIT $2",
                )
                .bind(tenant.0)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
                rows.iter().map(Self::key_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn insert_signing_key(&self, tenant: TenantId, k: &KeyRecord) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO signing_keys (kid, tenant_id, generation, alg, public_jwk, private_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, generation) DO NOTHING",
                )
                .bind(&k.kid)
                .bind(tenant.0)
                .bind(k.generation)
                .bind(&k.alg)
                .bind(&k.public_jwk)
                .bind(k.private_key.as_slice())
                .bind(millis(k.created_at))
                .execute(&self.pool)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn purge_expired(&self, before: OffsetDateTime) -> Result<Purged, StoreError> {
                const BATCH: i64 = 1000;
                let mut purged = Purged::default();
                loop {
                    let done = sqlx::query(
                        "DELETE FROM one_time_codes WHERE expires_at < $1 AND user_id IN \
                         (SELECT user_id FROM one_time_codes WHERE expires_at < $1 LIMIT $2)",
                    )
                    .bind(millis(before))
                    .bind(BATCH)
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                    purged.codes += done.rows_affected();
                    if done.rows_affected() < BATCH as u64 {
                        break;
                    }
                }
                loop {
                    let done = sqlx::query(
                        "DELETE FROM sessions WHERE id IN \
                         (SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)",
                    )
                    .bind(millis(before))
                    .bind(BATCH)
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                    purged.sessions += done.rows_affected();
                    if done.rows_affected() < BATCH as u64 {
                        break;
                    }
                }
                Ok(purged)
            }
        }
    };
}
