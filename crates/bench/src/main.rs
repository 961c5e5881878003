//! `latchkey-bench`: a load generator for Latchkey that reports every workload against ceilings
//! measured in the same run.
//!
//! For each directory size in `--users` it provisions a fresh database (SQLite, or PostgreSQL
//! with `--postgres`), starts Latchkey on it (or targets `--url`), seeds the users straight into
//! the database, signs in a pool of them, and runs each workload at a fixed concurrency for a
//! fixed time: session checks on every surface that has one (`/api/users/currentuser`,
//! `/v1/me`, `/auth/user`, GraphQL `me`, Cognito `GetUser`), token refresh (`v1` and `auth`),
//! sign-in, sign-up, a 90/8/2 mix, the same mix open-loop at a fixed arrival rate, and a
//! session-check latency run under a sign-in storm. Optionally it reruns the session checks and
//! refreshes across a concurrency sweep. It prints a table and can write JSON, Markdown, a
//! complete `BENCHMARKS.md` and SVG charts.
//!
//! `latchkey-bench sockets` measures instead what idle WebSockets of the `realtime` surface
//! cost the server in memory, and `latchkey-bench migration` what bringing users from another
//! service costs: `latchkey import` of a large dump, and imported users' first sign-ins.
//!
//! Modules: [`server`] starts and stops Latchkey, [`smtp`] swallows its mail, [`seed`] makes
//! and fills the database, [`load`] runs workloads, [`ceilings`] measures the ceilings,
//! [`report`] renders results, [`charts`] draws them as SVG, [`sockets`] measures memory per
//! socket.

mod ceilings;
mod charts;
mod load;
mod migration;
mod report;
mod seed;
mod server;
mod smtp;
mod sockets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use latchkey_core::password::HashParams;

use crate::load::{Op, OpenPlan, Plan, Pools, Target};
use crate::report::{
    CeilingKind, Ceilings, OpenMixReport, Ratio, Report, SizeReport, StormReport, SweepPoint, SweepReport,
    WorkloadReport,
};
use crate::seed::Directory;
use crate::server::{Latchkey, Launch};
use crate::smtp::SmtpSink;

/// Load generator for Latchkey: seeds N users, runs session-check (every surface), refresh,
/// sign-in, sign-up, mix, open-loop mix and storm workloads at a fixed concurrency (or arrival
/// rate) for a fixed time, and reports req/s,
/// latency percentiles, errors and the server's peak RSS against argon2id and HTTP ceilings
/// measured in the same run.
///
/// Build the server first: `cargo build --release -p latchkey -p latchkey-bench`.
#[derive(Debug, Parser)]
#[command(name = "latchkey-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,

    /// Directory sizes to run the whole suite at, comma-separated; each gets a fresh database
    /// (with --url or --database-url the same database is topped up instead).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    users: Vec<u64>,

    /// Virtual clients per workload, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// Measurement window per workload, e.g. 10s, 2s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Warm-up before each workload (requests sent, results discarded).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "check,me,auth-user,graphql-me,cognito-user,refresh,auth-refresh,signin,signup,mix,open-mix,storm"
    )]
    workloads: Vec<Workload>,

    /// Users signed in per surface (each costs the server one hash) whose credentials the
    /// session-check workloads present; v1 and auth sessions (one refresh chain per client)
    /// number max(this, the largest concurrency).
    #[arg(long, default_value_t = 200)]
    sessions: usize,

    /// Arrivals per second of the open-loop mix (`open-mix`).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,

    /// Most requests of the open-loop mix in flight at once; arrivals beyond are dropped and
    /// counted.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,

    /// Concurrencies at which to rerun the session-check and refresh workloads (of those
    /// selected) for the first directory size, comma-separated, e.g. 1,8,32,128.
    #[arg(long, value_delimiter = ',')]
    concurrency_sweep: Vec<usize>,

    /// Draw SVG charts (throughput and p99 against directory size, and against concurrency
    /// with --concurrency-sweep) into this directory, created if missing.
    #[arg(long, value_name = "PATH")]
    svg_dir: Option<PathBuf>,

    /// Virtual clients checking sessions in the storm run.
    #[arg(long, default_value_t = 8)]
    storm_checks: usize,

    /// Virtual clients signing in during the storm.
    #[arg(long, default_value_t = 64)]
    storm_signins: usize,

    /// Run on a fresh PostgreSQL database per size instead of SQLite.
    #[arg(long, conflicts_with_all = ["url", "database_url"])]
    postgres: bool,

    /// PostgreSQL server to create (and drop) the databases on, with --postgres.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,

    /// Latchkey instances to start on the database (they share the secret and issuer).
    #[arg(long, default_value_t = 1, conflicts_with = "url")]
    instances: usize,

    /// Already-running Latchkey instances to load instead of starting one, comma-separated
    /// (http://host:port); requests are spread round-robin. Needs --database-url for seeding,
    /// and the instances must share their secret and LATCHKEY_PUBLIC_URL.
    #[arg(long, value_delimiter = ',', requires = "database_url")]
    url: Vec<String>,

    /// Database of the --url instances (or, without --url, an existing database for the
    /// started instances); users are added to it, and it is never dropped.
    #[arg(long)]
    database_url: Option<String>,

    /// LATCHKEY_SECRET of the started instances (default: a fresh one per run). An existing
    /// --database-url holds signing keys sealed with the secret of the run that created it:
    /// a later run on it must pass the same.
    #[arg(long, env = "LATCHKEY_BENCH_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// The latchkey binary (default: the one built beside this benchmark, else
    /// target/release/latchkey).
    #[arg(long, env = "LATCHKEY_BIN")]
    latchkey_bin: Option<PathBuf>,

    /// Extra server setting, KEY=VALUE with a LATCHKEY_ key (repeatable), e.g.
    /// LATCHKEY_DATABASE_MAX_CONNECTIONS=32.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    server_env: Vec<String>,

    /// argon2id memory in KiB of every hash the run makes or meets: the server's (passed as
    /// LATCHKEY_ARGON2_MEMORY_KIB), the seeded users' and the argon2id ceiling's.
    #[arg(long, default_value_t = HashParams::default().memory_kib)]
    argon2_memory_kib: u32,

    /// argon2id passes of those hashes (the server's LATCHKEY_ARGON2_ITERATIONS).
    #[arg(long, default_value_t = HashParams::default().iterations)]
    argon2_iterations: u32,

    /// Skip measuring the ceilings (no ratios in the report).
    #[arg(long)]
    skip_ceilings: bool,

    /// Measure the ceilings once, at the start, instead of again just before each workload (and,
    /// for the argon2id ceiling, just after it too, the ratio taking the mean of the two).
    /// Faster, but a shared machine's speed drifts over minutes, and each ratio then carries
    /// that drift.
    #[arg(long, conflicts_with = "skip_ceilings")]
    ceilings_once: bool,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Write the report as Markdown to this file.
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,

    /// Write a complete BENCHMARKS.md (machine, command, ceilings, tables, how to read) here.
    #[arg(long, value_name = "PATH")]
    write_benchmarks_md: Option<PathBuf>,
}

