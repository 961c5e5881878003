//! `latchkey import`: users from another service's dump, JSON Lines or CSV (README,
//! "Migrating users from another service"), streamed from a file or standard input into the
//! configured database, whether or not a server runs; and `latchkey export`, the same rows out. Every rule (the row's fields, the hash formats and their cost bounds,
//! what an existing account means) is the core's ([`Auth::import_batch`]); this module reads
//! lines, hands them over in batches and reports.
//!
//! A bad row is reported on standard error as `line N: reason` and never stops the rest; the
//! summary line goes to standard output; the command fails when any row failed.

use std::io::{BufRead, BufReader, IsTerminal as _, Read};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use latchkey_core::identity::TenantId;
use latchkey_core::{Auth, ImportRow, Imported};

use crate::app::open_core;
use crate::config::Config;

/// The formats `latchkey import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines: one import row object per line.
    Jsonl,
    /// CSV with a header line naming the import row's fields (any order, any subset with
    /// `email` or `username`); empty cells are absent values.
    Csv,
    /// The JSON output of `aws cognito-idp list-users` (one document or several in a row):
    /// `sub` becomes the id; no password hashes (Cognito exports none). Bad users are
    /// reported as `user N (username): reason`, counting from 1.
    Cognito,
}

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

/// Imports rows of `format` from `path` (`-`: standard input) into `tenant`, reporting each
/// bad row to `report` as `line N: reason` (N counts from 1; for CSV, the record's first
/// line). Rows are read one at a time (memory flat in the file size); on a terminal a
/// progress bar on standard error follows the bytes read. Blank JSON lines are skipped.
///
/// # Errors
/// The file cannot be opened or read, the tenant does not exist, or the database fails (rows
/// already imported stay).
pub async fn run(
    config: &Config,
    tenant: TenantId,
    format: Format,
    path: &str,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    let (input, length): (Box<dyn Read + Send + 'static>, Option<u64>) = if path == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        let length = file.metadata().ok().map(|m| m.len());
        (Box::new(file), length)
    };
    let progress = progress_bar(length);
    let input = BufReader::with_capacity(1 << 16, progress.wrap_read(input));
    let (database, auth) = open_core(config).await?;
    let mut report = |line: String| progress.suspend(|| report(line));
    let result = match format {
        Format::Jsonl => import_lines(&auth, tenant, input, dry_run, &mut report).await,
        Format::Csv => import_csv(&auth, tenant, input, dry_run, &mut report).await,
        Format::Cognito => import_cognito(&auth, tenant, input, dry_run, &mut report).await,
    };
    progress.finish_and_clear();
    database.close().await;
    result
}

/// A progress bar over `length` bytes (a spinner when unknown), drawn on standard error only
/// when it is a terminal.
fn progress_bar(length: Option<u64>) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = match length {
        Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, target),
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Rows handed to the core per [`Auth::import_batch`]: a few round trips per 500 rows instead
/// of several per row, with memory still flat in the file size.
const IMPORT_BATCH: usize = 500;

/// Rows read but not imported yet, each with the prefix of its report line (`line 7`,
/// `user 3 (ana)`), in input order; rows that could not be read wait here too, so that the
/// report keeps the input's order.
struct Pending<'a> {
    auth: &'a Auth,
    tenant: TenantId,
    dry_run: bool,
    entries: Vec<(String, Result<ImportRow, String>)>,
    rows: usize,
    summary: ImportSummary,
    /// Users created when the store's statistics were last refreshed.
    analyzed_at: u64,
}

impl<'a> Pending<'a> {
    fn new(auth: &'a Auth, tenant: TenantId, dry_run: bool) -> Self {
        Self { auth, tenant, dry_run, entries: Vec::new(), rows: 0, summary: ImportSummary::default(), analyzed_at: 0 }
    }

    /// Queues a row, importing the batch once it is full.
    async fn row(&mut self, prefix: String, row: ImportRow, report: &mut dyn FnMut(String)) -> anyhow::Result<()> {
        self.entries.push((prefix, Ok(row)));
        self.rows += 1;
        if self.rows >= IMPORT_BATCH {
            self.flush(report).await?;
        }
        Ok(())
    }

