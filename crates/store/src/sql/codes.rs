//! `CodeStore` for both backends: the one_time_codes table. Attempts are claimed (before a
//! guess is compared) and codes taken in single statements, so concurrent guesses cannot
//! exceed the limit.

macro_rules! sql_codes {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl CodeStore for $name {
            async fn put_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
                Self::put_code_query(c).execute(&self.writer).await.map_err(store_err)?;
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

            async fn claim_code_attempt(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code_hash: &[u8], now: OffsetDateTime, max_attempts: u32) -> Result<Option<u32>, StoreError> {
                let attempts: Option<i64> = sqlx::query_scalar(
                    "UPDATE one_time_codes SET attempts = attempts + 1 \
                     WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND code_hash = $4 \
                     AND expires_at > $5 AND attempts < $6 RETURNING attempts",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .bind(code_hash)
                .bind(millis(now))
                .bind(i64::from(max_attempts))
                .fetch_optional(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(attempts.map(|a| u32::try_from(a).unwrap_or(u32::MAX)))
            }

            async fn release_code_attempt(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code_hash: &[u8]) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE one_time_codes SET attempts = attempts - 1 \
                     WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND code_hash = $4 AND attempts > 0",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .bind(code_hash)
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(())
            }

            async fn take_code(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code_hash: &[u8], now: OffsetDateTime, max_attempts: u32) -> Result<Option<CodeRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "DELETE FROM one_time_codes WHERE tenant_id = $1 AND user_id = $2 AND purpose = $3 AND code_hash = $4 \
                     AND expires_at > $5 AND attempts <= $6 RETURNING ", code_columns!()
                ))
                .bind(tenant.0)
                .bind(user.0)
                .bind(purpose.as_str())
                .bind(code_hash)
                .bind(millis(now))
                .bind(i64::from(max_attempts))
                .fetch_optional(&self.writer)
                .await
                .map_err(store_err)?;
                row.as_ref().map(Self::code_from_row).transpose().map_err(store_err)
            }
        }
    };
}
