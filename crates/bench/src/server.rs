//! Starting and stopping Latchkey (`latchkey serve`) as a child process configured only
//! through `LATCHKEY_*` environment variables, waiting for `GET /readyz`, and reading its peak
//! resident set size from `/proc`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long a server gets to answer `GET /readyz` with 200 after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The Latchkey binary to run: `explicit` (`--latchkey-bin` or `LATCHKEY_BIN`), else the
/// `latchkey` built beside this benchmark (same target directory and profile, as
/// `cargo build --release -p latchkey -p latchkey-bench` leaves it), else
/// `target/release/latchkey` in the working directory.
///
/// # Errors
/// When `explicit` does not exist, or no release build is found.
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("the Latchkey binary {} does not exist", path.display());
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("latchkey")));
    let mut tried = Vec::new();
    for candidate in beside.into_iter().chain([PathBuf::from("target/release/latchkey")]) {
        if candidate.is_file() {
            return Ok(candidate.canonicalize().unwrap_or(candidate));
        }
        tried.push(candidate.display().to_string());
    }
    bail!(
        "no release build of Latchkey found (tried {}); build it with \
         `cargo build --release -p latchkey`, or pass --latchkey-bin / set LATCHKEY_BIN",
        tried.join(", ")
    )
}

/// A free TCP port on `127.0.0.1` (bound, then released for the child to bind).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("reading the free port")?.port())
}

/// How to start one Latchkey instance.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `latchkey` binary.
    pub binary: PathBuf,
    /// `LATCHKEY_DATABASE_URL`.
    pub database_url: String,
    /// `LATCHKEY_SECRET` (at least 32 bytes; shared by every instance of a run).
    pub secret: String,
    /// `LATCHKEY_PUBLIC_URL`: the issuer, which every instance of a run must share so that a
    /// token issued by one is accepted by the others.
    pub public_url: Option<String>,
    /// The port of the SMTP sink (`LATCHKEY_SMTP_URL=smtp://127.0.0.1:<port>`).
    pub smtp_port: u16,
    /// Working directory of the child, which also holds its captured standard error.
    pub work_dir: PathBuf,
    /// Further `LATCHKEY_*` settings (`--server-env`), applied last.
    pub extra_env: Vec<(String, String)>,
}

/// A running Latchkey child process.
#[derive(Debug)]
pub struct Latchkey {
    child: Child,
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Its process id.
    pub pid: u32,
    stderr_path: PathBuf,
}

impl Latchkey {
    /// Starts `latchkey serve` on a free port with `launch`'s settings, rate limits off and
    /// logs at `warn`, and waits until `GET /readyz` answers 200.
    ///
    /// Every `LATCHKEY_*` variable of this process's environment is removed from the child's,
    /// so only the settings named here apply.
    ///
    /// # Errors
    /// When the process cannot be started, exits early or is not ready in time; the error
    /// holds the tail of its standard error.
    pub async fn start(launch: &Launch, name: &str, client: &reqwest::Client) -> anyhow::Result<Self> {
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let stderr_path = launch.work_dir.join(format!("{name}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {} for the server's standard error", stderr_path.display()))?;
        let mut command = Command::new(&launch.binary);
        command.arg("serve").current_dir(&launch.work_dir);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LATCHKEY_") {
                command.env_remove(key);
            }
        }
        command
            .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("LATCHKEY_DATABASE_URL", &launch.database_url)
            .env("LATCHKEY_SECRET", &launch.secret)
            .env("LATCHKEY_RATE_LIMIT", "off")
            .env("LATCHKEY_LOG", "warn")
            .env("LATCHKEY_SMTP_URL", format!("smtp://127.0.0.1:{}", launch.smtp_port));
        if let Some(url) = &launch.public_url {
            command.env("LATCHKEY_PUBLIC_URL", url);
        }
        for (key, value) in &launch.extra_env {
            command.env(key, value);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting {}", launch.binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = Self { child, base_url, pid, stderr_path };
        server.wait_ready(client).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = format!("{}/readyz", self.base_url);
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait().context("checking on the server process")? {
                bail!("Latchkey exited during start-up ({status}); its standard error:\n{}", self.stderr_tail());
            }
            match client.get(&url).timeout(Duration::from_secs(2)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("GET /readyz answered {}", r.status()),
                Err(e) => last = format!("GET /readyz failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "Latchkey was not ready within {} s ({last}); its standard error:\n{}",
            READY_TIMEOUT.as_secs(),
            self.stderr_tail()
        )
    }

    /// The last 40 lines of the server's standard error.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        if tail.is_empty() { "(empty)".into() } else { tail }
    }

    /// Peak resident set size so far (`VmHWM`), in KiB; see [`peak_rss_kib`].
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid)
    }

    /// Resident set size now (`VmRSS`), in KiB; see [`rss_kib`].
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// Resets the peak resident set size, so that the next [`Latchkey::peak_rss_kib`] covers
    /// only what ran since; see [`reset_peak_rss`].
    pub fn reset_peak_rss(&self) -> bool {
        reset_peak_rss(self.pid)
    }

    /// Sends SIGTERM (graceful shutdown: requests in flight finish) and waits; kills the
    /// process if it has not exited within 15 s.
    ///
    /// # Errors
    /// When the process cannot be signalled or waited for.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait().context("checking on the server process")?.is_some() {
            return Ok(());
        }
        // std and tokio can only SIGKILL; `kill -TERM` asks for the graceful shutdown.
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if signalled && tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_ok() {
            return Ok(());
        }
        self.child.kill().await.context("killing the server process")?;
        Ok(())
    }
}

