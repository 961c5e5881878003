//! `SessionStore` for both backends: the sessions and refresh_tokens tables. Rotation is one
//! conditional UPDATE, so exactly one of two concurrent refreshes rotates a token.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures::TryStreamExt;
use latchkey_core::identity::SessionId;
use latchkey_core::identity::TenantId;
use latchkey_core::ports::{RefreshTokenRecord, Rotation, StoreError};
use latchkey_core::time_util::from_millis;
use sqlx::Row;

use crate::batch::{BatchItem, MAX_BATCH};
use crate::store_err;

/// A refresh-token rotation waiting for its batch (see [`crate::batch`]).
pub(crate) struct RotateItem {
    pub(crate) tenant: TenantId,
    pub(crate) token_hash: Vec<u8>,
    pub(crate) successor_hash: Vec<u8>,
    /// The moment of the rotation, in milliseconds since the epoch.
    pub(crate) at: i64,
}

impl BatchItem for RotateItem {
    /// The token hash is the table's primary key: one rotation of a token per batch.
    type Key = Vec<u8>;
    fn key(&self) -> Vec<u8> {
        self.token_hash.clone()
    }
}

/// PostgreSQL's batch of refreshes in one statement (data-modifying `WITH`, PostgreSQL
/// documentation 7.8.4): rotate each fresh token, read its session and user, and store its
/// successor when the session is active and its user not disabled. One row per token this
/// statement rotated. Parameters, one array element per refresh: `$1` tenants, `$2` token
/// hashes, `$3` successor hashes, `$4` moments (milliseconds).
pub const ROTATE_BATCH_POSTGRES: &str = concat!(
    "WITH i AS (SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::int8[]) \
       AS i(tenant_id, token_hash, successor_hash, at)), \
     r AS (UPDATE refresh_tokens t SET rotated_at = i.at FROM i \
       WHERE t.tenant_id = i.tenant_id AND t.token_hash = i.token_hash AND t.rotated_at IS NULL \
       RETURNING t.token_hash, t.tenant_id, t.session_id, t.created_at, t.rotated_at, i.successor_hash), \
     live AS (SELECT r.token_hash AS r_token_hash, r.tenant_id AS r_tenant_id, r.session_id AS r_session_id, \
       r.created_at AS r_created_at, r.rotated_at AS r_rotated_at, r.successor_hash AS r_successor_hash, ",
    session_columns!(),
    ", ",
    user_columns!(),
    " FROM r LEFT JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
       LEFT JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id), \
     successor AS (INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at, rotated_at) \
       SELECT r_successor_hash, r_tenant_id, r_session_id, r_rotated_at, NULL FROM live \
       WHERE s_id IS NOT NULL AND s_revoked_at IS NULL AND s_expires_at > r_rotated_at AND NOT disabled \
       ON CONFLICT (token_hash) DO NOTHING) \
     SELECT * FROM live"
);

/// Batch sizes with a statement of their own on SQLite; a batch is padded up to the next one
/// with rows that match nothing, so each connection caches at most this many statements.
const SQLITE_BATCH_SIZES: [usize; 7] = [1, 2, 4, 8, 16, 32, MAX_BATCH];

/// SQLite's batch of refreshes for `n` rows of parameters (`$4k+1` tenant, `$4k+2` token
/// hash, `$4k+3` successor hash, `$4k+4` moment in milliseconds), three statements sent at
/// once between `BEGIN IMMEDIATE` and `COMMIT` on the writing connection:
///
/// 1. rotate each fresh token, returning the rows this statement rotated;
/// 2. store the successor of each token rotated at its refresh's moment whose session is
///    active and user not disabled (a token rotated at the same millisecond by an earlier
///    batch has the same successor, which is then already stored: `ON CONFLICT DO NOTHING`);
/// 3. read each token's session and user.
fn sqlite_rotate_batch(n: usize) -> String {
    let values: Vec<String> =
        (0..n).map(|k| format!("(${}, ${}, ${}, ${})", 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 4)).collect();
    let with = format!("WITH i(tenant_id, token_hash, successor_hash, at) AS (VALUES {}) ", values.join(", "));
    let joins = "JOIN refresh_tokens r ON r.tenant_id = i.tenant_id AND r.token_hash = i.token_hash \
                 JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
                 JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id";
    format!(
        "BEGIN IMMEDIATE; \
         {with}UPDATE refresh_tokens AS t SET rotated_at = i.at FROM i \
           WHERE t.tenant_id = i.tenant_id AND t.token_hash = i.token_hash AND t.rotated_at IS NULL \
           RETURNING {refresh}; \
         {with}INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at, rotated_at) \
           SELECT i.successor_hash, i.tenant_id, s.id, i.at, NULL FROM i {joins} \
           WHERE r.rotated_at = i.at AND s.revoked_at IS NULL AND s.expires_at > i.at AND NOT u.disabled \
           ON CONFLICT (token_hash) DO NOTHING; \
         {with}SELECT r.token_hash AS r_token_hash, {session}, {user} FROM i {joins}; \
         COMMIT",
        refresh = refresh_columns!(),
        session = session_columns!(),
        user = user_columns!(),
    )
}