impl Cli {
    /// The argon2id parameters of the run (`--argon2-memory-kib`, `--argon2-iterations`, one
    /// lane, as Latchkey hashes).
    fn hash_params(&self) -> HashParams {
        HashParams { memory_kib: self.argon2_memory_kib, iterations: self.argon2_iterations, parallelism: 1 }
    }
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// Memory per idle WebSocket (`GET /ws`): starts Latchkey, opens --count sockets, reads
    /// the server's RSS before and after, then signs every socket in and reads it again.
    Sockets {
        /// Sockets to hold open.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Run on a fresh PostgreSQL database instead of SQLite.
        #[arg(long)]
        postgres: bool,
        /// PostgreSQL server to create (and drop) the database on, with --postgres.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres_url: String,
        /// The latchkey binary (default: the one built beside this benchmark).
        #[arg(long, env = "LATCHKEY_BIN")]
        latchkey_bin: Option<PathBuf>,
        /// Write the result as a Markdown table to this file.
        #[arg(long, value_name = "PATH")]
        markdown: Option<PathBuf>,
    },
    /// Migration from another service: `latchkey import` of a generated dump of --rows users
    /// (SQLite, then PostgreSQL unless --no-postgres), imported twice (new, then unchanged),
    /// with rows/s and the importer's peak RSS; then, per foreign hash format, first sign-ins
    /// of --users imported users (`POST /v1/sessions`: the foreign hash verified at its
    /// imported cost, then replaced with argon2id) against the argon2id ceiling.
    Migration {
        /// Rows in the generated dump.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Users seeded per foreign hash format.
        #[arg(long, default_value_t = 2_000)]
        users: u64,
        /// Clients signing in at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Measurement window per format, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Skip the PostgreSQL import.
        #[arg(long)]
        no_postgres: bool,
        /// PostgreSQL server to create (and drop) the databases on.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres_url: String,
        /// The latchkey binary (default: the one built beside this benchmark).
        #[arg(long, env = "LATCHKEY_BIN")]
        latchkey_bin: Option<PathBuf>,
        /// Write the tables as Markdown to this file.
        #[arg(long, value_name = "PATH")]
        markdown: Option<PathBuf>,
    },
    /// Serve the bare HTTP ceiling's `GET /` (run by the bench itself).
    #[command(hide = true)]
    BareHttp {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
    },
}

/// The workloads, by their `--workloads` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// GET /api/users/currentuser with a session cookie.
    Check,
    /// GET /v1/me with a bearer access token.
    Me,
    /// GET /auth/user with the sAccessToken cookie.
    AuthUser,
    /// POST /graphql `query { me(token) { id email } }`.
    GraphqlMe,
    /// POST / AWSCognitoIdentityProviderService.GetUser with an access token.
    CognitoUser,
    /// POST /v1/token/refresh, each client on its own refresh token chain.
    Refresh,
    /// POST /auth/session/refresh, each client on its own cookie chain.
    AuthRefresh,
    /// POST /api/users/signin as random returning users (256 seeded users signed in once before).
    Signin,
    /// POST /api/users/signup with fresh emails.
    Signup,
    /// 90% currentuser, 8% refresh, 2% sign-in.
    Mix,
    /// The same mix open-loop: requests arrive at --rate per second, each its own task.
    OpenMix,
    /// currentuser p99 alone and under a sign-in storm.
    Storm,
}

