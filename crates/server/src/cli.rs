//! The operator's commands on tenants, API keys, users and sessions (`latchkey tenant ...`,
//! `latchkey user ...`, `latchkey session ...`). They run the core on the configured
//! database, whether or not a server is running: every rule (key hashing, session
//! revocation) is the core's, and instances serving the same database see the changes on
//! their next request.
//!
//! Each command returns a [`Report`], printed as an aligned table or, with `--json`, as one
//! JSON document. Input errors are one line naming the argument.

use std::fmt::Write as _;

use anyhow::{Context, anyhow};
use latchkey_core::audit::{AuditEvent, AuditKind, AuditQuery, RequestContext};
use latchkey_core::identity::{ApiKeyId, Email, TenantId, User, UserId};
use latchkey_core::tenant::{ApiKeyRecord, Tenant, TenantSettings};
use latchkey_core::{Auth, Error, NewApiKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::open_core;
use crate::config::Config;

/// What a command prints: a table (`columns` over `rows`) or, with `--json`, `json`; `note`
/// goes to standard error in table mode (hints for the next step, warnings).
#[derive(Debug, Clone)]
pub struct Report {
    /// Column headings.
    pub columns: Vec<&'static str>,
    /// One row per record, as many cells as columns.
    pub rows: Vec<Vec<String>>,
    /// The same records as JSON.
    pub json: Value,
    /// A line for standard error, in table mode only.
    pub note: Option<String>,
}

impl Report {
    /// The table, columns aligned with two spaces between them, or the JSON document.
    pub fn render(&self, as_json: bool) -> String {
        if as_json {
            return format!("{:#}\n", self.json);
        }
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(self.columns.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>())
            .chain(self.rows.iter().cloned())
        {
            let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }
}

/// A tenant named on the command line: its id (a UUID), or `default` / `project-owners`.
///
/// # Errors
/// One line naming `--tenant` and what it accepts.
pub fn parse_tenant(raw: &str) -> anyhow::Result<TenantId> {
    match raw.trim() {
        "default" => Ok(TenantId::DEFAULT),
        "project-owners" => Ok(TenantId::PROJECT_OWNERS),
        other => TenantId::parse(other)
            .map_err(|_| anyhow!("--tenant {other:?}: expected a tenant id (UUID), `default` or `project-owners`")),
    }
}

/// A user named on the command line: their id (a UUID) or email address.
#[derive(Debug, Clone)]
pub enum UserRef {
    /// By id.
    Id(UserId),
    /// By email (compared case-insensitively).
    Email(Email),
}

/// Parses a user reference.
///
/// # Errors
/// One line saying that the text is neither a UUID nor an email address.
pub fn parse_user(raw: &str) -> anyhow::Result<UserRef> {
    if let Ok(id) = UserId::parse(raw.trim()) {
        return Ok(UserRef::Id(id));
    }
    Email::parse(raw)
        .map(UserRef::Email)
        .map_err(|_| anyhow!("user {raw:?}: expected a user id (UUID) or an email address"))
}

/// What `latchkey user disable|enable|delete` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    /// Refuse sign-in and end every session at once.
    Disable,
    /// Allow sign-in again.
    Enable,
    /// Delete the user with their sessions.
    Delete,
}

/// An operator command.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create a tenant with its first API key. Its users need not verify their email: no
    /// surface verifies the accounts of a tenant but the default one, which is created with
    /// the database.
    TenantCreate {
        /// The tenant's name.
        name: String,
    },
    /// List tenants.
    TenantList,
    /// Create an API key for a tenant.
    KeyCreate(TenantId),
    /// List a tenant's API keys.
    KeyList(TenantId),
    /// Revoke one of a tenant's API keys.
    KeyRevoke(TenantId, ApiKeyId),
    /// List a tenant's users, one page: `limit` per page, pages from 1.
    UserList {
        /// The tenant.
        tenant: TenantId,
        /// Users per page (1 to 1000).
        limit: u32,
        /// The page, from 1.
        page: u64,
    },
    /// Disable, enable or delete a user.
    User(TenantId, UserRef, UserAction),
    /// Revoke every session of a user.
    SessionRevoke(TenantId, UserRef),
}

