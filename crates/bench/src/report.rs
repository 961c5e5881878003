//! Results: the report's shape (also its JSON form), the machine description, and rendering as
//! a plain-text table for the terminal, as Markdown, and as a complete `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::ceilings::{HashCeiling, HttpCeiling};
use crate::load::{Measurement, OpenMeasurement};
use crate::seed::SeedStats;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run ended (RFC 3339, UTC).
    pub generated_at: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// A shell command that reproduces the run from the workspace root.
    pub command: String,
    /// How the run was set up.
    pub settings: Settings,
    /// The ceilings (absent with `--skip-ceilings`).
    pub ceilings: Option<Ceilings>,
    /// One entry per directory size, in the order run.
    pub sizes: Vec<SizeReport>,
    /// The concurrency sweep of the first directory size (absent without
    /// `--concurrency-sweep`).
    pub sweep: Option<SweepReport>,
    /// The SVG charts drawn (empty without `--svg-dir`).
    pub charts: Vec<Chart>,
}

/// The session-check and refresh workloads rerun at several concurrencies.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The directory size it ran at (the first).
    pub users: u64,
    /// The concurrencies, in the order given.
    pub concurrencies: Vec<usize>,
    /// The bare HTTP ceiling at each concurrency: `(concurrency, measurement)` (empty without
    /// ceilings).
    pub ceiling: Vec<(usize, Measurement)>,
    /// One entry per workload and concurrency.
    pub points: Vec<SweepPoint>,
}

/// One workload at one concurrency of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The workload's key (`check`, `auth-user`, ...).
    pub key: String,
    /// What it sends.
    pub name: String,
    /// Virtual clients.
    pub concurrency: usize,
    /// The measurement.
    pub measurement: Measurement,
    /// Throughput relative to the HTTP ceiling at the same concurrency (absent without
    /// ceilings).
    pub ratio: Option<Ratio>,
}

/// One SVG chart written by `--svg-dir`.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// Its file name inside the SVG directory, e.g. `throughput-by-users-sqlite.svg`.
    pub file: String,
    /// What it shows.
    pub title: String,
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `"SQLite"`, `"PostgreSQL"`, or the redacted `--database-url` / `--url` description.
    pub backend: String,
    /// Latchkey instances started by the bench (0 with `--url`).
    pub instances: usize,
    /// Base URLs requests went to (round-robin).
    pub targets: Vec<String>,
    /// Virtual clients of each workload.
    pub concurrency: usize,
    /// Measurement window of each workload, in seconds.
    pub duration_s: f64,
    /// Warm-up before each workload, in seconds.
    pub warmup_s: f64,
    /// Users signed in for the session-check workloads.
    pub sessions: usize,
    /// Virtual clients checking sessions in the storm run.
    pub storm_checks: usize,
    /// Virtual clients signing in during the storm.
    pub storm_signins: usize,
    /// Arrivals per second of the open-loop mix.
    pub open_rate: f64,
    /// Most requests of the open-loop mix in flight at once.
    pub open_max_in_flight: usize,
    /// Concurrencies of the sweep (empty without one).
    pub concurrency_sweep: Vec<usize>,
    /// The Latchkey binary run (absent with `--url`).
    pub latchkey_bin: Option<String>,
    /// Extra `LATCHKEY_*` settings given with `--server-env`.
    pub server_env: Vec<String>,
    /// `"release"` or `"debug"`: how the bench itself was built (debug makes the client slow).
    pub bench_build: String,
}

/// The ceilings of this run.
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// Raw argon2id hashes per second: the ceiling of sign-in and sign-up.
    pub argon2: HashCeiling,
    /// A bare axum handler driven by the same client: the ceiling of every other workload.
    pub http: HttpCeiling,
}

/// Which ceiling a workload is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CeilingKind {
    /// Raw argon2id hashes per second (one hash per sign-in or sign-up).
    Argon2id,
    /// The bare HTTP server's requests per second.
    Http,
}

impl CeilingKind {
    fn label(self) -> &'static str {
        match self {
            CeilingKind::Argon2id => "argon2id",
            CeilingKind::Http => "http",
        }
    }
}