/// What a (non-storm) workload sends and what it is compared with.
struct Spec {
    /// Short key for reports.
    key: &'static str,
    /// Description.
    name: &'static str,
    /// Operations and weights.
    mix: Vec<(Op, u32)>,
    /// The ceiling its throughput is a share of.
    ceiling: CeilingKind,
}

impl Workload {
    /// The workload's spec; `None` for the storm, which is two runs.
    fn spec(self) -> Option<Spec> {
        use CeilingKind::{Argon2id, Http};
        let (key, name, mix, ceiling) = match self {
            Workload::Check => ("check", "session check: GET /api/users/currentuser", vec![(Op::CurrentUser, 1)], Http),
            Workload::Me => ("me", "session check: GET /v1/me", vec![(Op::V1Me, 1)], Http),
            Workload::AuthUser => ("auth-user", "session check: GET /auth/user", vec![(Op::AuthUser, 1)], Http),
            Workload::GraphqlMe => ("graphql-me", "session check: POST /graphql me", vec![(Op::GraphqlMe, 1)], Http),
            Workload::CognitoUser => {
                ("cognito-user", "session check: Cognito GetUser", vec![(Op::CognitoGetUser, 1)], Http)
            }
            Workload::Refresh => ("refresh", "token refresh: POST /v1/token/refresh", vec![(Op::Refresh, 1)], Http),
            Workload::AuthRefresh => {
                ("auth-refresh", "token refresh: POST /auth/session/refresh", vec![(Op::AuthRefresh, 1)], Http)
            }
            Workload::Signin => ("signin", "sign-in: POST /api/users/signin", vec![(Op::SignIn, 1)], Argon2id),
            Workload::Signup => ("signup", "sign-up: POST /api/users/signup", vec![(Op::SignUp, 1)], Argon2id),
            Workload::Mix => (
                "mix",
                "mix: 90% currentuser, 8% refresh, 2% sign-in",
                vec![(Op::CurrentUser, 90), (Op::Refresh, 8), (Op::SignIn, 2)],
                Http,
            ),
            Workload::Storm | Workload::OpenMix => return None,
        };
        Some(Spec { key, name, mix, ceiling })
    }

    /// Whether the concurrency sweep reruns it: the session checks and the refreshes.
    fn in_sweep(self) -> bool {
        matches!(
            self,
            Workload::Check
                | Workload::Me
                | Workload::AuthUser
                | Workload::GraphqlMe
                | Workload::CognitoUser
                | Workload::Refresh
                | Workload::AuthRefresh
        )
    }
}

/// Seeded users signed in once before the sign-in workloads, which then pick among them
/// (returning users; see [`Pools::returning`]).
const RETURNING_USERS: usize = 256;