/// Peak resident set size of process `pid` (`VmHWM` in `/proc/<pid>/status`), in KiB; `None`
/// when it cannot be read (not Linux, or the process is gone).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set size of process `pid` now (`VmRSS` in `/proc/<pid>/status`), in KiB; `None`
/// when it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS:`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak resident set size of process `pid` to its current size (writing `5` to
/// `/proc/<pid>/clear_refs`, Linux 4.0 and later). Returns whether that worked; when it did
/// not, [`peak_rss_kib`] is the peak since the process started.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time counters, in clock ticks (`USER_HZ`, 100 per second on Linux): the whole machine's
/// over all cores (`/proc/stat`), split by who used it. Latchkey's processes (`pids`) are split
/// into their threads named `latchkey-argon2*` (the hashing pool) and the rest; the calling
/// process is the load generator (and the SMTP sink); processes named `postgres` are the
/// database server; every other process counts as another process. What no process was
/// charged with is interrupts (`irq` + `softirq`), idle (`idle` + `iowait`) and time the
/// hypervisor gave to other machines (`steal`).
///
/// Processes are kept one by one, so that [`CpuTicks::shares_until`] counts what each used in
/// between: one that exited in between is missing rather than taken off the others, and one
/// that started in between counts whole. Latchkey's threads' context switches are kept the
/// same way, thread by thread.
#[derive(Debug, Clone, Default)]
pub struct CpuTicks {
    /// When the counters were read (`None` only in hand-made readings).
    pub at: Option<Instant>,
    /// Cores: the `cpuN` lines of `/proc/stat`.
    pub cores: usize,
    /// All cores, every state (`user` to `steal`; `guest` is already inside `user`).
    pub machine: u64,
    /// Latchkey's hashing threads (user + system).
    pub hashing: u64,
    /// Latchkey's other threads (user + system), exited ones included: each process's total
    /// less its hashing threads.
    pub other: u64,
    /// Every process but Latchkey's: whose it is, and its user + system ticks.
    pub processes: HashMap<u32, (Owner, u64)>,
    /// Latchkey's threads by thread id: their context switches so far
    /// (`/proc/<pid>/task/<tid>/status`).
    pub switches: HashMap<u32, Switches>,
    /// Interrupt handling not charged to a process (`irq` + `softirq`).
    pub interrupts: u64,
    /// No work to run (`idle` + `iowait`).
    pub idle: u64,
    /// Time the hypervisor ran something else while this machine wanted to run (`steal`).
    pub steal: u64,
}

/// Whose a process other than Latchkey's is, in [`CpuTicks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This process: the load generator and the SMTP sink.
    LoadGenerator,
    /// PostgreSQL (processes named `postgres`).
    Database,
    /// Anything else, kernel threads included.
    Other,
}

/// A thread's context switches so far, from its `status` file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// Whether it is a hashing thread (named `latchkey-argon2*`).
    pub hashing: bool,
    /// Times it gave up its core to wait (`voluntary_ctxt_switches`).
    pub voluntary: u64,
    /// Times the scheduler took its core from it (`nonvoluntary_ctxt_switches`).
    pub preempted: u64,
}

/// The `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of a `status` file.
fn switches_of(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("voluntary_ctxt_switches"), field("nonvoluntary_ctxt_switches"))
}

