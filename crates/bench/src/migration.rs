//! What bringing users from another service costs: `latchkey import` of a large dump (rows per
//! second, peak RSS) and the first sign-ins of imported users, whose foreign hashes are
//! verified at their imported cost and then replaced with argon2id (README, "Migrating users
//! from another service").

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::Command;

use crate::seed::{self, Directory};
use crate::server::{self, Latchkey, Launch};
use crate::smtp::SmtpSink;

/// Hashes made by the original ecosystems' libraries, with their plaintexts (the same fixtures
/// the core's tests check: `crates/core/tests/fixtures/foreign_hashes.jsonl`).
const FOREIGN: &str = include_str!("../../core/tests/fixtures/foreign_hashes.jsonl");

/// One fixture line.
#[derive(Debug, Clone, serde::Deserialize)]
struct Fixture {
    format: String,
    library: String,
    password: String,
    hash: String,
}

/// The fixtures, one per format: the first hash of each format at the cost its library uses
/// by default (the fixtures of a format list that one first).
fn fixtures() -> anyhow::Result<Vec<Fixture>> {
    let mut out: Vec<Fixture> = Vec::new();
    for line in FOREIGN.lines().filter(|l| !l.trim().is_empty()) {
        let fixture: Fixture = serde_json::from_str(line).context("a foreign hash fixture")?;
        if !out.iter().any(|f| f.format == fixture.format) {
            out.push(fixture);
        }
    }
    Ok(out)
}

/// One run of `latchkey import` over a generated dump.
#[derive(Debug, Clone, Serialize)]
pub struct ImportRun {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Rows in the dump.
    pub rows: u64,
    /// Wall time of the first import (every row created), in seconds.
    pub seconds: f64,
    /// Rows per second of the first import.
    pub rows_per_s: f64,
    /// Wall time of importing the same dump again (every row unchanged), in seconds.
    pub again_seconds: f64,
    /// Rows per second of the second import.
    pub again_rows_per_s: f64,
    /// Peak resident set size of the importing process over both runs, MiB.
    pub peak_rss_mib: f64,
    /// Size of the dump, MiB.
    pub file_mib: f64,
}

/// Writes a JSON Lines dump of `rows` verified users with a bcrypt hash, a username and a
/// profile, as a migration from another service would give.
fn write_dump(path: &Path, rows: u64) -> anyhow::Result<()> {
    let hash = "$2b$10$EEnGB0iAix0mQpq/jNM1yuVbXpC4OGfyzTnm68ks0mUcfXs3We/9q";
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for n in 1..=rows {
        writeln!(
            out,
            r#"{{"email": "imported-{n}@example.com", "email_verified": true, "password_hash": "{hash}", "username": "imported-{n}", "given_name": "Imported", "family_name": "User {n}", "created_at": "2021-02-18T12:31:48Z"}}"#
        )
        .context("writing the dump")?;
    }
    out.flush().context("writing the dump")
}