/// Runs `command` on the configured database.
///
/// # Errors
/// One line: the unknown tenant, user or key, invalid input, or the database failure.
pub async fn run(config: &Config, command: Command) -> anyhow::Result<Report> {
    let (database, auth) = open_core(config).await?;
    let result = RequestContext::cli().scope(execute(&auth, command)).await;
    auth.flush_audit().await;
    database.close().await;
    result
}

/// A moment named on the command line: RFC 3339 (`2026-01-31T12:00:00Z`), or a duration ago
/// in humantime syntax (`1h`, `7d`, `30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This moment.
    At(OffsetDateTime),
    /// This long before the command runs.
    Ago(std::time::Duration),
}

impl TimeArg {
    /// The moment, with durations counted back from `now`.
    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            TimeArg::At(t) => t,
            TimeArg::Ago(d) => now - d,
        }
    }
}

/// Parses a [`TimeArg`] (a clap value parser for `--since` and `--until`).
///
/// # Errors
/// One line saying what is accepted.
pub fn parse_time(raw: &str) -> Result<TimeArg, String> {
    let raw = raw.trim();
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(TimeArg::At(t));
    }
    match humantime::parse_duration(raw) {
        Ok(d) => Ok(TimeArg::Ago(d)),
        Err(_) => {
            Err(format!("{raw:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration ago (1h, 7d)"))
        }
    }
}

/// Parses an audit event kind (a clap value parser for `--kind`).
///
/// # Errors
/// One line listing the kinds.
pub fn parse_kind(raw: &str) -> Result<AuditKind, String> {
    raw.parse::<AuditKind>().map_err(|e| {
        let names: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("{e}; expected one of {}", names.join(", "))
    })
}

/// The stored audit events matching `query`, newest first (`latchkey audit`), from the
/// configured database, whether or not a server is running.
///
/// # Errors
/// When the database cannot be opened or read.
pub async fn audit(config: &Config, query: &AuditQuery) -> anyhow::Result<Vec<AuditEvent>> {
    let (database, auth) = open_core(config).await?;
    let result = auth.audit_events(query).await.context("reading the audit trail");
    database.close().await;
    result
}

/// One audit event as a JSON object (a line of `latchkey audit --json`).
pub fn audit_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id.to_string(),
        "at": time_text(e.at),
        "tenant": e.tenant.to_string(),
        "user_id": e.user_id.map(|u| u.to_string()),
        "email": e.email,
        "kind": e.kind.as_str(),
        "surface": e.surface,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "detail": e.detail,
    })
}

/// Audit events as `latchkey audit` prints them: JSON Lines (one object per event) with
/// `json`, else an aligned table (time, kind, surface, tenant, user, ip, detail) where the
/// user is the address, or the id when there is none.
pub fn render_audit(events: &[AuditEvent], json: bool) -> String {
    if json {
        return events.iter().map(|e| format!("{}\n", audit_json(e))).collect();
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    Report {
        columns: vec!["time", "kind", "surface", "tenant", "user", "ip", "detail"],
        rows: events
            .iter()
            .map(|e| {
                vec![
                    time_text(e.at),
                    e.kind.as_str().to_owned(),
                    e.surface.clone(),
                    e.tenant.to_string(),
                    e.email.clone().or_else(|| e.user_id.map(|u| u.to_string())).unwrap_or_else(|| "-".into()),
                    dash(e.ip.as_deref()),
                    dash(e.detail.as_deref()),
                ]
            })
            .collect(),
        json: Value::Null,
        note: None,
    }
    .render(false)
}

/// A core error as one line: invalid input names what is wrong.
fn explain(e: Error) -> anyhow::Error {
    match e {
        Error::InvalidInput(fields) => anyhow!(fields.into_iter().map(|f| f.message).collect::<Vec<_>>().join("; ")),
        other => other.into(),
    }
}

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn optional_time(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "-".to_owned(), time_text)
}

fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id.to_string(),
        "name": t.name,
        "owner": t.owner.map(|o| o.to_string()),
        "require_email_verification": t.settings.require_email_verification,
        "created_at": time_text(t.created_at),
    })
}

fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id.to_string(),
        "tenant": k.tenant.to_string(),
        "hint": k.hint,
        "created_at": time_text(k.created_at),
        "last_used_at": k.last_used_at.map(time_text),
        "revoked_at": k.revoked_at.map(time_text),
    })
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id.to_string(),
        "email": u.email.as_ref().map(Email::to_string),
        "username": u.username.as_ref().map(|n| n.as_str().to_owned()),
        "email_verified": u.email_verified,
        "disabled": u.disabled,
        "created_at": time_text(u.created_at),
    })
}

/// A report of a key just created: its text is printed this once.
fn new_key_report(tenant: Option<&Tenant>, key: &NewApiKey) -> Report {
    let mut rows = Vec::new();
    if let Some(t) = tenant {
        rows.push(vec!["tenant".to_owned(), t.id.to_string()]);
        rows.push(vec!["name".to_owned(), t.name.clone()]);
    }
    rows.push(vec!["key id".to_owned(), key.record.id.to_string()]);
    rows.push(vec!["key".to_owned(), key.key.expose().to_owned()]);
    let mut key_value = key_json(&key.record);
    key_value["key"] = Value::String(key.key.expose().to_owned());
    let json = match tenant {
        Some(t) => json!({ "tenant": tenant_json(t), "key": key_value }),
        None => json!({ "key": key_value }),
    };
    Report {
        columns: vec!["field", "value"],
        rows,
        json,
        note: Some("The key is shown this once; only its hash is stored.".into()),
    }
}

async fn find_user(auth: &Auth, tenant: TenantId, user: &UserRef) -> anyhow::Result<User> {
    auth.tenant(tenant).await.with_context(|| format!("tenant {tenant}"))?;
    let found = match user {
        UserRef::Id(id) => auth.user(tenant, *id).await,
        UserRef::Email(email) => auth.user_by_email(tenant, email).await,
    };
    found.with_context(|| match user {
        UserRef::Id(id) => format!("user {id} in tenant {tenant}"),
        UserRef::Email(email) => format!("user {email} in tenant {tenant}"),
    })
}

