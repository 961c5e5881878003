//! `latchkey-bench sockets`: what idle WebSockets of the `realtime` surface (`GET /ws`) cost
//! the server in memory.
//!
//! Starts Latchkey on a fresh database, seeds one verified user and signs it in through `v1`,
//! warms the server up with a few sockets, then opens `--count` sockets and reads the server's
//! resident set size (`VmRSS` in `/proc/<pid>/status`) before and after; then signs every socket
//! in (`user-login` with the same session's tokens, so each is registered for revocation
//! pushes) and reads it again. The figures are the growth divided by the number of sockets.
//! Raises this process's open-file limit to its hard limit first (the server inherits it).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt, stream};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::seed::{self, Directory};
use crate::server::{self, Latchkey, Launch};
use crate::smtp::SmtpSink;

/// Sockets opened at once.
const PARALLEL: usize = 64;
/// Sockets opened and closed before the baseline, so that thread pools and allocator arenas
/// are warm.
const WARM_UP: usize = 256;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct SocketsReport {
    /// Sockets held open.
    pub count: usize,
    /// Server RSS before opening them, KiB.
    pub baseline_kib: u64,
    /// Server RSS with every socket open and idle, KiB.
    pub idle_kib: u64,
    /// Server RSS with every socket signed in, KiB.
    pub signed_in_kib: u64,
    /// Seconds taken to open them.
    pub open_seconds: f64,
}

impl SocketsReport {
    /// Bytes per idle socket.
    pub fn idle_bytes_per_socket(&self) -> f64 {
        self.idle_kib.saturating_sub(self.baseline_kib) as f64 * 1024.0 / self.count as f64
    }

    /// Bytes per signed-in socket.
    pub fn signed_in_bytes_per_socket(&self) -> f64 {
        self.signed_in_kib.saturating_sub(self.baseline_kib) as f64 * 1024.0 / self.count as f64
    }
}

/// Runs the measurement with `count` sockets against a Latchkey started from `binary` on
/// SQLite, or PostgreSQL at `postgres` (an admin URL; a database is created and dropped).
///
/// # Errors
/// When the open-file limit is too low, the server does not start, or a socket fails.
pub async fn run(binary: std::path::PathBuf, count: usize, postgres: Option<&str>) -> anyhow::Result<SocketsReport> {
    let limit = raise_open_file_limit().await?;
    // Each socket is one descriptor here and one in the server (a separate process).
    if (count + WARM_UP + 256) as u64 > limit {
        bail!("--count {count} needs an open-file limit above {}; the hard limit is {limit}", count + WARM_UP + 256);
    }
    let directory = match postgres {
        Some(url) => Directory::postgres(url).await?,
        None => Directory::sqlite()?,
    };
    let sink = SmtpSink::start().await?;
    let launch = Launch {
        binary,
        database_url: directory.url().to_owned(),
        secret: format!("latchkey-bench-secret-{}", uuid::Uuid::new_v4().simple()),
        public_url: None,
        smtp_port: sink.port,
        work_dir: directory.work_dir().to_path_buf(),
        extra_env: vec![
            ("LATCHKEY_REALTIME_SOCKETS_PER_ADDRESS".into(), (count + WARM_UP + 16).to_string()),
            // No pings during the run: the figure is the socket at rest.
            ("LATCHKEY_REALTIME_PING_INTERVAL".into(), "1h".into()),
        ],
    };
    let client = reqwest::Client::new();
    let latchkey = Latchkey::start(&launch, "latchkey-sockets", &client).await?;
    let result = measure(&latchkey, &client, directory.url(), count).await;
    if result.is_err() {
        eprintln!("standard error of Latchkey (last lines):\n{}", latchkey.stderr_tail());
    }
    let stopped = latchkey.stop().await;
    let removed = directory.remove().await;
    let report = result?;
    stopped?;
    removed?;
    Ok(report)
}