/// [`sqlite_rotate_batch`] for each of [`SQLITE_BATCH_SIZES`], built once.
static SQLITE_ROTATE_BATCHES: LazyLock<Vec<String>> =
    LazyLock::new(|| SQLITE_BATCH_SIZES.iter().map(|&n| sqlite_rotate_batch(n)).collect());

impl crate::SqliteStore {
    /// Rotates a batch of refresh tokens in one transaction; one result per item, in order:
    /// `Some` for each token this batch rotated, `None` for the others. `turn` is released
    /// once the batch holds the writing connection, if the writer pool has only that one: a
    /// later batch then forms and waits for it.
    pub(crate) async fn rotate_batch(
        &self,
        items: &[RotateItem],
        turn: Option<crate::batch::Turn>,
    ) -> Result<Vec<Option<Rotation>>, StoreError> {
        let slot = SQLITE_BATCH_SIZES.iter().position(|&size| size >= items.len()).ok_or_else(|| {
            StoreError::Backend(format!("a batch of {} refreshes is above {MAX_BATCH}", items.len()).into())
        })?;
        let mut query = sqlx::query(SQLITE_ROTATE_BATCHES[slot].as_str());
        for item in items {
            query = query
                .bind(item.tenant.0)
                .bind(item.token_hash.as_slice())
                .bind(item.successor_hash.as_slice())
                .bind(item.at);
        }
        for _ in items.len()..SQLITE_BATCH_SIZES[slot] {
            // Padding: no token has an empty hash.
            query = query.bind(uuid::Uuid::nil()).bind(&[][..]).bind(&[][..]).bind(0_i64);
        }
        let mut conn = self.writer.acquire().await.map_err(store_err)?;
        // With one writing connection the next batch can only run after this one; a pool of
        // several (a store built from any pool) keeps the turn until this batch ends.
        let _turn = if self.writer.options().get_max_connections() == 1 {
            drop(turn);
            None
        } else {
            turn
        };
        let outcome = async {
            // sqlx 0.9 deprecates several statements in one prepared query (launchbadge/sqlx#3108)
            // but still runs them on SQLite. Each message to the connection's thread costs a
            // hand-off, and refreshes queue on the one writer: the transaction's BEGIN and
            // COMMIT travel in the same message as its statements.
            #[allow(deprecated)]
            let mut results = query.fetch_many(&mut *conn);
            let (mut statement, mut rotated, mut live) = (0, HashMap::new(), HashMap::new());
            while let Some(result) = results.try_next().await? {
                match result {
                    sqlx::Either::Left(_) => statement += 1,
                    sqlx::Either::Right(row) if statement == 1 => {
                        let record = Self::refresh_from_row(&row)?;
                        rotated.insert(record.token_hash.clone(), record);
                    }
                    sqlx::Either::Right(row) => {
                        let hash: Vec<u8> = row.try_get("r_token_hash")?;
                        live.insert(hash, Box::new((Self::session_from_row(&row)?, Self::user_from_row(&row)?)));
                    }
                }
            }
            Ok::<_, sqlx::Error>((statement, rotated, live))
        }
        .await;
        let (mut rotated, mut live) = match outcome {
            // BEGIN, UPDATE, INSERT, SELECT, COMMIT: all five ran.
            Ok((5, rotated, live)) => (rotated, live),
            failed => {
                // Whatever ran is undone, and the connection, whose state is unknown, is not
                // reused.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                conn.close_on_drop();
                return Err(match failed {
                    Err(e) => store_err(e),
                    Ok((statements, ..)) => {
                        StoreError::Backend(format!("a batch of refreshes ran {statements} of 5 statements").into())
                    }
                });
            }
        };
        Ok(items
            .iter()
            .map(|item| {
                rotated
                    .remove(&item.token_hash)
                    .map(|record| Rotation::Rotated { record, live: live.remove(&item.token_hash) })
            })
            .collect())
    }
}

