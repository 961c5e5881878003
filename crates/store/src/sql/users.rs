//! `UserStore` for both backends: the users table.

macro_rules! sql_users {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl UserStore for $name {
            async fn insert_user(&self, r: &UserRecord) -> Result<(), StoreError> {
                Self::insert_user_query(r).execute(&self.writer).await.map_err(store_err)?;
                Ok(())
            }

            async fn insert_user_with(
                &self,
                r: &UserRecord,
                srp_verifier: Option<&[u8]>,
                code: Option<&CodeRecord>,
            ) -> Result<(), StoreError> {
                // One commit instead of one per row: on PostgreSQL each commit waits for a WAL
                // flush. Dropping the transaction on an error rolls it back.
                let mut tx = self.writer.begin().await.map_err(store_err)?;
                Self::insert_user_query(r).execute(&mut *tx).await.map_err(store_err)?;
                if let Some(sealed) = srp_verifier {
                    Self::put_srp_verifier_query(r.user.tenant, r.user.id, sealed, r.user.created_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(store_err)?;
                }
                if let Some(code) = code {
                    Self::put_code_query(code).execute(&mut *tx).await.map_err(store_err)?;
                }
                tx.commit().await.map_err(store_err)
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
                .execute(&self.writer)
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
                    .execute(&self.writer)
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
                .execute(&self.writer)
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
                    .execute(&self.writer)
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
                .execute(&self.writer)
                .await
                .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn users_matching(
                &self,
                tenant: TenantId,
                emails: &[String],
                usernames: &[String],
                external_ids: &[String],
            ) -> Result<Vec<UserRecord>, StoreError> {
                // One indexed lookup per column, joined by UNION: a single WHERE with an OR of
                // IN lists gets a generic plan on PostgreSQL that filters every user of the
                // tenant through the lists.
                let mut query = sqlx::QueryBuilder::<$db>::new("");
                let mut first = true;
                for (column, values) in
                    [("u.email_normalized", emails), ("u.username", usernames), ("u.external_id", external_ids)]
                {
                    if values.is_empty() {
                        continue;
                    }
                    if !first {
                        query.push(" UNION ");
                    }
                    first = false;
                    query.push(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.tenant_id = "));
                    query.push_bind(tenant.0).push(" AND ").push(column).push(" IN (");
                    let mut list = query.separated(", ");
                    for value in values {
                        list.push_bind(value.as_str());
                    }
                    list.push_unseparated(")");
                }
                if first {
                    return Ok(Vec::new());
                }
                let rows = query.build().fetch_all(&self.pool).await.map_err(store_err)?;
                rows.iter().map(Self::user_from_row).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn existing_user_ids(&self, ids: &[UserId]) -> Result<Vec<UserId>, StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id FROM users WHERE id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.0);
                }
                list.push_unseparated(")");
                let rows = query.build().fetch_all(&self.pool).await.map_err(store_err)?;
                rows.iter().map(|row| row.try_get("id").map(UserId)).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn insert_users(&self, users: &[UserRecord]) -> Result<Vec<UserId>, StoreError> {
                if users.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO users (id, tenant_id, email, email_normalized, email_verified, username, external_id, \
                     password_hash, given_name, family_name, phone_number, address, picture, disabled, created_at, updated_at) ",
                );
                query.push_values(users, |mut row, r| {
                    let u = &r.user;
                    row.push_bind(u.id.0)
                        .push_bind(u.tenant.0)
                        .push_bind(u.email.as_ref().map(|e| e.as_str().to_owned()))
                        .push_bind(u.email.as_ref().map(Email::normalized))
                        .push_bind(u.email_verified)
                        .push_bind(u.username.as_ref().map(|n| n.as_str().to_owned()))
                        .push_bind(u.external_id.as_ref().map(|x| x.as_str().to_owned()))
                        .push_bind(r.password_hash.clone())
                        .push_bind(u.profile.given_name.clone())
                        .push_bind(u.profile.family_name.clone())
                        .push_bind(u.profile.phone_number.clone())
                        .push_bind(u.profile.address.clone())
                        .push_bind(u.profile.picture.clone())
                        .push_bind(u.disabled)
                        .push_bind(millis(u.created_at))
                        .push_bind(millis(u.updated_at));
                });
                query.push(" ON CONFLICT DO NOTHING RETURNING id");
                let rows = query.build().fetch_all(&self.writer).await.map_err(store_err)?;
                rows.iter().map(|row| row.try_get("id").map(UserId)).collect::<Result<_, _>>().map_err(store_err)
            }

            async fn refresh_user_statistics(&self) -> Result<(), StoreError> {
                if <$db as sqlx::Database>::NAME == "PostgreSQL" {
                    sqlx::query("ANALYZE users").execute(&self.pool).await.map_err(store_err)?;
                }
                Ok(())
            }

            async fn delete_user(&self, tenant: TenantId, id: UserId) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&self.writer)
                    .await
                    .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