/// The open-loop mix: the closed mix's 90/8/2 operations.
const OPEN_MIX: [(Op, u32); 3] = [(Op::CurrentUser, 90), (Op::Refresh, 8), (Op::SignIn, 2)];

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Internal::BareHttp { port }) = cli.command {
        return match ceilings::serve_bare(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("latchkey-bench bare-http: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async move {
        match cli.command {
            Some(Internal::Sockets { count, postgres, postgres_url, latchkey_bin, markdown }) => {
                run_sockets(count, postgres.then_some(postgres_url), latchkey_bin, markdown).await
            }
            Some(Internal::Migration {
                rows,
                users,
                concurrency,
                duration,
                no_postgres,
                postgres_url,
                latchkey_bin,
                markdown,
            }) => {
                let postgres = (!no_postgres).then_some(postgres_url);
                run_migration(rows, users, concurrency, duration, postgres, latchkey_bin, markdown).await
            }
            _ => run(cli).await,
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `latchkey-bench sockets`: memory per idle WebSocket.
async fn run_sockets(
    count: usize,
    postgres: Option<String>,
    latchkey_bin: Option<PathBuf>,
    markdown: Option<PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(count > 0, "--count must be at least 1");
    let binary = server::find_binary(latchkey_bin.as_deref())?;
    eprintln!("latchkey binary: {}", binary.display());
    eprintln!("==> {count} WebSockets on {}", if postgres.is_some() { "PostgreSQL" } else { "SQLite" });
    let r = sockets::run(binary, count, postgres.as_deref()).await?;
    println!(
        "{} sockets (opened in {:.1} s): server RSS {:.1} MiB -> {:.1} MiB idle ({:.1} KiB per socket) -> {:.1} MiB signed in ({:.1} KiB per socket)",
        r.count,
        r.open_seconds,
        r.baseline_kib as f64 / 1024.0,
        r.idle_kib as f64 / 1024.0,
        r.idle_bytes_per_socket() / 1024.0,
        r.signed_in_kib as f64 / 1024.0,
        r.signed_in_bytes_per_socket() / 1024.0,
    );
    if let Some(path) = markdown {
        let command = format!(
            "target/release/latchkey-bench {}",
            report::shell_words(std::env::args().skip(1).map(|a| report::redact_url(&a)))
        );
        std::fs::write(&path, sockets::markdown(&r, &command))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `latchkey-bench migration`: import throughput and imported users' first sign-ins.
async fn run_migration(
    rows: u64,
    users: u64,
    concurrency: usize,
    duration: Duration,
    postgres: Option<String>,
    latchkey_bin: Option<PathBuf>,
    markdown: Option<PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(rows > 0 && users > 0 && concurrency > 0, "--rows, --users and --concurrency must be at least 1");
    let binary = server::find_binary(latchkey_bin.as_deref())?;
    eprintln!("latchkey binary: {}", binary.display());
    let mut imports = Vec::new();
    for backend in std::iter::once(None).chain(postgres.as_deref().map(Some)) {
        eprintln!("==> latchkey import of {rows} rows on {}", if backend.is_some() { "PostgreSQL" } else { "SQLite" });
        let run = migration::import(&binary, rows, backend).await?;
        println!(
            "{}: {} rows in {:.1} s ({:.0} rows/s), again in {:.1} s ({:.0} rows/s), peak RSS {:.1} MiB",
            run.backend,
            run.rows,
            run.seconds,
            run.rows_per_s,
            run.again_seconds,
            run.again_rows_per_s,
            run.peak_rss_mib
        );
        imports.push(run);
    }
    eprintln!("==> argon2id ceiling");
    let ceiling =
        tokio::task::spawn_blocking(|| ceilings::argon2(Duration::from_secs(5), HashParams::default())).await??;
    println!("argon2id ceiling: {:.1} hashes/s on {} threads", ceiling.hashes_per_s, ceiling.threads);
    eprintln!("==> first sign-ins of imported users, per foreign format (SQLite)");
    let foreign = migration::foreign_sign_ins(&binary, users, concurrency, duration, None).await?;
    for r in &foreign {
        println!(
            "{} {}: {:.1} first sign-ins/s ({:.2}x the argon2id ceiling), {} errors",
            r.format,
            r.parameters,
            r.per_s,
            r.per_s / ceiling.hashes_per_s,
            r.errors
        );
    }
    if let Some(path) = markdown {
        std::fs::write(&path, migration::markdown(&imports, &foreign, ceiling.hashes_per_s))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// What stays the same across directory sizes.
struct Shared {
    binary: Option<PathBuf>,
    extra_env: Vec<(String, String)>,
    secret: String,
    sink: SmtpSink,
    password_hash: String,
    ceilings: Option<Ceilings>,
    /// The HTTP ceiling at each concurrency of the sweep (empty without a sweep or ceilings).
    sweep_ceilings: Vec<(usize, load::Measurement)>,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(!cli.duration.is_zero(), "--duration must be longer than zero");
    anyhow::ensure!(cli.instances > 0, "--instances must be at least 1");
    anyhow::ensure!(!cli.users.is_empty() && cli.users.iter().all(|&u| u > 0), "--users needs sizes of at least 1");
    anyhow::ensure!(cli.rate.is_finite() && cli.rate > 0.0, "--rate must be above zero");
    anyhow::ensure!(cli.max_in_flight > 0, "--max-in-flight must be at least 1");
    anyhow::ensure!(
        cli.concurrency_sweep.iter().all(|&c| c > 0),
        "--concurrency-sweep needs concurrencies of at least 1"
    );
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: latchkey-bench is a debug build; its client overhead distorts every number (use --release)"
        );
    }
    let hash_params = cli.hash_params();
    hash_params.check_strength().map_err(|e| anyhow::anyhow!("--argon2-memory-kib, --argon2-iterations: {e}"))?;
    let mut extra_env = cli
        .server_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.starts_with("LATCHKEY_ARGON2_") => {
                bail!("--server-env {kv:?}: use --argon2-memory-kib and --argon2-iterations, which the ceiling and the seeding follow too")
            }
            Some((k, v)) if k.starts_with("LATCHKEY_") => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--server-env {kv:?}: expected LATCHKEY_KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Only when they differ from the defaults, so that a server built before these keys
    // existed still runs the default benchmark.
    if hash_params != HashParams::default() {
        extra_env.push(("LATCHKEY_ARGON2_MEMORY_KIB".into(), hash_params.memory_kib.to_string()));
        extra_env.push(("LATCHKEY_ARGON2_ITERATIONS".into(), hash_params.iterations.to_string()));
    }
    let binary = if cli.url.is_empty() { Some(server::find_binary(cli.latchkey_bin.as_deref())?) } else { None };
    if let Some(b) = &binary {
        eprintln!("latchkey binary: {}", b.display());
    }

    let ceilings = if cli.skip_ceilings {
        None
    } else {
        eprintln!("==> ceiling: argon2id hashes/s for {} s", cli.duration.as_secs_f64());
        let duration = cli.duration;
        let argon2 = tokio::task::spawn_blocking(move || ceilings::argon2(duration, hash_params))
            .await
            .context("the argon2 ceiling task failed")??;
        eprintln!("    {:.1} hashes/s on {} threads", argon2.hashes_per_s, argon2.threads);
        eprintln!("==> ceiling: bare axum GET / at concurrency {}", cli.concurrency);
        let http = ceilings::http(cli.concurrency, cli.warmup, cli.duration).await?;
        eprintln!("    {:.0} req/s, p99 {:.2} ms", http.measurement.rps, http.measurement.latency_ms.p99);
        Some(Ceilings { argon2, http })
    };
    let mut sweep_ceilings = Vec::new();
    if ceilings.is_some() && cli.workloads.iter().any(|w| w.in_sweep()) {
        for &c in &cli.concurrency_sweep {
            eprintln!("==> ceiling: bare axum GET / at concurrency {c} (sweep)");
            let http = ceilings::http(c, cli.warmup, cli.duration).await?;
            eprintln!("    {:.0} req/s, p99 {:.2} ms", http.measurement.rps, http.measurement.latency_ms.p99);
            sweep_ceilings.push((c, http.measurement));
        }
    }

    let ctx = Shared {
        binary,
        extra_env,
        secret: cli
            .secret
            .clone()
            .unwrap_or_else(|| format!("latchkey-bench-secret-{}", uuid::Uuid::new_v4().simple())),
        sink: SmtpSink::start().await?,
        password_hash: seed::password_hash(hash_params).await?,
        ceilings,
        sweep_ceilings,
    };

    // A failing size ends the run, but the sizes done so far are still reported.
    let mut sizes = Vec::new();
    let mut sweep = None;
    let mut failure = None;
    for (i, &users) in cli.users.iter().enumerate() {
        let concurrencies = if i == 0 { cli.concurrency_sweep.as_slice() } else { &[] };
        match run_size(&cli, &ctx, users, concurrencies).await {
            Ok((size, points)) => {
                if !points.is_empty() {
                    sweep = Some(SweepReport {
                        users,
                        concurrencies: cli.concurrency_sweep.clone(),
                        ceiling: ctx.sweep_ceilings.iter().map(|(c, m)| (*c, m.clone())).collect(),
                        points,
                    });
                }
                sizes.push(size);
            }
            Err(e) => {
                failure = Some(e.context(format!("the run with {users} users failed")));
                break;
            }
        }
    }
    if sizes.is_empty() {
        return Err(failure.unwrap_or_else(|| anyhow::anyhow!("nothing was measured")));
    }

    let backend = if !cli.url.is_empty() || cli.database_url.is_some() {
        let url = cli.database_url.as_deref().unwrap_or_default();
        if url.starts_with("sqlite:") { "SQLite (existing database)" } else { "PostgreSQL (existing database)" }
    } else if cli.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let report = Report {
        generated_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        machine: report::Machine::detect(),
        command: format!(
            "cargo build --release -p latchkey -p latchkey-bench\ntarget/release/latchkey-bench {}",
            report::shell_words(std::env::args().skip(1).map(|a| report::redact_url(&a)))
        ),
        settings: report::Settings {
            backend: backend.to_owned(),
            instances: if cli.url.is_empty() { cli.instances } else { 0 },
            targets: cli.url.clone(),
            concurrency: cli.concurrency,
            duration_s: cli.duration.as_secs_f64(),
            warmup_s: cli.warmup.as_secs_f64(),
            sessions: cli.sessions,
            storm_checks: cli.storm_checks,
            storm_signins: cli.storm_signins,
            open_rate: cli.rate,
            open_max_in_flight: cli.max_in_flight,
            concurrency_sweep: cli.concurrency_sweep.clone(),
            latchkey_bin: ctx.binary.as_ref().map(|b| b.display().to_string()),
            server_env: cli.server_env.iter().map(|e| report::redact_url(e)).collect(),
            bench_build: if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned(),
        },
        ceilings: ctx.ceilings.clone(),
        sizes,
        sweep,
        charts: Vec::new(),
    };
    let mut report = report;
    if let Some(dir) = &cli.svg_dir {
        match charts::draw_all(&report, dir) {
            Ok(files) => {
                for f in &files {
                    eprintln!("wrote {}", dir.join(&f.file).display());
                }
                report.charts = files;
            }
            Err(e) => eprintln!("warning: drawing the charts: {e:#}"),
        }
    }
    print!("{}", report::render_text(&report));
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &cli.markdown {
        let links = chart_links(cli.svg_dir.as_deref(), path);
        std::fs::write(path, report::render_markdown(&report, false, links.as_deref()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &cli.write_benchmarks_md {
        let links = chart_links(cli.svg_dir.as_deref(), path);
        std::fs::write(path, report::render_markdown(&report, true, links.as_deref()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    failure.map_or(Ok(()), Err)
}

/// How a Markdown file at `markdown` links to the charts in `svg_dir`: the directory relative to
/// the file's own (`bench/` for `bench/` beside it), else as given; `None` without charts.
fn chart_links(svg_dir: Option<&std::path::Path>, markdown: &std::path::Path) -> Option<String> {
    let dir = svg_dir?;
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (dir_abs, md_dir) = (absolute(dir), absolute(markdown.parent().unwrap_or(std::path::Path::new("."))));
    let shown = match dir_abs.strip_prefix(&md_dir) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => dir.to_path_buf(),
    };
    let s = shown.to_string_lossy().replace('\\', "/");
    Some(if s.is_empty() { String::new() } else { format!("{}/", s.trim_end_matches('/')) })
}

/// One directory size: provision, run (with the concurrency sweep at `sweep`), and always
/// clean up.
async fn run_size(
    cli: &Cli,
    ctx: &Shared,
    users: u64,
    sweep: &[usize],
) -> anyhow::Result<(SizeReport, Vec<SweepPoint>)> {
    eprintln!("==> {users} users");
    let directory = match &cli.database_url {
        Some(url) => Directory::external(url)?,
        None if cli.postgres => Directory::postgres(&cli.postgres_url).await?,
        None => Directory::sqlite()?,
    };
    let result = run_on_directory(cli, ctx, users, &directory, sweep).await;
    if let Err(e) = directory.remove().await {
        eprintln!("warning: cleaning up: {e:#}");
    }
    result
}

/// Starts the servers (unless --url), measures, and always stops them.
async fn run_on_directory(
    cli: &Cli,
    ctx: &Shared,
    users: u64,
    directory: &Directory,
    sweep: &[usize],
) -> anyhow::Result<(SizeReport, Vec<SweepPoint>)> {
    let probe = reqwest::Client::builder().build().context("building the HTTP client")?;
    let mut servers: Vec<Latchkey> = Vec::new();
    if let Some(binary) = &ctx.binary {
        for i in 0..cli.instances {
            let launch = Launch {
                binary: binary.clone(),
                database_url: directory.url().to_owned(),
                secret: ctx.secret.clone(),
                // Instance 0's issuer is its own URL; the others must issue and accept the same.
                public_url: servers.first().map(|s| s.base_url.clone()),
                smtp_port: ctx.sink.port,
                work_dir: directory.work_dir().to_path_buf(),
                extra_env: ctx.extra_env.clone(),
            };
            match Latchkey::start(&launch, &format!("latchkey-{i}"), &probe).await {
                Ok(s) => {
                    eprintln!("    latchkey {i} ready on {} (pid {})", s.base_url, s.pid);
                    servers.push(s);
                }
                Err(e) => {
                    stop_all(servers).await;
                    return Err(e.context(format!("starting Latchkey instance {i}")));
                }
            }
        }
    }
    let bases = if cli.url.is_empty() {
        servers.iter().map(|s| s.base_url.clone()).collect()
    } else {
        cli.url.iter().map(|u| u.trim_end_matches('/').to_owned()).collect()
    };
    let result = measure(cli, ctx, users, directory, &servers, bases, sweep).await;
    if result.is_err() {
        for (i, s) in servers.iter().enumerate() {
            eprintln!("standard error of Latchkey instance {i} (last lines):\n{}", s.stderr_tail());
        }
    }
    stop_all(servers).await;
    result
}

async fn stop_all(servers: Vec<Latchkey>) {
    for s in servers {
        if let Err(e) = s.stop().await {
            eprintln!("warning: stopping Latchkey: {e:#}");
        }
    }
}

/// Seeds, signs in the session pools, and runs every selected workload, then the concurrency
/// sweep (at `sweep`, empty for none).
async fn measure(
    cli: &Cli,
    ctx: &Shared,
    users: u64,
    directory: &Directory,
    servers: &[Latchkey],
    bases: Vec<String>,
    sweep: &[usize],
) -> anyhow::Result<(SizeReport, Vec<SweepPoint>)> {
    // Before any load (seeding goes straight to the database).
    let idle_rss_kib = servers.iter().filter_map(Latchkey::rss_kib).max();
    if let Some(kib) = idle_rss_kib {
        eprintln!("    idle RSS after start: {:.1} MiB", kib as f64 / 1024.0);
    }
    let seed = seed::seed(directory.url(), users, &ctx.password_hash).await?;
    eprintln!("    seeded {} users in {:.1} s", seed.inserted, seed.seconds);

    let selected = |w: Workload| cli.workloads.contains(&w);
    let swept = |w: Workload| selected(w) && w.in_sweep() && !sweep.is_empty();
    let largest = sweep.iter().copied().chain([cli.concurrency]).max().unwrap_or(cli.concurrency);
    let chains = |ws: &[Workload]| {
        let max_conc = if ws.iter().any(|&w| swept(w)) { largest } else { cli.concurrency };
        if ws.iter().any(|&w| selected(w)) { cli.sessions.max(max_conc) } else { 0 }
    };
    let shared = |ws: &[Workload]| if ws.iter().any(|&w| selected(w)) { cli.sessions.max(1) } else { 0 };
    let pools = Pools {
        cookies: shared(&[Workload::Check, Workload::Mix, Workload::OpenMix, Workload::Storm]),
        v1: chains(&[Workload::Me, Workload::Refresh, Workload::Mix, Workload::OpenMix]),
        auth: chains(&[Workload::AuthUser, Workload::AuthRefresh]),
        graphql: shared(&[Workload::GraphqlMe]),
        cognito: shared(&[Workload::CognitoUser]),
        returning: if [Workload::Signin, Workload::Mix, Workload::OpenMix, Workload::Storm].iter().any(|&w| selected(w))
        {
            usize::try_from(users).unwrap_or(usize::MAX).min(RETURNING_USERS)
        } else {
            0
        },
    };
    let clients = largest.max(cli.storm_checks + cli.storm_signins);
    let target = Arc::new(Target::new(bases, clients)?);
    eprintln!(
        "    signing in sessions: {} users, {} v1, {} auth (sign-ups), {} graphql, {} cognito; {} returning users",
        pools.cookies, pools.v1, pools.auth, pools.graphql, pools.cognito, pools.returning
    );
    let parallel = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let (creds, notes) = load::prepare(&target, users, pools, parallel).await?;
    for n in &notes {
        eprintln!("    note: {n}");
    }
    let creds = Arc::new(creds);
    let mails_before = ctx.sink.received();

    let peak = |servers: &[Latchkey]| servers.iter().filter_map(Latchkey::peak_rss_kib).max();
    let mut notes = notes;
    if !servers.is_empty() && !servers.iter().all(Latchkey::reset_peak_rss) {
        notes.push(
            "the kernel did not let the peak RSS be reset between workloads: each is the peak since start".into(),
        );
    }
    let reset = |servers: &[Latchkey]| {
        for s in servers {
            s.reset_peak_rss();
        }
    };
    let mut workloads = Vec::new();
    let mut storm = None;
    let mut open_mix = None;
    for &w in &cli.workloads {
        if w == Workload::Storm {
            storm = Some(run_storm(cli, &target, &creds, servers).await?);
            continue;
        }
        if w == Workload::OpenMix {
            reset(servers);
            open_mix = Some(run_open_mix(cli, &target, &creds, servers).await?);
            continue;
        }
        let Some(Spec { key, name, mix, ceiling }) = w.spec() else { continue };
        if workloads.iter().any(|r: &WorkloadReport| r.key == key) {
            continue;
        }
        eprintln!("==> {name} (concurrency {})", cli.concurrency);
        let plan = Plan { mix, concurrency: cli.concurrency, warmup: cli.warmup, duration: cli.duration };
        reset(servers);
        let base = match &ctx.ceilings {
            None => None,
            Some(c) if cli.ceilings_once => Some(match ceiling {
                CeilingKind::Argon2id => (c.argon2.hashes_per_s, c.argon2.cpu_share),
                CeilingKind::Http => (c.http.measurement.rps, None),
            }),
            Some(_) => Some(paired_ceiling(cli, ceiling).await?),
        };
        let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
        let before = (ceiling == CeilingKind::Argon2id).then(|| server::CpuTicks::now(&pids)).flatten();
        let m = load::run(&target, &creds, &plan).await?;
        let cpu = before.and_then(|b| server::CpuTicks::now(&pids).and_then(|a| b.shares_until(&a)));
        // This machine's hash rate drifts by 10-20% within a minute: an argon2id ceiling is
        // measured again right after its workload too, and the ratio's base is the mean of the
        // two, so that a steady drift cancels out.
        let base = match (base, ceiling) {
            (Some((before, share_before)), CeilingKind::Argon2id) if !cli.ceilings_once => {
                let (after, share_after) = paired_ceiling(cli, ceiling).await?;
                let share = share_before.zip(share_after).map(|(b, a)| (b + a) / 2.0);
                Some(((before + after) / 2.0, share))
            }
            (base, _) => base,
        };
        let cpu = cpu.map(|c| server::CpuShares { ceiling_hashing: base.and_then(|(_, share)| share), ..c });
        let ratio = base.map(|(base, _)| Ratio::of(ceiling, m.rps, base));
        log_measurement(&m);
        workloads.push(WorkloadReport {
            key: key.to_owned(),
            name: name.to_owned(),
            measurement: m,
            peak_rss_kib: peak(servers),
            ratio,
            cpu,
        });
    }

    let mut points = Vec::new();
    let mut done = Vec::new();
    for &w in cli.workloads.iter().filter(|&&w| swept(w)) {
        let Some(Spec { key, name, mix, ceiling }) = w.spec() else { continue };
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        for &concurrency in sweep {
            eprintln!("==> sweep: {name} (concurrency {concurrency})");
            let plan = Plan { mix: mix.clone(), concurrency, warmup: cli.warmup, duration: cli.duration };
            let m = load::run(&target, &creds, &plan).await?;
            log_measurement(&m);
            let base = ctx.sweep_ceilings.iter().find(|(c, _)| *c == concurrency).map(|(_, h)| h.rps);
            let ratio = base.map(|b| Ratio::of(ceiling, m.rps, b));
            points.push(SweepPoint { key: key.to_owned(), name: name.to_owned(), concurrency, measurement: m, ratio });
        }
    }
    let size = SizeReport {
        users,
        seed,
        notes,
        mails_received: ctx.sink.received() - mails_before,
        idle_rss_kib,
        workloads,
        open_mix,
        storm,
    };
    Ok((size, points))
}

/// `ceiling` measured again now, with the servers idle, for the workload about to run (or, for
/// the argon2id ceiling, just run): its rate (argon2id hashes or bare-axum requests per
/// second), and for argon2id the share of the machine's CPU time its threads had.
async fn paired_ceiling(cli: &Cli, ceiling: CeilingKind) -> anyhow::Result<(f64, Option<f64>)> {
    Ok(match ceiling {
        CeilingKind::Argon2id => {
            let (duration, params) = (cli.duration, cli.hash_params());
            let argon2 = tokio::task::spawn_blocking(move || ceilings::argon2(duration, params))
                .await
                .context("the argon2 ceiling task failed")??;
            eprintln!("    ceiling now: {:.1} argon2id hashes/s", argon2.hashes_per_s);
            (argon2.hashes_per_s, argon2.cpu_share)
        }
        CeilingKind::Http => {
            let http = ceilings::http(cli.concurrency, cli.warmup, cli.duration).await?;
            eprintln!("    ceiling now: {:.0} bare axum req/s", http.measurement.rps);
            (http.measurement.rps, None)
        }
    })
}

fn log_measurement(m: &load::Measurement) {
    eprintln!(
        "    {:.1} req/s, p99 {:.2} ms, {} errors{}",
        m.rps,
        m.latency_ms.p99,
        m.errors,
        m.errors_by_kind.iter().map(|(k, v)| format!(" [{k}: {v}]")).collect::<String>()
    );
}

/// The 90/8/2 mix open-loop at `--rate` arrivals per second.
async fn run_open_mix(
    cli: &Cli,
    target: &Arc<Target>,
    creds: &Arc<load::Credentials>,
    servers: &[Latchkey],
) -> anyhow::Result<OpenMixReport> {
    eprintln!("==> open-loop mix: {} arrivals/s, at most {} in flight", cli.rate, cli.max_in_flight);
    let plan = OpenPlan {
        mix: OPEN_MIX.to_vec(),
        rate: cli.rate,
        max_in_flight: cli.max_in_flight,
        warmup: cli.warmup,
        duration: cli.duration,
    };
    let m = load::run_open(target, creds, &plan).await?;
    eprintln!(
        "    {:.1} req/s of {} asked, p99 {:.2} ms, {} errors, {} dropped, peak {} in flight",
        m.rps, m.rate, m.latency_ms.p99, m.errors, m.dropped, m.peak_in_flight
    );
    Ok(OpenMixReport {
        key: "open-mix".into(),
        name: format!("open-loop mix at {} req/s: 90% currentuser, 8% refresh, 2% sign-in", cli.rate),
        measurement: m,
        peak_rss_kib: servers.iter().filter_map(Latchkey::peak_rss_kib).max(),
    })
}

/// Session checks alone, then the same checks while a sign-in storm saturates the hash pool.
async fn run_storm(
    cli: &Cli,
    target: &Arc<Target>,
    creds: &Arc<load::Credentials>,
    servers: &[Latchkey],
) -> anyhow::Result<StormReport> {
    let checks = Plan {
        mix: vec![(Op::CurrentUser, 1)],
        concurrency: cli.storm_checks,
        warmup: cli.warmup,
        duration: cli.duration,
    };
    let signins = Plan { mix: vec![(Op::SignIn, 1)], concurrency: cli.storm_signins, ..checks.clone() };
    eprintln!("==> storm: session checks alone (concurrency {})", cli.storm_checks);
    let alone = load::run(target, creds, &checks).await?;
    eprintln!("    p99 {:.2} ms", alone.latency_ms.p99);
    eprintln!("==> storm: session checks during {} concurrent sign-ins", cli.storm_signins);
    for s in servers {
        s.reset_peak_rss();
    }
    let (under, storm) = tokio::join!(load::run(target, creds, &checks), load::run(target, creds, &signins));
    let (under, storm) = (under?, storm?);
    eprintln!("    p99 {:.2} ms; {:.1} sign-ins/s", under.latency_ms.p99, storm.rps);
    let p99_ratio = (alone.ok > 0 && under.ok > 0 && alone.latency_ms.p99 > 0.0)
        .then(|| under.latency_ms.p99 / alone.latency_ms.p99);
    Ok(StormReport {
        checks_alone: alone,
        checks_under_storm: under,
        storm_signins: storm,
        p99_ratio,
        peak_rss_kib: servers.iter().filter_map(Latchkey::peak_rss_kib).max(),
    })
}