/// A workload's throughput as a fraction of its ceiling's.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    /// The ceiling.
    pub ceiling: CeilingKind,
    /// Workload req/s divided by the ceiling's (hashes or requests) per second; 1.0 = at the
    /// ceiling.
    pub value: f64,
    /// The ceiling's own rate it was divided by (hashes or requests per second), measured
    /// just before the workload (an argon2id ceiling: the mean of just before and just after)
    /// unless the run measured its ceilings only once.
    pub base: f64,
}

impl Ratio {
    /// `rps` as a share of `base` (0 when `base` is not positive).
    pub fn of(ceiling: CeilingKind, rps: f64, base: f64) -> Self {
        Self { ceiling, value: if base > 0.0 { rps / base } else { 0.0 }, base }
    }
}

/// One directory size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    /// Seeded users.
    pub users: u64,
    /// What seeding did.
    pub seed: SeedStats,
    /// Problems met while preparing (failed sign-ins of the session pools).
    pub notes: Vec<String>,
    /// Mails the SMTP sink accepted during this size (one per successful sign-up).
    pub mails_received: u64,
    /// Server resident set size (`VmRSS`) right after start, before seeding or any request,
    /// in KiB (the largest over instances; absent with `--url`).
    pub idle_rss_kib: Option<u64>,
    /// The workloads, in the order run.
    pub workloads: Vec<WorkloadReport>,
    /// The open-loop mix, if it was selected.
    pub open_mix: Option<OpenMixReport>,
    /// The storm run, if it was selected.
    pub storm: Option<StormReport>,
}

/// One workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Short key (`check`, `me`, `refresh`, `signin`, `signup`, `mix`).
    pub key: String,
    /// What it sends.
    pub name: String,
    /// The measurement.
    pub measurement: Measurement,
    /// Server peak resident set size during the workload, in KiB (the largest over instances;
    /// since the server started when the kernel cannot reset the peak).
    pub peak_rss_kib: Option<u64>,
    /// Throughput relative to the ceiling (absent without ceilings).
    pub ratio: Option<Ratio>,
    /// Where the machine's CPU time went (warm-up included), for the workloads bound by the
    /// argon2id ceiling:
    /// a sign-in or sign-up can reach that ceiling's rate only when the hashing threads have
    /// all of it. Unlike the ratio, these shares do not move with the machine's speed.
    pub cpu: Option<crate::server::CpuShares>,
}

/// The open-loop mix: requests arriving at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct OpenMixReport {
    /// `open-mix`.
    pub key: String,
    /// What it sends, at which rate.
    pub name: String,
    /// The measurement.
    pub measurement: OpenMeasurement,
    /// Server peak resident set size during the run, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Session checks alone and under a sign-in storm that saturates the hash pool.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Session checks (`currentuser`) with nothing else running.
    pub checks_alone: Measurement,
    /// The same session checks while the storm runs.
    pub checks_under_storm: Measurement,
    /// The sign-ins of the storm.
    pub storm_signins: Measurement,
    /// p99 under the storm divided by p99 alone (absent if either had no success).
    pub p99_ratio: Option<f64>,
    /// Server peak resident set size during the storm, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model (`model name` in `/proc/cpuinfo`).
    pub cpu: String,
    /// Cores available to this process (`std::thread::available_parallelism`).
    pub cores: usize,
    /// Total memory, in GiB (`MemTotal` in `/proc/meminfo`).
    pub memory_gib: f64,
    /// Distribution and kernel.
    pub os: String,
    /// `rustc --version`, if rustc is on the PATH.
    pub rustc: Option<String>,
    /// `git rev-parse HEAD` of the working tree, with `-dirty` when it has changes.
    pub commit: Option<String>,
}

