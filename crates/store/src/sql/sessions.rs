//! `SessionStore` for both backends: the sessions and refresh_tokens tables. Rotation is one
//! conditional UPDATE, so exactly one of two concurrent refreshes rotates a token.

/// PostgreSQL's refresh in one statement (data-modifying `WITH`, PostgreSQL documentation
/// 7.8.4): rotate the token, read its session and user, and store the successor when the
/// session is active and its user not disabled. No row: the token was not fresh. Parameters:
/// `$1` tenant, `$2` token hash, `$3` now (milliseconds), `$4` successor hash.
pub const ROTATE_IN_ONE_STATEMENT: &str = concat!(
    "WITH r AS (UPDATE refresh_tokens SET rotated_at = $3 \
       WHERE tenant_id = $1 AND token_hash = $2 AND rotated_at IS NULL \
       RETURNING token_hash, tenant_id, session_id, created_at, rotated_at), \
     live AS (SELECT r.token_hash AS r_token_hash, r.tenant_id AS r_tenant_id, r.session_id AS r_session_id, \
       r.created_at AS r_created_at, r.rotated_at AS r_rotated_at, ",
    session_columns!(),
    ", ",
    user_columns!(),
    " FROM r LEFT JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
       LEFT JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id), \
     successor AS (INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at, rotated_at) \
       SELECT $4, $1, r_session_id, $3, NULL FROM live \
       WHERE s_id IS NOT NULL AND s_revoked_at IS NULL AND s_expires_at > $3 AND NOT disabled \
       ON CONFLICT (token_hash) DO NOTHING) \
     SELECT * FROM live"
);

/// SQLite's refresh, three statements in one batch (run in one transaction): rotate the token
/// (its row is returned only if this call rotated it); store the successor when this call
/// rotated the token (`changes()`: rows changed by the statement before) and its session is
/// active and its user not disabled; read the session and user. Parameters as
/// [`ROTATE_IN_ONE_STATEMENT`].
pub const ROTATE_IN_ONE_BATCH: &str = concat!(
    "UPDATE refresh_tokens SET rotated_at = $3 \
       WHERE tenant_id = $1 AND token_hash = $2 AND rotated_at IS NULL RETURNING ",
    refresh_columns!(),
    "; INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at, rotated_at) \
       SELECT $4, $1, s.id, $3, NULL FROM refresh_tokens r \
       JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
       JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
       WHERE changes() = 1 AND r.tenant_id = $1 AND r.token_hash = $2 \
         AND s.revoked_at IS NULL AND s.expires_at > $3 AND NOT u.disabled \
       ON CONFLICT (token_hash) DO NOTHING; \
     SELECT ",
    session_columns!(),
    ", ",
    user_columns!(),
    " FROM refresh_tokens r \
       JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
       JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
     WHERE r.tenant_id = $1 AND r.token_hash = $2"
);

macro_rules! sql_sessions {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl SessionStore for $name {
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
                .execute(&self.writer)
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
                    .execute(&self.writer)
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
                .execute(&self.writer)
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
                .fetch_all(&self.writer)
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
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn refresh_token(&self, tenant: TenantId, token_hash: &[u8]) -> Result<Option<RefreshTokenRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ", refresh_columns!(), " FROM refresh_tokens WHERE tenant_id = $1 AND token_hash = $2"
                ))
                .bind(tenant.0)
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                row.as_ref().map(Self::refresh_from_row).transpose().map_err(store_err)
            }

            async fn rotate_refresh_token(
                &self,
                tenant: TenantId,
                token_hash: &[u8],
                successor_hash: &[u8],
                at: OffsetDateTime,
            ) -> Result<Rotation, StoreError> {
                let rotated = if <$db as sqlx::Database>::NAME == "PostgreSQL" {
                    // One statement: one round trip, one commit.
                    let row = sqlx::query(crate::sql::sessions::ROTATE_IN_ONE_STATEMENT)
                        .bind(tenant.0)
                        .bind(token_hash)
                        .bind(millis(at))
                        .bind(successor_hash)
                        .fetch_optional(&self.writer)
                        .await
                        .map_err(store_err)?;
                    row.as_ref().map(Self::rotation_from_row).transpose().map_err(store_err)?
                } else {
                    // SQLite has no data-modifying WITH: the same steps as three statements
                    // sent at once, in one transaction on the writing connection.
                    use futures::TryStreamExt;
                    let mut tx = self.writer.begin().await.map_err(store_err)?;
                    // sqlx 0.9 deprecates several statements in one prepared query (launchbadge/
                    // sqlx#3108) but still runs them on SQLite; sent apart they cost a round trip
                    // each to the connection's thread, and refreshes queue on the one writer.
                    #[allow(deprecated)]
                    let mut results = sqlx::query(crate::sql::sessions::ROTATE_IN_ONE_BATCH)
                        .bind(tenant.0)
                        .bind(token_hash)
                        .bind(millis(at))
                        .bind(successor_hash)
                        .fetch_many(&mut *tx);
                    let (mut statement, mut record, mut live) = (0, None, None);
                    while let Some(item) = results.try_next().await.map_err(store_err)? {
                        match item {
                            sqlx::Either::Left(_) => statement += 1,
                            sqlx::Either::Right(row) if statement == 0 => {
                                record = Some(Self::refresh_from_row(&row).map_err(store_err)?);
                            }
                            sqlx::Either::Right(row) => {
                                live = Some(Box::new((
                                    Self::session_from_row(&row).map_err(store_err)?,
                                    Self::user_from_row(&row).map_err(store_err)?,
                                )));
                            }
                        }
                    }
                    drop(results);
                    tx.commit().await.map_err(store_err)?;
                    record.map(|record| Rotation::Rotated { record, live })
                };
                if let Some(rotation) = rotated {
                    return Ok(rotation);
                }
                Ok(match self.refresh_token(tenant, token_hash).await? {
                    Some(record) => Rotation::AlreadyRotated(record),
                    None => Rotation::NotFound,
                })
            }

        }
    };
}