/// Runs `latchkey import` on `dump` against `database_url`, sampling the process's peak RSS;
/// returns the wall time in seconds and the peak RSS in KiB.
async fn run_import(binary: &Path, work_dir: &Path, database_url: &str, dump: &Path) -> anyhow::Result<(f64, u64)> {
    let mut command = Command::new(binary);
    command.arg("import").arg(dump).current_dir(work_dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(key);
        }
    }
    command
        .env("LATCHKEY_DATABASE_URL", database_url)
        .env("LATCHKEY_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("latchkey import exited at once")?;
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = server::peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        tokio::select! {
            status = child.wait() => break status.context("waiting for latchkey import")?,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().await.context("reading latchkey import's output")?;
    if !status.success() {
        bail!(
            "latchkey import failed ({status}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((seconds, peak))
}

/// Imports a generated dump of `rows` users into a fresh database (PostgreSQL on
/// `postgres_url` when given, else SQLite), then imports it again.
///
/// # Errors
/// When the database cannot be provisioned or an import fails.
pub async fn import(binary: &Path, rows: u64, postgres_url: Option<&str>) -> anyhow::Result<ImportRun> {
    let directory = match postgres_url {
        Some(url) => Directory::postgres(url).await?,
        None => Directory::sqlite()?,
    };
    let dump = directory.work_dir().join("dump.jsonl");
    eprintln!("  writing a dump of {rows} users");
    write_dump(&dump, rows)?;
    let file_mib = std::fs::metadata(&dump).map_or(0.0, |m| m.len() as f64 / 1_048_576.0);
    eprintln!("  latchkey import (every row new)");
    let (seconds, first_peak) = run_import(binary, directory.work_dir(), directory.url(), &dump).await?;
    eprintln!("  latchkey import again (every row unchanged)");
    let (again_seconds, again_peak) = run_import(binary, directory.work_dir(), directory.url(), &dump).await?;
    let run = ImportRun {
        backend: if postgres_url.is_some() { "postgres" } else { "sqlite" },
        rows,
        seconds,
        rows_per_s: rows as f64 / seconds,
        again_seconds,
        again_rows_per_s: rows as f64 / again_seconds,
        peak_rss_mib: first_peak.max(again_peak) as f64 / 1024.0,
        file_mib,
    };
    directory.remove().await?;
    Ok(run)
}

/// First sign-ins of users imported with one foreign hash format.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignRun {
    /// The hash format, as `latchkey import` names it in its fixtures.
    pub format: String,
    /// The library and cost the hash was made with.
    pub library: String,
    /// The start of the hash, showing its parameters.
    pub parameters: String,
    /// Successful first sign-ins (`POST /v1/sessions`, 200) in the window.
    pub sign_ins: u64,
    /// Failed requests (anything but 200).
    pub errors: u64,
    /// Measured time, in seconds.
    pub seconds: f64,
    /// First sign-ins per second.
    pub per_s: f64,
}

/// The hash's parameters without its salt and digest: `$2b$10$`, `$argon2id$v=19$m=…,t=…,p=…$`,
/// `$scrypt$ln=…,r=…,p=…$`, `pbkdf2:sha256:1000000` (Werkzeug), `pbkdf2_sha256$1000000`
/// (Django).
fn parameters(hash: &str) -> String {
    let parts: Vec<&str> = hash.split('$').collect();
    if hash.starts_with("$argon2") {
        parts.iter().take(4).copied().collect::<Vec<_>>().join("$") + "$"
    } else if hash.starts_with('$') {
        parts.iter().take(3).copied().collect::<Vec<_>>().join("$") + "$"
    } else if parts.first().is_some_and(|p| p.contains(':')) {
        parts[0].to_owned()
    } else {
        parts.iter().take(2).copied().collect::<Vec<_>>().join("$")
    }
}

/// For each foreign format: seeds `users` users holding that format's fixture hash into a
/// fresh database, starts Latchkey on it, and has `concurrency` clients sign distinct users in
/// (each sign-in verifies the foreign hash, then hashes the password with argon2id and stores
/// it) for `duration`, or until every user has signed in.
///
/// # Errors
/// When a database, the mail sink or a server cannot be started.
pub async fn foreign_sign_ins(
    binary: &Path,
    users: u64,
    concurrency: usize,
    duration: Duration,
    postgres_url: Option<&str>,
) -> anyhow::Result<Vec<ForeignRun>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().context("HTTP client")?;
    let smtp = SmtpSink::start().await?;
    let mut runs = Vec::new();
    for fixture in fixtures()? {
        eprintln!("  {} ({}): seeding {users} users", fixture.format, fixture.library);
        let directory = match postgres_url {
            Some(url) => Directory::postgres(url).await?,
            None => Directory::sqlite()?,
        };
        // Let the server create the schema first, then seed into it.
        let launch = Launch {
            binary: binary.to_path_buf(),
            database_url: directory.url().to_owned(),
            secret: "bench-secret-bench-secret-bench-secret-0123".to_owned(),
            public_url: None,
            smtp_port: smtp.port,
            work_dir: PathBuf::from(directory.work_dir()),
            extra_env: Vec::new(),
        };
        let server = Latchkey::start(&launch, "foreign", &client).await?;
        seed::seed(directory.url(), users, &fixture.hash).await?;
        let run = sign_in_all(&client, &server.base_url, &fixture, users, concurrency, duration).await;
        server.stop().await?;
        directory.remove().await?;
        runs.push(run?);
    }
    Ok(runs)
}

async fn sign_in_all(
    client: &reqwest::Client,
    base: &str,
    fixture: &Fixture,
    users: u64,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<ForeignRun> {
    let next = Arc::new(AtomicU64::new(1));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, password) = (client.clone(), format!("{base}/v1/sessions"), fixture.password.clone());
        let (next, ok, errors) = (next.clone(), ok.clone(), errors.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > users {
                    break;
                }
                let body = serde_json::json!({"email": seed::email(n), "password": password});
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let sign_ins = ok.load(Ordering::Relaxed);
    Ok(ForeignRun {
        format: fixture.format.clone(),
        library: fixture.library.clone(),
        parameters: parameters(&fixture.hash),
        sign_ins,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        per_s: sign_ins as f64 / seconds,
    })
}

/// The two tables, in Markdown, with `argon2_per_s` (the argon2id ceiling of the same run).
pub fn markdown(imports: &[ImportRun], foreign: &[ForeignRun], argon2_per_s: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if !imports.is_empty() {
        let _ =
            writeln!(out, "| backend | rows | dump MiB | first import s | rows/s | again s | rows/s | peak RSS MiB |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in imports {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} |",
                r.backend,
                r.rows,
                r.file_mib,
                r.seconds,
                r.rows_per_s,
                r.again_seconds,
                r.again_rows_per_s,
                r.peak_rss_mib
            );
        }
        out.push('\n');
    }
    if !foreign.is_empty() {
        let _ = writeln!(
            out,
            "| format | made by | parameters | first sign-ins/s | × argon2id ceiling ({argon2_per_s:.0}/s) | errors |"
        );
        let _ = writeln!(out, "| --- | --- | --- | ---: | ---: | ---: |");
        for r in foreign {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {:.1} | {:.2} | {} |",
                r.format,
                r.library,
                r.parameters,
                r.per_s,
                r.per_s / argon2_per_s,
                r.errors
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_format_is_measured_once_with_its_parameters() {
        let fixtures = fixtures().expect("fixtures");
        let formats: Vec<&str> = fixtures.iter().map(|f| f.format.as_str()).collect();
        assert!(formats.contains(&"bcrypt") && formats.len() >= 4, "{formats:?}");
        let mut unique = formats.clone();
        unique.dedup();
        assert_eq!(unique.len(), formats.len());
        assert_eq!(parameters("$2b$10$EEnGB0iAix0mQpq/jNM1yu"), "$2b$10$");
        assert_eq!(parameters("pbkdf2:sha256:1000000$salt$hex"), "pbkdf2:sha256:1000000");
        assert_eq!(parameters("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"), "$argon2id$v=19$m=65536,t=3,p=4$");
        assert_eq!(parameters("pbkdf2_sha256$1000000$salt$b64"), "pbkdf2_sha256$1000000");
    }
}
