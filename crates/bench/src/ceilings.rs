//! The ceilings each workload is reported against, measured in the same run on the same
//! machine:
//!
//! * **argon2id**: raw hashes per second with Latchkey's parameters on every core, the most
//!   sign-ins or sign-ups per second any server could do here;
//! * **HTTP**: a bare axum handler (`GET /` answering `ok`) in a child process, driven by the
//!   same client at the same concurrency, the most requests per second this client and this
//!   machine allow whatever the handler does.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::{Algorithm, Argon2, Params, Version};
use latchkey_core::password::HashParams;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::load::{self, Credentials, Measurement, Op, Plan, Target};
use crate::server;

/// The argon2id ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct HashCeiling {
    /// Memory cost, KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hashing threads (one per core).
    pub threads: usize,
    /// Hashes completed.
    pub hashes: u64,
    /// Measured time, in seconds.
    pub seconds: f64,
    /// Hashes per second over all threads.
    pub hashes_per_s: f64,
    /// Mean time of one hash on one thread, in ms.
    pub ms_per_hash: f64,
    /// The share of the machine's CPU time the hashing threads had (this process's, which
    /// does nothing else meanwhile), 0 to 1: what other processes and interrupts leave to the
    /// ceiling. `None` where `/proc` cannot be read.
    pub cpu_share: Option<f64>,
}

/// Hashes with the argon2id parameters `p` (the server's: `HashParams::default()` unless the
/// run sets others) on `std::thread::available_parallelism()` threads for `duration`. Each
/// thread reuses one memory buffer for all its hashes, as Latchkey's hashing threads do, so
/// the figure is pure hashing work. Blocks the calling thread.
///
/// # Errors
/// When the parameters are rejected or a hash fails.
pub fn argon2(duration: Duration, p: HashParams) -> anyhow::Result<HashCeiling> {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashes = AtomicU64::new(0);
    let cpu_before = server::CpuTicks::now(&[]);
    let started = Instant::now();
    let deadline = started + duration;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (argon2, hashes) = (&argon2, &hashes);
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut out = [0u8; 32];
                    let mut salt = [0u8; 16];
                    let mut memory = vec![argon2::Block::default(); argon2.params().block_count()];
                    let mut i: u64 = 0;
                    while Instant::now() < deadline {
                        salt[..8].copy_from_slice(&i.to_le_bytes());
                        salt[8..].copy_from_slice(&(t as u64).to_le_bytes());
                        argon2
                            .hash_password_into_with_memory(b"latchkey bench password", &salt, &mut out, &mut memory)
                            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                        hashes.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_share = cpu_before
        .and_then(|b| server::CpuTicks::now(&[]).and_then(|a| b.shares_until(&a)))
        .map(|shares| shares.load_generator);
    let hashes = hashes.load(Ordering::Relaxed);
    Ok(HashCeiling {
        memory_kib: p.memory_kib,
        iterations: p.iterations,
        parallelism: p.parallelism,
        threads,
        hashes,
        seconds,
        hashes_per_s: hashes as f64 / seconds,
        ms_per_hash: if hashes == 0 { 0.0 } else { seconds * 1000.0 * threads as f64 / hashes as f64 },
        cpu_share,
    })
}

/// The HTTP ceiling: the bare server measured like a workload.
#[derive(Debug, Clone, Serialize)]
pub struct HttpCeiling {
    /// The load run against `GET /`.
    pub measurement: Measurement,
    /// Peak resident set size of the bare server, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Starts the bare server (this binary's hidden `bare-http` command) and drives `GET /` at
/// `concurrency` for `warmup` + `duration`.
///
/// # Errors
/// When the bare server cannot be started or the harness fails.
pub async fn http(concurrency: usize, warmup: Duration, duration: Duration) -> anyhow::Result<HttpCeiling> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let port = server::free_port()?;
    let mut child = Command::new(exe)
        .args(["bare-http", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the bare HTTP server")?;
    let pid = child.id().context("the bare HTTP server exited at once")?;
    let stdout = child.stdout.take().context("the bare HTTP server's standard output")?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).read_line(&mut line))
        .await
        .context("the bare HTTP server did not start within 10 s")?
        .context("reading from the bare HTTP server")?;
    anyhow::ensure!(line.trim() == "ready", "the bare HTTP server said {line:?} instead of \"ready\"");

    let target = Arc::new(Target::new(vec![format!("http://127.0.0.1:{port}")], concurrency)?);
    let creds = Arc::new(Credentials::default());
    let plan = Plan { mix: vec![(Op::Bare, 1)], concurrency, warmup, duration };
    server::reset_peak_rss(pid);
    let measurement = load::run(&target, &creds, &plan).await;
    let peak_rss_kib = server::peak_rss_kib(pid);
    let _ = child.kill().await;
    Ok(HttpCeiling { measurement: measurement?, peak_rss_kib })
}

/// Serves `GET /` -> 200 `ok` on `127.0.0.1:port` on a multi-threaded runtime with a worker per
/// core (as Latchkey's), printing `ready` on standard output once listening. Runs until killed.
///
/// # Errors
/// When the port cannot be bound or serving fails.
pub fn serve_bare(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("building a runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        println!("ready");
        axum::serve(listener, app).await.context("serving")
    })
}