async fn measure(
    latchkey: &Latchkey,
    client: &reqwest::Client,
    url: &str,
    count: usize,
) -> anyhow::Result<SocketsReport> {
    let hash = seed::password_hash(latchkey_core::password::HashParams::default()).await?;
    seed::seed(url, 1, &hash).await?;
    let email = seed::email(1);
    let signed_in: serde_json::Value = client
        .post(format!("{}/v1/sessions", latchkey.base_url))
        .json(&json!({"email": email, "password": seed::PASSWORD}))
        .send()
        .await
        .context("signing the bench user in")?
        .error_for_status()
        .context("signing the bench user in")?
        .json()
        .await?;
    let login = json!({
        "action": "user-login",
        "message": {
            "email": email,
            "accessToken": signed_in["access_token"],
            "idToken": signed_in["id_token"],
            "refreshToken": signed_in["refresh_token"],
        }
    })
    .to_string();
    let ws_url = format!("{}/ws", latchkey.base_url.replacen("http://", "ws://", 1));

    let warm = open(&ws_url, WARM_UP).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_kib = rss_kib(latchkey.pid)?;
    eprintln!("    server RSS before: {baseline_kib} KiB");

    let started = Instant::now();
    let mut sockets = open(&ws_url, count).await?;
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(latchkey.pid)?;
    eprintln!("    {count} idle sockets open in {open_seconds:.1} s; server RSS {idle_kib} KiB");

    stream::iter(sockets.iter_mut())
        .map(|socket| sign_in(socket, &login))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signed_in_kib = rss_kib(latchkey.pid)?;
    eprintln!("    {count} sockets signed in; server RSS {signed_in_kib} KiB");
    drop(sockets);
    Ok(SocketsReport { count, baseline_kib, idle_kib, signed_in_kib, open_seconds })
}

/// Opens `n` sockets to `url`, [`PARALLEL`] at a time.
async fn open(url: &str, n: usize) -> anyhow::Result<Vec<Socket>> {
    stream::iter(0..n)
        .map(|i| async move {
            let (socket, _) =
                tokio_tungstenite::connect_async(url).await.with_context(|| format!("opening socket {i}"))?;
            Ok::<_, anyhow::Error>(socket)
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Sends `user-login` on `socket` and waits for its reply.
async fn sign_in(socket: &mut Socket, login: &str) -> anyhow::Result<()> {
    socket.send(Message::Text(login.to_owned().into())).await?;
    while let Some(message) = socket.next().await {
        if let Message::Text(reply) = message? {
            let reply: serde_json::Value = serde_json::from_str(reply.as_str())?;
            if reply["message"]["message"] == "user logged in" {
                return Ok(());
            }
            bail!("user-login was refused: {reply}");
        }
    }
    bail!("the socket closed before answering user-login")
}

/// Resident set size of process `pid` (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    server::rss_kib(pid).context("cannot read the server's VmRSS from /proc")
}

/// Raises this process's soft open-file limit to its hard limit with `prlimit` (util-linux);
/// returns the limit now in force.
async fn raise_open_file_limit() -> anyhow::Result<u64> {
    let pid = std::process::id().to_string();
    let hard = tokio::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--raw", "--noheadings", "--output", "HARD"])
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running prlimit (util-linux) to read the open-file limit")?;
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let set = tokio::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:")])
        .status()
        .await
        .context("running prlimit to raise the open-file limit")?;
    if !set.success() {
        bail!("prlimit could not raise the open-file limit to {hard}");
    }
    Ok(if hard == "unlimited" { u64::MAX } else { hard.parse().context("reading the hard open-file limit")? })
}

/// The figures as a Markdown section for `BENCHMARKS.md`.
pub fn markdown(r: &SocketsReport, command: &str) -> String {
    format!(
        "| sockets | server RSS before | idle | signed in | per idle socket | per signed-in socket |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n\
         | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} KiB |\n\n\
         Command: `{command}`\n",
        r.count,
        r.baseline_kib as f64 / 1024.0,
        r.idle_kib as f64 / 1024.0,
        r.signed_in_kib as f64 / 1024.0,
        r.idle_bytes_per_socket() / 1024.0,
        r.signed_in_bytes_per_socket() / 1024.0,
    )
}