    /// Queues a failure to read a row.
    fn failed(&mut self, prefix: String, reason: String) {
        self.entries.push((prefix, Err(reason)));
    }

    /// Imports the queued rows and reports every queued outcome, in order.
    async fn flush(&mut self, report: &mut dyn FnMut(String)) -> anyhow::Result<()> {
        let rows: Vec<ImportRow> = self.entries.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
        let mut outcomes = self.auth.import_batch(self.tenant, &rows, self.dry_run).await?.into_iter();
        for (prefix, entry) in self.entries.drain(..) {
            let outcome = match entry {
                Ok(_) => outcomes.next().ok_or_else(|| anyhow!("a row without its outcome"))?.map_err(|r| r.0),
                Err(reason) => Err(reason),
            };
            match outcome {
                Ok(Imported::Created(_)) => self.summary.created += 1,
                Ok(Imported::Unchanged(_)) => self.summary.unchanged += 1,
                Err(reason) => {
                    self.summary.failed += 1;
                    report(format!("{prefix}: {reason}"));
                }
            }
        }
        self.rows = 0;
        // Each time the users created double (from one batch on), the planner learns the
        // table's new size: about twenty refreshes for a million rows.
        if self.summary.created >= (2 * self.analyzed_at).max(IMPORT_BATCH as u64) {
            self.auth.refresh_user_statistics().await?;
            self.analyzed_at = self.summary.created;
        }
        Ok(())
    }

    /// Imports what is left and gives the summary.
    async fn finish(mut self, report: &mut dyn FnMut(String)) -> anyhow::Result<ImportSummary> {
        self.flush(report).await?;
        Ok(self.summary)
    }
}

async fn import_lines(
    auth: &Auth,
    tenant: TenantId,
    mut input: impl BufRead,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    auth.tenant(tenant).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
    let mut pending = Pending::new(auth, tenant, dry_run);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).with_context(|| format!("reading line {}", number + 1))? == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Invalid UTF-8 is that row's failure, reported like any other.
        match serde_json::from_slice::<ImportRow>(&line) {
            Ok(row) => pending.row(format!("line {number}"), row, report).await?,
            Err(e) => pending.failed(format!("line {number}"), format!("not an import row: {e}")),
        }
    }
    pending.finish(report).await
}

async fn import_csv(
    auth: &Auth,
    tenant: TenantId,
    input: impl Read,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    auth.tenant(tenant).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
    let mut pending = Pending::new(auth, tenant, dry_run);
    let mut reader = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(input);
    let headers = reader.headers().context("reading the CSV header line")?.clone();
    let mut record = csv::StringRecord::new();
    loop {
        let read = reader.read_record(&mut record);
        let line = record.position().map_or(0, csv::Position::line);
        match read {
            Ok(false) => break,
            Ok(true) => match record.deserialize::<ImportRow>(Some(&headers)) {
                Ok(row) => pending.row(format!("line {line}"), row, report).await?,
                Err(e) => pending.failed(format!("line {line}"), format!("not an import row: {e}")),
            },
            // A record with the wrong number of fields, or invalid UTF-8: that record only.
            Err(e) if !e.is_io_error() => {
                let line = e.position().map_or(line, csv::Position::line);
                pending.failed(format!("line {line}"), format!("not a CSV record: {e}"));
            }
            Err(e) => return Err(anyhow!("reading the CSV: {e}")),
        }
    }
    pending.finish(report).await
}

/// Users fetched per page by [`export`].
const EXPORT_PAGE: u32 = 1000;

/// Writes every user of `tenant` to `out` as JSON Lines in the import format, oldest first,
/// one page of 1000 at a time (memory flat in the number of users; on a terminal, a spinner on
/// standard error counts them); returns how many.
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
    let progress = progress_bar(None);
    let mut written = 0u64;
    let mut after = None;
    loop {
        let (page, next) =
            auth.export_page(tenant, after, EXPORT_PAGE).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
        for row in &page {
            serde_json::to_writer(&mut *out, row).context("writing the export")?;
            out.write_all(b"\n").context("writing the export")?;
        }
        written += page.len() as u64;
        progress.set_position(written);
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    progress.finish_and_clear();
    out.flush().context("writing the export")?;
    Ok(written)
}

