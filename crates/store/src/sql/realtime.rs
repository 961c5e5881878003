//! `RealtimeProfileStore` for both backends: the realtime_profiles table (migration 0003).
//! Writing is one upsert, so concurrent writes for one user leave one row.

macro_rules! sql_realtime {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl RealtimeProfileStore for $name {
            async fn realtime_profile(&self, tenant: TenantId, user: UserId) -> Result<Option<RealtimeProfile>, StoreError> {
                let row = sqlx::query(
                    "SELECT tenant_id, user_id, identity_id, username, email, logged_in, updated_at \
                     FROM realtime_profiles WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.0)
                .bind(user.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
                let Some(row) = row else { return Ok(None) };
                let decode = || -> Result<RealtimeProfile, sqlx::Error> {
                    let email: String = row.try_get("email")?;
                    Ok(RealtimeProfile {
                        tenant: TenantId(row.try_get("tenant_id")?),
                        user_id: UserId(row.try_get("user_id")?),
                        identity_id: row.try_get("identity_id")?,
                        username: row.try_get("username")?,
                        email: Email::parse(&email).map_err(decode_err("email"))?,
                        logged_in: row.try_get("logged_in")?,
                        updated_at: from_millis(row.try_get("updated_at")?),
                    })
                };
                decode().map(Some).map_err(store_err)
            }

            async fn put_realtime_profile(&self, p: &RealtimeProfile) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO realtime_profiles (tenant_id, user_id, identity_id, username, email, logged_in, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET identity_id = excluded.identity_id, \
                     username = excluded.username, email = excluded.email, logged_in = excluded.logged_in, \
                     updated_at = excluded.updated_at",
                )
                .bind(p.tenant.0)
                .bind(p.user_id.0)
                .bind(&p.identity_id)
                .bind(&p.username)
                .bind(p.email.as_str())
                .bind(p.logged_in)
                .bind(millis(p.updated_at))
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(())
            }
        }
    };
}
