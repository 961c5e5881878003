//! `TenantStore` for both backends: the tenants and api_keys tables, and the paged listing of
//! a tenant's users. Every query names its tenant (or, for the key lookup, returns the key's
//! tenant for the core to compare).

/// Columns of a tenant row.
macro_rules! tenant_columns {
    () => {
        "id, name, owner_id, require_email_verification, created_at"
    };
}

/// Columns of an API key row.
macro_rules! api_key_columns {
    () => {
        "id, tenant_id, key_hash, hint, created_at, last_used_at, revoked_at"
    };
}

macro_rules! sql_tenants {
    ($name:ident, $db:ty) => {
        impl $name {
            fn tenant_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Tenant, sqlx::Error> {
                let owner: Option<uuid::Uuid> = row.try_get("owner_id")?;
                Ok(Tenant {
                    id: TenantId(row.try_get("id")?),
                    name: row.try_get("name")?,
                    owner: owner.map(UserId),
                    settings: TenantSettings { require_email_verification: row.try_get("require_email_verification")? },
                    created_at: from_millis(row.try_get("created_at")?),
                })
            }

            fn api_key_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ApiKeyRecord, sqlx::Error> {
                let last_used_at: Option<i64> = row.try_get("last_used_at")?;
                let revoked_at: Option<i64> = row.try_get("revoked_at")?;
                Ok(ApiKeyRecord {
                    id: ApiKeyId(row.try_get("id")?),
                    tenant: TenantId(row.try_get("tenant_id")?),
                    key_hash: row.try_get("key_hash")?,
                    hint: row.try_get("hint")?,
                    created_at: from_millis(row.try_get("created_at")?),
                    last_used_at: last_used_at.map(from_millis),
                    revoked_at: revoked_at.map(from_millis),
                })
            }
        }

        #[async_trait]
        impl TenantStore for $name {
            async fn insert_tenant(&self, t: &Tenant, first_key: Option<&ApiKeyRecord>) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await.map_err(store_err)?;
                sqlx::query(
                    "INSERT INTO tenants (id, name, owner_id, require_email_verification, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(t.id.0)
                .bind(&t.name)
                .bind(t.owner.map(|o| o.0))
                .bind(t.settings.require_email_verification)
                .bind(millis(t.created_at))
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
                if let Some(k) = first_key {
                    Self::insert_api_key_with(&mut *tx, k).await?;
                }
                tx.commit().await.map_err(store_err)
            }

            async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.as_ref().map(Self::tenant_from_row).transpose().map_err(store_err)
            }

            async fn tenant_of_owner(&self, owner: UserId) -> Result<Option<Tenant>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE owner_id = $1"))
                    .bind(owner.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.as_ref().map(Self::tenant_from_row).transpose().map_err(store_err)
            }

            async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
                let rows = sqlx::query(concat!("SELECT ", tenant_columns!(), " FROM tenants ORDER BY created_at, id"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_err)?;
                rows.iter().map(Self::tenant_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn insert_api_key(&self, k: &ApiKeyRecord) -> Result<(), StoreError> {
                let mut conn = self.writer.acquire().await.map_err(store_err)?;
                Self::insert_api_key_with(&mut *conn, k).await
            }

            async fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<ApiKeyRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", api_key_columns!(), " FROM api_keys WHERE key_hash = $1"))
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.as_ref().map(Self::api_key_from_row).transpose().map_err(store_err)
            }

            async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    api_key_columns!(),
                    " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
                ))
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
                rows.iter().map(Self::api_key_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn revoke_api_key(
                &self,
                tenant: TenantId,
                id: ApiKeyId,
                at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(millis(at))
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn touch_api_key(
                &self,
                tenant: TenantId,
                id: ApiKeyId,
                at: OffsetDateTime,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(millis(at))
                    .execute(&self.writer)
                    .await
                    .map_err(store_err)?;
                Ok(())
            }

            async fn users_after(
                &self,
                tenant: TenantId,
                after: Option<(OffsetDateTime, UserId)>,
                limit: u32,
            ) -> Result<Vec<UserRecord>, StoreError> {
                let query = match after {
                    None => sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users u WHERE u.tenant_id = $1 ORDER BY u.created_at, u.id LIMIT $2"
                    ))
                    .bind(tenant.0)
                    .bind(i64::from(limit)),
                    Some((created, id)) => sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users u WHERE u.tenant_id = $1 AND (u.created_at > $3 OR (u.created_at = $3 AND u.id > $4)) \
                         ORDER BY u.created_at, u.id LIMIT $2"
                    ))
                    .bind(tenant.0)
                    .bind(i64::from(limit))
                    .bind(millis(created))
                    .bind(id.0),
                };
                let rows = query.fetch_all(&self.pool).await.map_err(store_err)?;
                rows.iter().map(Self::user_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn list_users(
                &self,
                tenant: TenantId,
                limit: u32,
                offset: u64,
            ) -> Result<Vec<UserRecord>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users u WHERE u.tenant_id = $1 ORDER BY u.created_at, u.id LIMIT $2 OFFSET $3"
                ))
                .bind(tenant.0)
                .bind(i64::from(limit))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
                rows.iter().map(Self::user_from_row).collect::<Result<_, _>>().map_err(store_err)
            }
        }

        impl $name {
            async fn insert_api_key_with(
                conn: &mut <$db as sqlx::Database>::Connection,
                k: &ApiKeyRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO api_keys (",
                    api_key_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(k.id.0)
                .bind(k.tenant.0)
                .bind(k.key_hash.as_slice())
                .bind(&k.hint)
                .bind(millis(k.created_at))
                .bind(k.last_used_at.map(millis))
                .bind(k.revoked_at.map(millis))
                .execute(conn)
                .await
                .map_err(store_err)?;
                Ok(())
            }
        }
    };
}