async fn execute(auth: &Auth, command: Command) -> anyhow::Result<Report> {
    match command {
        Command::TenantCreate { name } => {
            let settings = TenantSettings { require_email_verification: false };
            let (tenant, key) = auth.create_tenant(&name, settings).await.map_err(explain).context("--name")?;
            Ok(new_key_report(Some(&tenant), &key))
        }
        Command::TenantList => {
            let tenants = auth.tenants().await?;
            Ok(Report {
                columns: vec!["id", "name", "owner", "email verification", "created"],
                rows: tenants
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            t.owner.map_or_else(|| "-".to_owned(), |o| o.to_string()),
                            if t.settings.require_email_verification { "required" } else { "not required" }.into(),
                            time_text(t.created_at),
                        ]
                    })
                    .collect(),
                json: Value::Array(tenants.iter().map(tenant_json).collect()),
                note: None,
            })
        }
        Command::KeyCreate(tenant) => {
            let key = auth.create_api_key(tenant).await.map_err(explain).with_context(|| format!("tenant {tenant}"))?;
            Ok(new_key_report(None, &key))
        }
        Command::KeyList(tenant) => {
            let keys = auth.api_keys(tenant).await.with_context(|| format!("tenant {tenant}"))?;
            Ok(Report {
                columns: vec!["id", "hint", "created", "last used", "revoked"],
                rows: keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.to_string(),
                            format!("{}…", k.hint),
                            time_text(k.created_at),
                            optional_time(k.last_used_at),
                            optional_time(k.revoked_at),
                        ]
                    })
                    .collect(),
                json: Value::Array(keys.iter().map(key_json).collect()),
                note: None,
            })
        }
        Command::KeyRevoke(tenant, key) => {
            if !auth.revoke_api_key(tenant, key).await? {
                anyhow::bail!("key {key}: tenant {tenant} has no such key, or it is revoked already");
            }
            Ok(Report {
                columns: vec!["revoked key"],
                rows: vec![vec![key.to_string()]],
                json: json!({ "revoked": key.to_string() }),
                note: None,
            })
        }
        Command::UserList { tenant, limit, page } => {
            if page == 0 {
                anyhow::bail!("--page: pages are numbered from 1");
            }
            let offset = (page - 1).saturating_mul(u64::from(limit));
            let users = auth
                .users_page(tenant, limit, offset)
                .await
                .map_err(explain)
                .with_context(|| format!("tenant {tenant}"))?;
            let more = users.len() == limit as usize;
            Ok(Report {
                columns: vec!["id", "email", "username", "verified", "disabled", "created"],
                rows: users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.to_string(),
                            u.email.as_ref().map_or_else(|| "-".to_owned(), Email::to_string),
                            u.username.as_ref().map_or_else(|| "-".to_owned(), |n| n.as_str().to_owned()),
                            u.email_verified.to_string(),
                            u.disabled.to_string(),
                            time_text(u.created_at),
                        ]
                    })
                    .collect(),
                json: json!({
                    "tenant": tenant.to_string(),
                    "page": page,
                    "limit": limit,
                    "users": users.iter().map(user_json).collect::<Vec<_>>(),
                }),
                note: more.then(|| format!("page {page}; the next page: --page {}", page + 1)),
            })
        }
        Command::User(tenant, user, action) => {
            let found = find_user(auth, tenant, &user).await?;
            let done = match action {
                UserAction::Disable => auth.set_disabled(tenant, found.id, true).await.map(|()| "disabled"),
                UserAction::Enable => auth.set_disabled(tenant, found.id, false).await.map(|()| "enabled"),
                UserAction::Delete => auth.delete_user(tenant, found.id).await.map(|()| "deleted"),
            }
            .with_context(|| format!("user {}", found.id))?;
            Ok(Report {
                columns: vec!["user", "action"],
                rows: vec![vec![found.id.to_string(), done.to_owned()]],
                json: json!({ "user": found.id.to_string(), "tenant": tenant.to_string(), "action": done }),
                note: None,
            })
        }
        Command::SessionRevoke(tenant, user) => {
            let found = find_user(auth, tenant, &user).await?;
            let revoked = auth.sign_out_everywhere(tenant, found.id, None).await?;
            Ok(Report {
                columns: vec!["user", "sessions revoked"],
                rows: vec![vec![found.id.to_string(), revoked.to_string()]],
                json: json!({ "user": found.id.to_string(), "tenant": tenant.to_string(), "revoked": revoked }),
                note: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_json_is_one_document() {
        let report = Report {
            columns: vec!["id", "name"],
            rows: vec![vec!["1".into(), "Acme".into()], vec!["22".into(), "B".into()]],
            json: json!([{"id": 1}]),
            note: None,
        };
        assert_eq!(report.render(false), "id  name\n1   Acme\n22  B\n");
        assert_eq!(serde_json::from_str::<Value>(&report.render(true)).expect("json"), json!([{"id": 1}]));
    }

    #[test]
    fn audit_times_are_rfc3339_or_a_duration_ago() {
        let now = OffsetDateTime::now_utc();
        let t = parse_time("2026-01-31T12:00:00Z").expect("rfc 3339");
        assert_eq!(t.resolve(now), OffsetDateTime::parse("2026-01-31T12:00:00Z", &Rfc3339).expect("time"));
        assert_eq!(parse_time("1h").expect("ago").resolve(now), now - std::time::Duration::from_secs(3600));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_kind("sign_in_failed"), Ok(AuditKind::SignInFailed));
        let e = parse_kind("login").expect_err("unknown kind");
        assert!(e.contains("sign_in_failed"), "{e}");
    }

    #[test]
    fn tenants_and_users_are_named_by_id_or_name() {
        assert_eq!(parse_tenant("default").expect("default"), TenantId::DEFAULT);
        assert!(parse_tenant("acme").is_err());
        assert!(matches!(parse_user("a@example.com"), Ok(UserRef::Email(_))));
        assert!(matches!(parse_user(&UserId::random().to_string()), Ok(UserRef::Id(_))));
        assert!(parse_user("nobody").is_err());
    }
}