/// How much `count` grew between two readings keyed by pid or tid, summed over the entries of
/// `after` that `kind` accepts. An entry missing from `before`, or there of another kind (a
/// reused id), is new and counts whole; one missing from `after` (exited) is left out.
fn grown_since<T>(
    before: &HashMap<u32, T>,
    after: &HashMap<u32, T>,
    kind: impl Fn(&T) -> bool,
    count: impl Fn(&T) -> u64,
) -> u64 {
    after
        .iter()
        .filter(|(_, a)| kind(a))
        .map(|(id, a)| count(a).saturating_sub(before.get(id).filter(|b| kind(b)).map_or(0, &count)))
        .sum()
}

/// `utime + stime` and the name of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
fn used_ticks(line: &str) -> Option<(&str, u64)> {
    // `pid (comm) state ...`: comm may hold spaces, the fields after it do not.
    let (head, rest) = line.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let used = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    Some((comm, used))
}

impl CpuTicks {
    /// Reads the counters now; `None` where `/proc` cannot be read (not Linux).
    pub fn now(pids: &[u32]) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let states: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()).collect();
        let state = |i: usize| states.get(i).copied().unwrap_or(0);
        let mut ticks = Self {
            at: Some(Instant::now()),
            cores: stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count(),
            machine: states.iter().take(8).sum(),
            interrupts: state(5) + state(6),
            idle: state(3) + state(4),
            steal: state(7),
            ..Self::default()
        };
        for pid in pids {
            // The hashing threads live as long as the process; other threads come and go
            // (tokio's blocking pool), and the process's own line keeps the ticks of those gone.
            let total = used_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.1;
            let mut hashing = 0;
            for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
                let Ok(line) = std::fs::read_to_string(task.path().join("stat")) else { continue };
                let Some((comm, used)) = used_ticks(&line) else { continue };
                let is_hashing = comm.starts_with("latchkey-argon2");
                if is_hashing {
                    hashing += used;
                }
                let tid = task.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
                let status = std::fs::read_to_string(task.path().join("status"));
                if let (Some(tid), Ok(status)) = (tid, status) {
                    let (voluntary, preempted) = switches_of(&status);
                    ticks.switches.insert(tid, Switches { hashing: is_hashing, voluntary, preempted });
                }
            }
            ticks.hashing += hashing;
            ticks.other += total.saturating_sub(hashing);
        }
        let own = std::process::id();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if pids.contains(&pid) {
                continue;
            }
            // A process may exit between the listing and the read: it is left out.
            let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((comm, used)) = used_ticks(&line) else { continue };
            let owner = if pid == own {
                Owner::LoadGenerator
            } else if comm == "postgres" {
                Owner::Database
            } else {
                Owner::Other
            };
            ticks.processes.insert(pid, (owner, used));
        }
        Some(ticks)
    }

    /// The shares of the machine's CPU time between `self` and a later reading `after`.
    pub fn shares_until(&self, after: &Self) -> Option<CpuShares> {
        let machine = after.machine.checked_sub(self.machine).filter(|&m| m > 0)? as f64;
        let share = |before: u64, after: u64| after.saturating_sub(before) as f64 / machine;
        let used_by = |owner: Owner| -> u64 {
            grown_since(&self.processes, &after.processes, |(o, _)| *o == owner, |(_, used)| *used)
        };
        let switched = |hashing: bool, count: fn(&Switches) -> u64| -> u64 {
            grown_since(&self.switches, &after.switches, |s| s.hashing == hashing, count)
        };
        Some(CpuShares {
            cores: after.cores,
            seconds: self.at.zip(after.at).map_or(0.0, |(b, a)| a.duration_since(b).as_secs_f64()),
            other_switches: switched(false, |s| s.voluntary) + switched(false, |s| s.preempted),
            hashing_preemptions: switched(true, |s| s.preempted),
            hashing: share(self.hashing, after.hashing),
            other: share(self.other, after.other),
            load_generator: share(0, used_by(Owner::LoadGenerator)),
            database: share(0, used_by(Owner::Database)),
            other_processes: share(0, used_by(Owner::Other)),
            interrupts: share(self.interrupts, after.interrupts),
            idle: share(self.idle, after.idle),
            steal: share(self.steal, after.steal),
            ceiling_hashing: None,
        })
    }
}

