//! `KeyStore` for both backends: the signing_keys table.

macro_rules! sql_keys {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl KeyStore for $name {
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
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
