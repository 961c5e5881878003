//! `SrpStore` for both backends: the srp_verifiers and srp_used_challenges tables.

macro_rules! sql_srp {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl SrpStore for $name {
            async fn srp_verifier(&self, tenant: TenantId, user: UserId) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT sealed FROM srp_verifiers WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                row.map(|r| r.try_get("sealed")).transpose().map_err(store_err)
            }

            async fn put_srp_verifier(
                &self,
                tenant: TenantId,
                user: UserId,
                sealed: &[u8],
                at: OffsetDateTime,
            ) -> Result<(), StoreError> {
                Self::put_srp_verifier_query(tenant, user, sealed, at)
                    .execute(&self.writer)
                    .await
                    .map_err(store_err)?;
                Ok(())
            }

            async fn delete_srp_verifiers(&self) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM srp_verifiers").execute(&self.writer).await.map_err(store_err)?;
                Ok(done.rows_affected())
            }

            async fn use_srp_challenge(
                &self,
                tenant: TenantId,
                id: uuid::Uuid,
                expires_at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO srp_used_challenges (id, tenant_id, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(tenant.0)
                .bind(millis(expires_at))
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
