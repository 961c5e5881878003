//! `UserStore` for both backends: the users table.

macro_rules! sql_users {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl UserStore for $name {
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

            async fn replace_unverified_user(&self, r: &UserRecord) -> Result<bool, StoreError> {
                let u = &r.user;
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $3, username = $4, given_name = $5, family_name = $6, \
                     phone_number = $7, address = $8, picture = $9, updated_at = $10 \
                     WHERE tenant_id = $1 AND id = $2 AND email_verified = $11",
                )
                .bind(u.tenant.0)
                .bind(u.id.0)
                .bind(r.password_hash.as_deref())
                .bind(u.username.as_ref().map(Username::as_str))
                .bind(u.profile.given_name.as_deref())
                .bind(u.profile.family_name.as_deref())
                .bind(u.profile.phone_number.as_deref())
                .bind(u.profile.address.as_deref())
                .bind(u.profile.picture.as_deref())
                .bind(millis(u.updated_at))
                .bind(false)
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
        }
    };
}