impl Machine {
    /// Describes this machine, best effort: unknown parts say `unknown`.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let distro = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let os = if kernel.is_empty() { distro } else { format!("{distro}, Linux {kernel}") };
        let commit = output("git", &["rev-parse", "HEAD"]).map(|head| {
            let dirty =
                output("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        });
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            os,
            rustc: output("rustc", &["--version"]),
            commit,
        }
    }
}

/// The trimmed standard output of a command run in the workspace root, if it succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(program).args(args).current_dir(root).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `url` with any password replaced by `***` (`postgres://user:***@host/db`), so that reports
/// never carry database credentials.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => match url[scheme_end + 3..at].split_once(':') {
            Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `args` as one shell command line, quoting what needs it.
pub fn shell_words(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if plain { a } else { format!("'{}'", a.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(x: f64) -> String {
    if x >= 100.0 { thousands(x.round() as u64) } else { format!("{x:.1}") }
}

fn ms(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn ratio(r: Option<Ratio>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.0}% of {} {}", r.value * 100.0, rate(r.base), r.ceiling.label()))
}

fn breakdown(m: &Measurement) -> String {
    m.errors_by_kind.iter().map(|(k, v)| format!("{k}: {}", thousands(*v))).collect::<Vec<_>>().join(", ")
}

const HEADER: [&str; 10] =
    ["workload", "conc", "req/s", "vs ceiling", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "RSS MiB"];

fn row(name: &str, m: &Measurement, r: Option<Ratio>, rss: Option<u64>) -> [String; 10] {
    let l = &m.latency_ms;
    let some = m.ok > 0;
    let lat = |x: f64| if some { ms(x) } else { "-".into() };
    [
        name.to_owned(),
        m.concurrency.to_string(),
        rate(m.rps),
        ratio(r),
        lat(l.p50),
        lat(l.p90),
        lat(l.p99),
        lat(l.max),
        thousands(m.errors),
        mib(rss),
    ]
}

fn size_rows(size: &SizeReport) -> Vec<([String; 10], String)> {
    let mut rows: Vec<_> = size
        .workloads
        .iter()
        .map(|w| (row(&w.name, &w.measurement, w.ratio, w.peak_rss_kib), breakdown(&w.measurement)))
        .collect();
    if let Some(s) = &size.storm {
        rows.push((row("storm: session checks alone", &s.checks_alone, None, None), breakdown(&s.checks_alone)));
        rows.push((
            row("storm: session checks under storm", &s.checks_under_storm, None, s.peak_rss_kib),
            breakdown(&s.checks_under_storm),
        ));
        rows.push((row("storm: the sign-ins", &s.storm_signins, None, None), breakdown(&s.storm_signins)));
    }
    rows
}

/// `"currentuser 980 req/s, p99 3.10 ms; refresh ..."` for a mixed workload, else empty.
fn by_op_line(m: &Measurement) -> String {
    m.by_op
        .iter()
        .map(|o| {
            let p99 = if o.ok > 0 { format!("{} ms", ms(o.latency_ms.p99)) } else { "-".into() };
            format!("{} {} req/s, p99 {p99}", o.op.name(), rate(o.rps))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The open-loop mix's summary: rate asked and achieved, drops, peak in flight.
fn open_mix_line(o: &OpenMixReport) -> String {
    let m = &o.measurement;
    format!(
        "{} arrivals/s asked (at most {} in flight): {} scheduled in the window, {} req/s achieved, {} errors, {} dropped at the in-flight cap, peak {} in flight; server peak RSS {} MiB",
        rate(m.rate),
        thousands(m.max_in_flight as u64),
        thousands(m.scheduled),
        rate(m.rps),
        thousands(m.errors),
        thousands(m.dropped),
        thousands(m.peak_in_flight as u64),
        mib(o.peak_rss_kib),
    )
}

/// The open-loop mix per operation, then all together; latency from the scheduled arrival.
fn open_mix_rows(o: &OpenMixReport) -> (Vec<String>, Vec<Vec<String>>) {
    let header = ["operation", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"].map(str::to_owned).to_vec();
    let m = &o.measurement;
    let cells = |name: &str, ok: u64, rps: f64, l: &crate::load::LatencyMs, errors: u64| {
        let lat = |x: f64| if ok > 0 { ms(x) } else { "-".into() };
        vec![name.to_owned(), rate(rps), lat(l.p50), lat(l.p90), lat(l.p99), lat(l.max), thousands(errors)]
    };
    let errors_of = |name: &str| -> u64 {
        let prefix = format!("{name} ");
        m.errors_by_kind.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| v).sum()
    };
    let mut rows: Vec<Vec<String>> =
        m.by_op.iter().map(|op| cells(op.op.name(), op.ok, op.rps, &op.latency_ms, errors_of(op.op.name()))).collect();
    rows.push(cells("all", m.ok, m.rps, &m.latency_ms, m.errors));
    (header, rows)
}

/// The sweep: one row per workload (and the HTTP ceiling), `req/s / p99 ms` per concurrency.
fn sweep_rows(sw: &SweepReport) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["workload (req/s / p99 ms)".to_owned()];
    header.extend(sw.concurrencies.iter().map(|c| format!("conc {c}")));
    let cell = |m: Option<&Measurement>| {
        m.map_or_else(
            || "-".into(),
            |m| format!("{} / {}", rate(m.rps), if m.ok > 0 { ms(m.latency_ms.p99) } else { "-".into() }),
        )
    };
    let mut rows = Vec::new();
    if !sw.ceiling.is_empty() {
        let mut row = vec!["bare axum GET / (http ceiling)".to_owned()];
        row.extend(sw.concurrencies.iter().map(|c| cell(sw.ceiling.iter().find(|(x, _)| x == c).map(|(_, m)| m))));
        rows.push(row);
    }
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for p in &sw.points {
        if !keys.iter().any(|(k, _)| *k == p.key) {
            keys.push((&p.key, &p.name));
        }
    }
    for (key, name) in keys {
        let mut row = vec![name.to_owned()];
        row.extend(
            sw.concurrencies
                .iter()
                .map(|c| cell(sw.points.iter().find(|p| p.key == key && p.concurrency == *c).map(|p| &p.measurement))),
        );
        rows.push(row);
    }
    (header, rows)
}

/// Errors of the sweep, `"check at 8: 404: 3"`, if any.
fn sweep_errors(sw: &SweepReport) -> Vec<String> {
    sw.points
        .iter()
        .filter(|p| p.measurement.errors > 0)
        .map(|p| format!("{} at {}: {}", p.key, p.concurrency, breakdown(&p.measurement)))
        .collect()
}

fn storm_line(s: &StormReport) -> String {
    let ratio = s.p99_ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.1}x"));
    format!(
        "session-check p99 {} ms alone vs {} ms under a {}-client sign-in storm ({ratio}); the storm signed in {} users/s",
        ms(s.checks_alone.latency_ms.p99),
        ms(s.checks_under_storm.latency_ms.p99),
        s.storm_signins.concurrency,
        rate(s.storm_signins.rps),
    )
}

fn ceiling_lines(c: &Ceilings) -> [String; 2] {
    let a = &c.argon2;
    let h = &c.http.measurement;
    [
        format!(
            "argon2id (m={} KiB, t={}, p={}) on {} threads: {} hashes/s ({} ms per hash per thread){}",
            a.memory_kib,
            a.iterations,
            a.parallelism,
            a.threads,
            rate(a.hashes_per_s),
            ms(a.ms_per_hash),
            a.cpu_share.map_or(String::new(), |s| format!(", its threads {:.1}% of the machine's CPU time", s * 100.0))
        ),
        format!(
            "bare axum GET / at concurrency {}: {} req/s (p50 {} ms, p99 {} ms, {} errors), server peak RSS {} MiB",
            h.concurrency,
            rate(h.rps),
            ms(h.latency_ms.p50),
            ms(h.latency_ms.p99),
            thousands(h.errors),
            mib(c.http.peak_rss_kib)
        ),
    ]
}

fn setup_line(r: &Report) -> String {
    let s = &r.settings;
    let instances = if s.instances > 0 {
        format!("{} instance{}", s.instances, if s.instances == 1 { "" } else { "s" })
    } else {
        format!("{} target{} given with --url", s.targets.len(), if s.targets.len() == 1 { "" } else { "s" })
    };
    format!(
        "{}, {instances}, concurrency {}, {} s per workload after {} s warm-up",
        s.backend, s.concurrency, s.duration_s, s.warmup_s
    )
}

/// Throughput and p99 of each workload across directory sizes, when more than one ran.
fn scaling_rows(r: &Report) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    if r.sizes.len() < 2 {
        return None;
    }
    let mut header = vec!["workload (req/s, p99 ms)".to_owned()];
    header.extend(r.sizes.iter().map(|s| format!("{} users", thousands(s.users))));
    let first = r.sizes.first()?;
    let rows = first
        .workloads
        .iter()
        .map(|w| {
            let mut row = vec![w.name.clone()];
            for size in &r.sizes {
                row.push(size.workloads.iter().find(|x| x.key == w.key).map_or_else(
                    || "-".into(),
                    |x| format!("{} / {}", rate(x.measurement.rps), ms(x.measurement.latency_ms.p99)),
                ));
            }
            row
        })
        .collect::<Vec<_>>();
    let mut rows = rows;
    if let Some(o) = &first.open_mix {
        let mut row = vec![o.name.clone()];
        for size in &r.sizes {
            row.push(size.open_mix.as_ref().map_or_else(
                || "-".into(),
                |x| format!("{} / {}", rate(x.measurement.rps), ms(x.measurement.latency_ms.p99)),
            ));
        }
        rows.push(row);
    }
    Some((header, rows))
}

fn text_table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(header));
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
}

/// A Markdown table: the first column (and the last, with `text_last`) left-aligned, the rest
/// right-aligned.
fn md_table(out: &mut String, header: &[String], rows: &[Vec<String>], text_last: bool) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let last = header.len().saturating_sub(1);
    let align: Vec<&str> =
        (0..header.len()).map(|i| if i == 0 || (text_last && i == last) { "---" } else { "---:" }).collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

fn header() -> Vec<String> {
    HEADER.iter().map(|h| (*h).to_owned()).collect()
}

/// The report as plain text for the terminal.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(out, "\nLatchkey benchmark: {}", setup_line(r));
    let _ = writeln!(
        out,
        "machine: {}, {} cores, {:.1} GiB, {}; commit {}",
        m.cpu,
        m.cores,
        m.memory_gib,
        m.os,
        m.commit.as_deref().unwrap_or("unknown")
    );
    if let Some(c) = &r.ceilings {
        let _ = writeln!(out, "\nceilings");
        for l in ceiling_lines(c) {
            let _ = writeln!(out, "  {l}");
        }
    }
    for size in &r.sizes {
        let _ = writeln!(
            out,
            "\n{} users (seeded {} rows in {:.1} s; the SMTP sink took {} mails; server RSS {} MiB idle after start)",
            thousands(size.users),
            thousands(size.seed.inserted),
            size.seed.seconds,
            thousands(size.mails_received),
            mib(size.idle_rss_kib)
        );
        let rows = size_rows(size);
        let cells: Vec<Vec<String>> = rows.iter().map(|(c, _)| c.to_vec()).collect();
        text_table(&mut out, &header(), &cells);
        for (cells, errors) in &rows {
            if !errors.is_empty() {
                let _ = writeln!(out, "  errors of {}: {errors}", cells[0]);
            }
        }
        for w in &size.workloads {
            if !w.measurement.by_op.is_empty() {
                let _ = writeln!(out, "  {} by operation: {}", w.key, by_op_line(&w.measurement));
            }
            if let Some(cpu) = &w.cpu {
                let _ = writeln!(
                    out,
                    "  {} CPU: {}",
                    w.key,
                    cpu_line(cpu, w.ratio.as_ref().map(|r| r.value), w.measurement.rps)
                );
            }
        }
        if let Some(s) = &size.storm {
            let _ = writeln!(out, "  storm: {}", storm_line(s));
        }
        if let Some(o) = &size.open_mix {
            let _ = writeln!(out, "\n{}", o.name);
            let (header, rows) = open_mix_rows(o);
            text_table(&mut out, &header, &rows);
            let _ = writeln!(out, "  {}", open_mix_line(o));
            if o.measurement.errors > 0 {
                let m = &o.measurement;
                let kinds = m.errors_by_kind.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
                let _ = writeln!(out, "  errors of the open-loop mix: {kinds}");
            }
        }
        for note in &size.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    if let Some((header, rows)) = scaling_rows(r) {
        let _ = writeln!(out, "\nacross directory sizes");
        text_table(&mut out, &header, &rows);
    }
    if let Some(sw) = &r.sweep {
        let _ = writeln!(out, "\nconcurrency sweep at {} users", thousands(sw.users));
        let (header, rows) = sweep_rows(sw);
        text_table(&mut out, &header, &rows);
        for e in sweep_errors(sw) {
            let _ = writeln!(out, "  errors of {e}");
        }
    }
    for c in &r.charts {
        let _ = writeln!(out, "chart: {} ({})", c.file, c.title);
    }
    out
}

/// The report as Markdown: machine, command, ceilings, one table per directory size, the sweep
/// and the charts. With `full`, a complete `BENCHMARKS.md`: a title and introduction first, and
/// how to read the numbers at the end. `chart_prefix` is what goes before each chart's file
/// name in its image link (`bench/`); `None` leaves the charts out.
pub fn render_markdown(r: &Report, full: bool, chart_prefix: Option<&str>) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let s = &r.settings;
    if full {
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Measured with `latchkey-bench` (`crates/bench`) on {}. Every number below comes from one run \
             on the machine described; the ceilings were measured in that same run. To refresh this file, \
             run the command below on a quiet machine.\n",
            r.generated_at
        );
    }
    let h = if full { "##" } else { "###" };
    let _ = writeln!(out, "{h} Machine and setup\n");
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| CPU | {} |", m.cpu);
    let _ = writeln!(out, "| cores | {} |", m.cores);
    let _ = writeln!(out, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(out, "| OS | {} |", m.os);
    let _ = writeln!(out, "| Rust | {} |", m.rustc.as_deref().unwrap_or("unknown"));
    let _ = writeln!(out, "| commit | {} |", m.commit.as_deref().unwrap_or("unknown"));
    let _ = writeln!(out, "| backend | {} |", s.backend);
    if s.instances > 0 {
        let _ = writeln!(out, "| Latchkey instances | {} |", s.instances);
    } else {
        let _ = writeln!(out, "| targets | {} |", s.targets.join(", "));
    }
    let sizes: Vec<String> = r.sizes.iter().map(|x| thousands(x.users)).collect();
    let _ = writeln!(out, "| users | {} |", sizes.join(", "));
    let _ = writeln!(out, "| concurrency | {} virtual clients, one request in flight each |", s.concurrency);
    let _ = writeln!(out, "| duration | {} s per workload after a {} s warm-up |", s.duration_s, s.warmup_s);
    if r.sizes.iter().any(|x| x.open_mix.is_some()) {
        let _ = writeln!(
            out,
            "| open-loop mix | {} arrivals/s, at most {} in flight |",
            rate(s.open_rate),
            thousands(s.open_max_in_flight as u64)
        );
    }
    if !s.concurrency_sweep.is_empty() {
        let list: Vec<String> = s.concurrency_sweep.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "| concurrency sweep | {} |", list.join(", "));
    }
    if !s.server_env.is_empty() {
        let _ = writeln!(out, "| server settings | `{}` |", s.server_env.join("`, `"));
    }
    if s.bench_build != "release" {
        let _ = writeln!(out, "| bench build | {} (client overhead inflated) |", s.bench_build);
    }
    let _ = writeln!(out, "\n{h} Command\n\n```sh\n{}\n```\n", r.command);
    if let Some(c) = &r.ceilings {
        let _ = writeln!(out, "{h} Ceilings\n");
        for l in ceiling_lines(c) {
            let _ = writeln!(out, "- {l}");
        }
        let _ = writeln!(out);
    }
    for size in &r.sizes {
        let _ = writeln!(
            out,
            "{h} {} users\n\nSeeded {} rows in {:.1} s. Server RSS idle after start (before seeding and any request): {} MiB.\n",
            thousands(size.users),
            thousands(size.seed.inserted),
            size.seed.seconds,
            mib(size.idle_rss_kib)
        );
        let mut hdr = header();
        hdr.push("errors by kind".into());
        let rows: Vec<Vec<String>> = size_rows(size)
            .into_iter()
            .map(|(cells, errors)| {
                let mut row = cells.to_vec();
                row.push(if errors.is_empty() { "-".into() } else { errors });
                row
            })
            .collect();
        md_table(&mut out, &hdr, &rows, true);
        for w in &size.workloads {
            if !w.measurement.by_op.is_empty() {
                let _ = writeln!(out, "\nThe {} by operation: {}.", w.key, by_op_line(&w.measurement));
            }
            if let Some(cpu) = &w.cpu {
                let _ = writeln!(
                    out,
                    "\nThe {} CPU: {}.",
                    w.key,
                    cpu_line(cpu, w.ratio.as_ref().map(|r| r.value), w.measurement.rps)
                );
            }
        }
        if let Some(st) = &size.storm {
            let _ = writeln!(out, "\nStorm: {}.", storm_line(st));
        }
        if let Some(o) = &size.open_mix {
            let _ = writeln!(out, "\nThe {}, latency from each request's scheduled arrival:\n", o.name);
            let (header, rows) = open_mix_rows(o);
            md_table(&mut out, &header, &rows, false);
            let _ = writeln!(out, "\n{}.", open_mix_line(o));
            if o.measurement.errors > 0 {
                let m = &o.measurement;
                let kinds = m.errors_by_kind.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
                let _ = writeln!(out, "\nErrors of the open-loop mix: {kinds}.");
            }
        }
        for note in &size.notes {
            let _ = writeln!(out, "\nNote: {note}.");
        }
        let _ = writeln!(out);
    }
    if let Some((header, rows)) = scaling_rows(r) {
        let _ = writeln!(out, "{h} Across directory sizes\n");
        md_table(&mut out, &header, &rows, false);
        let _ = writeln!(out);
    }
    if let Some(sw) = &r.sweep {
        let _ = writeln!(
            out,
            "{h} Concurrency sweep\n\nThe session checks and refreshes at {} users, rerun at each concurrency (the HTTP ceiling too).\n",
            thousands(sw.users)
        );
        let (header, rows) = sweep_rows(sw);
        md_table(&mut out, &header, &rows, false);
        for e in sweep_errors(sw) {
            let _ = writeln!(out, "\nErrors of {e}.");
        }
        let _ = writeln!(out);
    }
    if let Some(prefix) = chart_prefix.filter(|_| !r.charts.is_empty()) {
        let _ = writeln!(out, "{h} Charts\n");
        for c in &r.charts {
            let _ = writeln!(out, "![{}]({prefix}{})\n", c.title, c.file);
        }
    }
    if full {
        let _ = writeln!(out, "## How to read this\n");
        for line in [
            "**req/s**: successful requests per second of the measurement window (a request counts when it completes inside the window).",
            "**vs ceiling**: req/s as a share of a ceiling measured in the same run, again just before the workload (unless `--ceilings-once`), so that the machine's drift over minutes does not enter the ratio; an argon2id ceiling is measured just after its workload too, and the ratio's base is the mean of the two. The cell gives that base rate. `argon2id` is raw hashes per second with Latchkey's parameters on every core (each sign-in or sign-up costs one hash), `http` is a bare axum handler driven by the same client at the same concurrency.",
            "**p50/p90/p99/max**: latency of successful requests in milliseconds, as the client sees it, queueing included.",
            "**errors**: non-2xx answers, transport failures, and session checks answered `null` (session not accepted), by kind in the last column.",
            "**RSS MiB**: the server's peak resident set size (`VmHWM`) during the workload.",
            "**storm**: session checks at low concurrency alone, then while a sign-in storm keeps every hashing permit busy; the ratio of the two p99s shows whether checks queue behind hashes.",
            "**open-loop mix**: the 90/8/2 mix with requests *arriving* at a fixed rate, each its own task, whatever the server does; latency runs from each request's scheduled arrival, so queueing behind slow sign-ins shows (no coordinated omission). Arrivals beyond the in-flight cap are dropped and counted, never sent.",
            "**idle RSS**: the server's resident set size right after start, before seeding and any request.",
            "**concurrency sweep**: the session checks and refreshes of the first directory size rerun at each concurrency, beside the bare HTTP ceiling at the same concurrency.",
            "Client and server share the machine's cores, so every number, ceilings included, is for this machine as a whole.",
        ] {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

/// `hashing threads 91.0% of the machine's CPU time, Latchkey's other threads 5.0% (1,000 µs
/// of CPU and 20.0 context switches per request; the hashing threads preempted 10.0 times per
/// request), load generator 1.0%, ... (the ceiling's threads had 99.0%); hashes per
/// hashing-thread CPU second 0.97x the ceiling's`: where the CPU went, what Latchkey's
/// non-hashing threads spent per request at `rps` requests per second (CPU microseconds, which
/// compare across runs whatever the machine's speed of the day, and context switches), and,
/// with the workload's ratio to the argon2id ceiling, how much hashing each CPU second of the
/// hashing threads did next to a CPU second of the ceiling's threads. The ratio is that
/// efficiency times the hashing threads' share over the ceiling's.
fn cpu_line(cpu: &crate::server::CpuShares, ratio: Option<f64>, rps: f64) -> String {
    let per_request = if rps > 0.0 && cpu.seconds > 0.0 {
        let requests = rps * cpu.seconds;
        format!(
            " ({} µs of CPU and {:.1} context switches per request; the hashing threads preempted {:.1} times per request)",
            thousands((cpu.other * cpu.cores as f64 / rps * 1e6).round() as u64),
            cpu.other_switches as f64 / requests,
            cpu.hashing_preemptions as f64 / requests,
        )
    } else {
        String::new()
    };
    let mut line = format!(
        "hashing threads {:.1}% of the machine's CPU time, Latchkey's other threads {:.1}%{per_request}, load generator {:.1}%, database server {:.1}%, other processes {:.1}%, interrupts {:.1}%, idle {:.1}%, steal {:.1}%",
        cpu.hashing * 100.0,
        cpu.other * 100.0,
        cpu.load_generator * 100.0,
        cpu.database * 100.0,
        cpu.other_processes * 100.0,
        cpu.interrupts * 100.0,
        cpu.idle * 100.0,
        cpu.steal * 100.0,
    );
    if let Some(ceiling) = cpu.ceiling_hashing {
        line.push_str(&format!(" (the ceiling's threads had {:.1}%)", ceiling * 100.0));
    }
    if let Some(ratio) = ratio.filter(|_| cpu.hashing > 0.0) {
        line.push_str(&format!(
            "; hashes per hashing-thread CPU second {:.2}x the ceiling's",
            ratio * cpu.ceiling_hashing.unwrap_or(1.0) / cpu.hashing
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("--concurrency"), "--concurrency");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        let args = ["--users", "10000,100000", "--server-env", "LATCHKEY_LOG=warn,sqlx=info", "it's"];
        assert_eq!(
            shell_words(args.iter().map(|s| (*s).to_owned())),
            "--users 10000,100000 --server-env LATCHKEY_LOG=warn,sqlx=info 'it'\\''s'"
        );
    }

    #[test]
    fn the_cpu_line_gives_the_cost_of_each_request() {
        let cpu = crate::server::CpuShares {
            cores: 2,
            seconds: 10.0,
            other_switches: 20_000,
            hashing_preemptions: 10_000,
            hashing: 0.9,
            other: 0.05,
            load_generator: 0.01,
            database: 0.0,
            other_processes: 0.01,
            interrupts: 0.01,
            idle: 0.02,
            steal: 0.0,
            ceiling_hashing: Some(0.99),
        };
        // 100 requests/s for 10 s: 0.05 of 2 cores is 1 ms of CPU per request.
        let line = cpu_line(&cpu, Some(0.9), 100.0);
        assert!(
            line.starts_with(
                "hashing threads 90.0% of the machine's CPU time, Latchkey's other threads 5.0% (1,000 µs of CPU \
                 and 20.0 context switches per request; the hashing threads preempted 10.0 times per request), \
                 load generator 1.0%"
            ),
            "{line}"
        );
        assert!(line.ends_with("hashes per hashing-thread CPU second 0.99x the ceiling's"), "{line}");
        assert!(!cpu_line(&cpu, None, 0.0).contains("per request"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(rate(12.345), "12.3");
        assert_eq!(rate(12_345.6), "12,346");
    }
}