impl crate::PgStore {
    /// Decodes a row of `sessions::ROTATE_BATCH_POSTGRES`.
    fn rotation_from_row(row: &sqlx::postgres::PgRow) -> Result<Rotation, sqlx::Error> {
        let rotated_at: Option<i64> = row.try_get("r_rotated_at")?;
        let record = RefreshTokenRecord {
            token_hash: row.try_get("r_token_hash")?,
            tenant: TenantId(row.try_get("r_tenant_id")?),
            session_id: SessionId(row.try_get("r_session_id")?),
            created_at: from_millis(row.try_get("r_created_at")?),
            rotated_at: rotated_at.map(from_millis),
        };
        let found: Option<uuid::Uuid> = row.try_get("s_id")?;
        let live = match found {
            Some(_) => Some(Box::new((Self::session_from_row(row)?, Self::user_from_row(row)?))),
            None => None,
        };
        Ok(Rotation::Rotated { record, live })
    }

    /// Rotates a batch of refresh tokens in one statement; one result per item, in order:
    /// `Some` for each token this batch rotated, `None` for the others. `turn` is held until
    /// the statement has committed: with a pool of connections, a later batch could otherwise
    /// run beside this one.
    pub(crate) async fn rotate_batch(
        &self,
        items: &[RotateItem],
        turn: Option<crate::batch::Turn>,
    ) -> Result<Vec<Option<Rotation>>, StoreError> {
        let _turn = turn;
        // Rows are locked in token order, so batches of two instances that share tokens
        // wait for each other instead of deadlocking.
        let mut order: Vec<&RotateItem> = items.iter().collect();
        order.sort_by(|a, b| a.token_hash.cmp(&b.token_hash));
        let rows = sqlx::query(ROTATE_BATCH_POSTGRES)
            .bind(order.iter().map(|i| i.tenant.0).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.token_hash.clone()).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.successor_hash.clone()).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.at).collect::<Vec<_>>())
            .fetch_all(&self.writer)
            .await
            .map_err(store_err)?;
        let mut rotated = HashMap::new();
        for row in &rows {
            let hash: Vec<u8> = row.try_get("r_token_hash").map_err(store_err)?;
            rotated.insert(hash, Self::rotation_from_row(row).map_err(store_err)?);
        }
        Ok(items.iter().map(|item| rotated.remove(&item.token_hash)).collect())
    }
}

macro_rules! sql_sessions {
    ($name:ident, $db:ty) => {
        impl $name {
            /// Runs a batch of rotations (one transaction); if the batch fails as a whole, runs
            /// its items one by one, so that no item can fail the others (see
            /// [`crate::batch::each_alone_on_failure`]).
            async fn rotate_each_batch(
                &self,
                items: Vec<crate::sql::sessions::RotateItem>,
                turn: crate::batch::Turn,
            ) -> Result<Vec<Result<Option<Rotation>, StoreError>>, StoreError> {
                crate::batch::each_alone_on_failure(&items, turn, |items: &[crate::sql::sessions::RotateItem], turn| {
                    // A future of its own, free of `self`'s borrow: pools are shared handles.
                    let store = self.clone();
                    Box::pin(async move { store.rotate_batch(items, turn).await })
                })
                .await
            }
        }

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
                let item = crate::sql::sessions::RotateItem {
                    tenant,
                    token_hash: token_hash.to_vec(),
                    successor_hash: successor_hash.to_vec(),
                    at: millis(at),
                };
                let store = self.clone();
                let rotated = self
                    .rotations
                    .submit(item, move |items, turn| {
                        let store = store.clone();
                        async move { store.rotate_each_batch(items, turn).await }
                    })
                    .await??;
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
