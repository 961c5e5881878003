//! `latchkey import`: users from another service's dump, one JSON object per line (README,
//! "Migrating"), streamed from a file or standard input into the configured database, whether
//! or not a server runs. Every rule (the row's fields, the hash formats and their cost bounds,
//! what an existing account means) is the core's ([`Auth::import_user`]); this module reads
//! lines and reports.
//!
//! A bad row is reported on standard error as `line N: reason` and never stops the rest; the
//! summary line goes to standard output; the command fails when any row failed.

use anyhow::{Context, anyhow};
use latchkey_core::identity::TenantId;
use latchkey_core::{Auth, ImportRow, Imported};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::app::open_core;
use crate::config::Config;

/// What an import did, row by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Users created (or, in a dry run, that would be).
    pub created: u64,
    /// Rows describing users already there exactly: nothing changed.
    pub unchanged: u64,
    /// Rows reported as failed.
    pub failed: u64,
}

impl ImportSummary {
    /// The summary line: `imported 3, unchanged 1, failed 2` (`would import` in a dry run).
    pub fn line(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would import" } else { "imported" };
        format!("{verb} {}, unchanged {}, failed {}", self.created, self.unchanged, self.failed)
    }
}

/// Imports JSON Lines from `path` (`-`: standard input) into `tenant`, reporting each bad row
/// to `report` as `line N: reason`. Blank lines are skipped.
///
/// # Errors
/// The file cannot be opened or read, the tenant does not exist, or the database fails (rows
/// already imported stay).
pub async fn run(
    config: &Config,
    tenant: TenantId,
    path: &str,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    let input: Box<dyn AsyncBufRead + Unpin + Send> = if path == "-" {
        Box::new(BufReader::new(tokio::io::stdin()))
    } else {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {path}"))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let (database, auth) = open_core(config).await?;
    let result = import_lines(&auth, tenant, input, dry_run, report).await;
    database.close().await;
    result
}

async fn import_lines(
    auth: &Auth,
    tenant: TenantId,
    input: Box<dyn AsyncBufRead + Unpin + Send>,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    auth.tenant(tenant).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
    let mut summary = ImportSummary::default();
    let mut lines = input.lines();
    let mut number = 0u64;
    while let Some(line) = lines.next_line().await.with_context(|| format!("reading line {}", number + 1))? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: ImportRow = match serde_json::from_str(&line) {
            Ok(row) => row,
            Err(e) => {
                summary.failed += 1;
                report(format!("line {number}: not an import row: {e}"));
                continue;
            }
        };
        match auth.import_user(tenant, &row, dry_run).await? {
            Ok(Imported::Created(_)) => summary.created += 1,
            Ok(Imported::Unchanged(_)) => summary.unchanged += 1,
            Err(rejected) => {
                summary.failed += 1;
                report(format!("line {number}: {rejected}"));
            }
        }
    }
    Ok(summary)
}

/// Users fetched per page by [`export`].
const EXPORT_PAGE: u32 = 1000;

/// Writes every user of `tenant` to `out` as JSON Lines in the import format, oldest first,
/// one page of 1000 at a time (memory flat in the number of users); returns how many.
/// Password hashes are written exactly as stored: Latchkey's argon2id, or the imported hash of
/// a user who has not signed in since.
///
/// # Errors
/// The tenant does not exist, the database fails, or `out` cannot be written.
pub async fn export(config: &Config, tenant: TenantId, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64> {
    let (database, auth) = open_core(config).await?;
    let result = export_rows(&auth, tenant, out).await;
    database.close().await;
    result
}

async fn export_rows(auth: &Auth, tenant: TenantId, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64> {
    let mut written = 0u64;
    loop {
        let page =
            auth.export_page(tenant, EXPORT_PAGE, written).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
        for row in &page {
            serde_json::to_writer(&mut *out, row).context("writing the export")?;
            out.write_all(b"\n").context("writing the export")?;
        }
        written += page.len() as u64;
        if page.len() < EXPORT_PAGE as usize {
            break;
        }
    }
    out.flush().context("writing the export")?;
    Ok(written)
}