/// Where the machine's CPU time went during a workload, as fractions of all cores' time (see
/// [`CpuTicks`] for what each counts). They add up to about 1: the counters are read one
/// after another, and a process that exited during the workload is missing.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuShares {
    /// Cores of the machine.
    pub cores: usize,
    /// Seconds between the two readings.
    pub seconds: f64,
    /// Context switches of Latchkey's non-hashing threads in between (voluntary and
    /// preempted; a thread that exited in between is missing, so this is a lower bound).
    pub other_switches: u64,
    /// Times Latchkey's hashing threads were preempted in between.
    pub hashing_preemptions: u64,
    /// Latchkey's hashing threads.
    pub hashing: f64,
    /// Latchkey's other threads (HTTP, database connections, background tasks).
    pub other: f64,
    /// The load generator and SMTP sink (this process).
    pub load_generator: f64,
    /// PostgreSQL's processes.
    pub database: f64,
    /// Every other process on the machine, kernel threads included.
    pub other_processes: f64,
    /// Interrupts not charged to a process.
    pub interrupts: f64,
    /// Idle.
    pub idle: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
    /// The share the argon2id ceiling's own threads had, measured around the workload (the
    /// mean of before and after): the ceiling too shares the machine with other processes.
    pub ceiling_hashing: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_their_name_and_cpu_ticks() {
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 27 15 0 0 20 0 9 0 100 1000 10";
        assert_eq!(used_ticks(line), Some(("tokio (rt) worker", 42)));
        assert_eq!(used_ticks("no parenthesis"), None);
    }

    #[test]
    fn shares_divide_each_counter_by_the_machine() {
        let before = CpuTicks { machine: 1000, hashing: 100, idle: 50, ..CpuTicks::default() };
        let after = CpuTicks {
            machine: 1200,
            hashing: 280,
            idle: 60,
            processes: HashMap::from([(7, (Owner::LoadGenerator, 4))]),
            ..CpuTicks::default()
        };
        let shares = before.shares_until(&after).expect("time passed");
        assert!((shares.hashing - 0.9).abs() < 1e-9);
        assert!((shares.idle - 0.05).abs() < 1e-9);
        assert!((shares.load_generator - 0.02).abs() < 1e-9);
        assert!(before.shares_until(&before).is_none());
    }

    #[test]
    fn status_files_give_both_kinds_of_switches() {
        let status = "Name:\tlatchkey-argon2\nState:\tR (running)\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t345\n";
        assert_eq!(switches_of(status), (12, 345));
        assert_eq!(switches_of("Name:\tgone\n"), (0, 0));
    }

    #[test]
    fn switches_count_each_live_thread_since_the_first_reading() {
        let at = Instant::now();
        let thread = |hashing, voluntary, preempted| Switches { hashing, voluntary, preempted };
        let before = CpuTicks {
            at: Some(at),
            machine: 1000,
            switches: HashMap::from([(1, thread(true, 0, 100)), (2, thread(false, 50, 5)), (3, thread(false, 9, 9))]),
            ..CpuTicks::default()
        };
        // 1 was preempted 40 more times; 2 switched 20 + 1 more; 3 exited; 4 started.
        let after = CpuTicks {
            at: Some(at + Duration::from_secs(2)),
            machine: 1200,
            switches: HashMap::from([(1, thread(true, 0, 140)), (2, thread(false, 70, 6)), (4, thread(false, 7, 0))]),
            ..CpuTicks::default()
        };
        let shares = before.shares_until(&after).expect("time passed");
        assert_eq!((shares.other_switches, shares.hashing_preemptions), (28, 40));
        assert!((shares.seconds - 2.0).abs() < 1e-9);
    }

    #[test]
    fn processes_that_come_and_go_count_only_their_own_time() {
        let before = CpuTicks {
            machine: 1000,
            processes: HashMap::from([(1, (Owner::Other, 500)), (2, (Owner::Other, 10)), (3, (Owner::Database, 40))]),
            ..CpuTicks::default()
        };
        // 1 exited; 2 used 20 more; 3 ended and its pid went to a new process that used 6.
        let after = CpuTicks {
            machine: 1200,
            processes: HashMap::from([(2, (Owner::Other, 30)), (3, (Owner::Other, 6))]),
            ..CpuTicks::default()
        };
        let shares = before.shares_until(&after).expect("time passed");
        assert!((shares.other_processes - 0.13).abs() < 1e-9);
        assert!(shares.database.abs() < 1e-9);
    }
}
