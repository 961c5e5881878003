//! `AuditStore` for both backends: the audit_events table (migration 0005). A batch is one
//! multi-row INSERT; queries are built from the filters that are set, with numbered
//! placeholders both backends accept.

macro_rules! sql_audit {
    ($name:ident, $db:ty) => {
        #[async_trait]
        impl AuditStore for $name {
            async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                /// Columns per row.
                const COLUMNS: usize = 10;
                if events.is_empty() {
                    return Ok(());
                }
                let mut sql = String::from(
                    "INSERT INTO audit_events (id, at, tenant_id, user_id, email, kind, surface, ip, user_agent, detail) VALUES ",
                );
                for i in 0..events.len() {
                    let first = i * COLUMNS + 1;
                    let row: Vec<String> = (first..first + COLUMNS).map(|n| format!("${n}")).collect();
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('(');
                    sql.push_str(&row.join(", "));
                    sql.push(')');
                }
                sql.push_str(" ON CONFLICT (id) DO NOTHING");
                // Fixed text and numbered placeholders only: every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for e in events {
                    query = query
                        .bind(e.id)
                        .bind(millis(e.at))
                        .bind(e.tenant.0)
                        .bind(e.user_id.map(|u| u.0))
                        .bind(e.email.clone())
                        .bind(e.kind.as_str())
                        .bind(e.surface.clone())
                        .bind(e.ip.clone())
                        .bind(e.user_agent.clone())
                        .bind(e.detail.clone());
                }
                query.execute(&self.writer).await.map_err(store_err)?;
                Ok(())
            }

            async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
                let mut conditions: Vec<String> = Vec::new();
                let mut n = 0;
                let mut next = || {
                    n += 1;
                    format!("${n}")
                };
                if q.tenant.is_some() {
                    conditions.push(format!("tenant_id = {}", next()));
                }
                if q.user_id.is_some() {
                    conditions.push(format!("user_id = {}", next()));
                }
                if q.email.is_some() {
                    conditions.push(format!("LOWER(email) = LOWER({})", next()));
                }
                if !q.kinds.is_empty() {
                    let list: Vec<String> = q.kinds.iter().map(|_| next()).collect();
                    conditions.push(format!("kind IN ({})", list.join(", ")));
                }
                if q.since.is_some() {
                    conditions.push(format!("at >= {}", next()));
                }
                if q.until.is_some() {
                    conditions.push(format!("at < {}", next()));
                }
                let limit = next();
                let filter =
                    if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
                let sql = format!(
                    "SELECT id, at, tenant_id, user_id, email, kind, surface, ip, user_agent, detail \
                     FROM audit_events {filter} ORDER BY at DESC, id DESC LIMIT {limit}"
                );
                // Fixed text and numbered placeholders only: every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(t) = q.tenant {
                    query = query.bind(t.0);
                }
                if let Some(u) = q.user_id {
                    query = query.bind(u.0);
                }
                if let Some(e) = &q.email {
                    query = query.bind(e.clone());
                }
                for k in &q.kinds {
                    query = query.bind(k.as_str());
                }
                if let Some(t) = q.since {
                    query = query.bind(millis(t));
                }
                if let Some(t) = q.until {
                    query = query.bind(millis(t));
                }
                let rows = query.bind(i64::from(q.limit)).fetch_all(&self.pool).await.map_err(store_err)?;
                rows.iter()
                    .map(|row| -> Result<AuditEvent, sqlx::Error> {
                        let kind: String = row.try_get("kind")?;
                        let user_id: Option<uuid::Uuid> = row.try_get("user_id")?;
                        Ok(AuditEvent {
                            id: row.try_get("id")?,
                            at: from_millis(row.try_get("at")?),
                            tenant: TenantId(row.try_get("tenant_id")?),
                            user_id: user_id.map(UserId),
                            email: row.try_get("email")?,
                            kind: AuditKind::from_name(&kind).ok_or_else(|| {
                                sqlx::Error::Decode(format!("audit_events.kind: unknown kind {kind:?}").into())
                            })?,
                            surface: row.try_get("surface")?,
                            ip: row.try_get("ip")?,
                            user_agent: row.try_get("user_agent")?,
                            detail: row.try_get("detail")?,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_err)
            }

            async fn purge_audit_events(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
                const BATCH: i64 = 1000;
                let mut total = 0;
                loop {
                    let done = sqlx::query(
                        "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)",
                    )
                    .bind(millis(before))
                    .bind(BATCH)
                    .execute(&self.writer)
                    .await
                    .map_err(store_err)?;
                    total += done.rows_affected();
                    if done.rows_affected() < BATCH as u64 {
                        return Ok(total);
                    }
                }
            }
        }
    };
}