/// One user of `aws cognito-idp list-users` output (Cognito `UserType`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CognitoUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    attributes: Vec<CognitoAttribute>,
    /// Epoch seconds from the API, an ISO 8601 string from the AWS CLI.
    #[serde(default)]
    user_create_date: Option<serde_json::Value>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// A Cognito `AttributeType`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CognitoAttribute {
    name: String,
    #[serde(default)]
    value: Option<String>,
}

impl CognitoUser {
    /// The import row: `sub` as the id (so tokens' subjects stay meaningful), the email and
    /// profile attributes, `email_verified`, the creation date, `Enabled`; no password hash
    /// (Cognito exports none: these users sign in after a password reset).
    fn to_row(&self) -> ImportRow {
        let attribute = |name: &str| {
            self.attributes.iter().find(|a| a.name == name).and_then(|a| a.value.clone()).filter(|v| !v.is_empty())
        };
        let created_at = match &self.user_create_date {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128).ok())
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            _ => None,
        };
        ImportRow {
            id: attribute("sub"),
            email: attribute("email"),
            email_verified: attribute("email_verified").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            given_name: attribute("given_name"),
            family_name: attribute("family_name"),
            phone_number: attribute("phone_number"),
            address: attribute("address"),
            picture: attribute("picture"),
            created_at,
            disabled: self.enabled == Some(false),
            ..ImportRow::default()
        }
    }
}

/// Feeds each element of every `Users` array in a stream of `list-users` documents to a
/// channel, one at a time (memory flat however many users one document holds).
/// The flag is up while a document is being read, so that input ending inside one is told
/// from input ending between documents.
struct UsersVisitor<'s>(&'s tokio::sync::mpsc::Sender<Result<CognitoUser, String>>, &'s std::cell::Cell<bool>);

impl<'de> serde::de::Visitor<'de> for UsersVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the output of `aws cognito-idp list-users`: an object with a `Users` array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.1.set(true);
        while let Some(key) = map.next_key::<String>()? {
            if key == "Users" {
                map.next_value_seed(UsersSeq(self.0))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        self.1.set(false);
        Ok(())
    }
}

struct UsersSeq<'s>(&'s tokio::sync::mpsc::Sender<Result<CognitoUser, String>>);

impl<'de> serde::de::DeserializeSeed<'de> for UsersSeq<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UsersSeq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of Cognito users")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each element as a JSON value first, so that one malformed user is reported and
        // skipped rather than ending the whole document.
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            let user = serde_json::from_value::<CognitoUser>(value).map_err(|e| e.to_string());
            if self.0.blocking_send(user).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

async fn import_cognito(
    auth: &Auth,
    tenant: TenantId,
    input: impl Read + Send + 'static,
    dry_run: bool,
    report: &mut dyn FnMut(String),
) -> anyhow::Result<ImportSummary> {
    use serde::Deserializer as _;
    auth.tenant(tenant).await.map_err(|e| anyhow!("--tenant {tenant}: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let parser = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut de = serde_json::Deserializer::from_reader(input);
        let inside = std::cell::Cell::new(false);
        loop {
            // Several documents may follow one another (pages saved one after the other).
            match de.deserialize_map(UsersVisitor(&tx, &inside)) {
                Ok(()) => {}
                Err(e) if e.is_eof() && !inside.get() => return Ok(()),
                Err(e) => return Err(anyhow!("not `aws cognito-idp list-users` output: {e}")),
            }
        }
    });
    let mut pending = Pending::new(auth, tenant, dry_run);
    let mut number = 0u64;
    while let Some(user) = rx.recv().await {
        number += 1;
        match user {
            Ok(user) => {
                let name = user.username.clone().unwrap_or_default();
                pending.row(format!("user {number} ({name})"), user.to_row(), report).await?;
            }
            Err(e) => pending.failed(format!("user {number}"), format!("not a Cognito user: {e}")),
        }
    }
    parser.await.map_err(|e| anyhow!("the Cognito parser failed: {e}"))??;
    pending.finish(report).await
}
