//! The load loop: a fixed number of virtual clients, each sending one request at a time for a
//! warm-up and then a fixed measurement window, with latencies in HDR histograms.
//!
//! A workload is a weighted choice of [`Op`]s. Every virtual client owns its state: the session
//! cookie it presents, and its own `v1` session whose latest refresh token it keeps (refresh
//! rotates the token on every use, and presenting an old one after the reuse window revokes
//! the session). A failed request (non-2xx status, transport error, or `currentuser` answering
//! `null`) is counted by kind and never stops the run.
//!
//! Accounting: a request counts if it *completes* inside the measurement window. Throughput is
//! successful requests per second of window; latency percentiles are over successful requests
//! only (a fast 404 must not flatter them); errors are counted separately.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::seed;

/// Longest latency the histograms hold, in µs (60 s; longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Per-request timeout of the client, above Latchkey's own 30 s request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// The servers under load, and one HTTP client shared by every virtual client.
#[derive(Debug)]
pub struct Target {
    client: reqwest::Client,
    bases: Vec<String>,
    next: AtomicUsize,
}

impl Target {
    /// A target spreading requests round-robin over `bases` (`http://host:port`, no trailing
    /// slash), with a connection pool sized for `concurrency` clients.
    ///
    /// # Errors
    /// When the HTTP client cannot be built, or `bases` is empty.
    pub fn new(bases: Vec<String>, concurrency: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(!bases.is_empty(), "no server to send requests to");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1) * 2)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client, bases, next: AtomicUsize::new(0) })
    }

    /// `path` on the next server in round-robin order.
    fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        format!("{}{path}", self.bases[i])
    }
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `GET /api/users/currentuser` with the client's `session` cookie; must answer a user.
    CurrentUser,
    /// `GET /v1/me` with the client's bearer access token.
    V1Me,
    /// `POST /v1/token/refresh` with the client's latest refresh token; keeps the successor.
    Refresh,
    /// `POST /api/users/signin` as a random seeded user (one argon2id verification).
    SignIn,
    /// `POST /api/users/signup` with a fresh email (one argon2id hash and one mail).
    SignUp,
    /// `GET /` on the bare axum server of the HTTP ceiling.
    Bare,
}

impl Op {
    /// A short name for tables and error breakdowns.
    pub fn name(self) -> &'static str {
        match self {
            Op::CurrentUser => "currentuser",
            Op::V1Me => "v1-me",
            Op::Refresh => "refresh",
            Op::SignIn => "signin",
            Op::SignUp => "signup",
            Op::Bare => "bare",
        }
    }
}

/// Tokens of one `v1` session, as `/v1/sessions` and `/v1/token/refresh` return them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct V1Tokens {
    /// The bearer access token.
    pub access_token: String,
    /// The latest refresh token.
    pub refresh_token: String,
}

/// Credentials the virtual clients draw on, prepared once per directory size.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Seeded users: `bench-1@example.com` to `bench-<users>@example.com`, password
    /// [`seed::PASSWORD`].
    pub users: u64,
    /// `Cookie` header values (`session=<JWT>`) of signed-in users; client `i` uses entry
    /// `i % len`.
    pub cookies: Vec<String>,
    /// One `v1` session per virtual client (client `i` owns entry `i`, so that its refresh
    /// token chain is its own); each client writes its latest tokens back when a run ends.
    pub v1: Vec<Mutex<V1Tokens>>,
    /// Unique tag of this run, in sign-up emails.
    pub run_tag: String,
    signups: AtomicU64,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// A non-2xx status.
    Status(u16),
    /// `currentuser` answered 200 `null`: the session was not accepted.
    NotSignedIn,
    /// A 2xx whose body lacked what the contract promises.
    BadBody,
    /// Connecting, sending or reading failed (or timed out).
    Transport,
}

impl Failure {
    fn label(&self) -> String {
        match self {
            Failure::Status(s) => s.to_string(),
            Failure::NotSignedIn => "200 null".into(),
            Failure::BadBody => "bad body".into(),
            Failure::Transport => "transport".into(),
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(_: reqwest::Error) -> Self {
        Failure::Transport
    }
}

/// A virtual client's state.
struct ClientState {
    index: usize,
    rng: StdRng,
    cookie: String,
    v1: V1Tokens,
}

impl ClientState {
    fn new(index: usize, creds: &Credentials) -> Self {
        let cookie = if creds.cookies.is_empty() {
            // Not signed in: every check then fails visibly.
            "session=none".to_owned()
        } else {
            creds.cookies[index % creds.cookies.len()].clone()
        };
        let v1 = creds
            .v1
            .get(index)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .unwrap_or_default();
        Self { index, rng: StdRng::from_entropy(), cookie, v1 }
    }

    /// Hands the client's latest `v1` tokens back to the shared pool.
    fn put_back(self, creds: &Credentials) {
        if let Some(slot) = creds.v1.get(self.index) {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.v1;
        }
    }
}

/// Sends one request of kind `op` and checks its answer.
async fn perform(target: &Target, creds: &Credentials, op: Op, st: &mut ClientState) -> Result<(), Failure> {
    let client = &target.client;
    match op {
        Op::CurrentUser => {
            let r = client.get(target.url("/api/users/currentuser")).header(COOKIE, &st.cookie).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            if !status.is_success() {
                return Err(Failure::Status(status.as_u16()));
            }
            if body.trim_ascii() == b"null" {
                return Err(Failure::NotSignedIn);
            }
        }
        Op::V1Me => {
            let bearer = format!("Bearer {}", st.v1.access_token);
            let r = client.get(target.url("/v1/me")).header(AUTHORIZATION, bearer).send().await?;
            check_status(r).await?;
        }
        Op::Refresh => {
            let body = json!({ "refresh_token": st.v1.refresh_token });
            let r = client.post(target.url("/v1/token/refresh")).json(&body).send().await?;
            let bytes = check_status(r).await?;
            st.v1 = serde_json::from_slice::<V1Tokens>(&bytes).map_err(|_| Failure::BadBody)?;
        }
        Op::SignIn => {
            let n = st.rng.gen_range(1..=creds.users.max(1));
            let body = json!({ "email": seed::email(n), "password": seed::PASSWORD });
            let r = client.post(target.url("/api/users/signin")).json(&body).send().await?;
            check_status(r).await?;
        }
        Op::SignUp => {
            let seq = creds.signups.fetch_add(1, Ordering::Relaxed);
            let body = json!({
                "firstName": "Bench",
                "lastName": format!("Signup {seq}"),
                "email": format!("bench-signup-{}-{seq}@example.com", creds.run_tag),
                "contactNumber": "+1 555 0100",
                "address": "1 Benchmark Street, Testville",
                "password": seed::PASSWORD,
            });
            let r = client.post(target.url("/api/users/signup")).json(&body).send().await?;
            check_status(r).await?;
        }
        Op::Bare => {
            let r = client.get(target.url("/")).send().await?;
            check_status(r).await?;
        }
    }
    Ok(())
}

/// Reads the whole body (so the connection can be reused) and fails on a non-2xx status.
async fn check_status(r: reqwest::Response) -> Result<Bytes, Failure> {
    let status = r.status();
    let body = r.bytes().await?;
    if status.is_success() { Ok(body) } else { Err(Failure::Status(status.as_u16())) }
}

/// What to run: a weighted mix of operations at a fixed concurrency.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Operations and their relative weights.
    pub mix: Vec<(Op, u32)>,
    /// Virtual clients, each with one request in flight at a time.
    pub concurrency: usize,
    /// Warm-up before measuring (requests run, results discarded).
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
}

impl Plan {
    /// The index in `mix` of a randomly chosen operation, by weight.
    fn pick(&self, rng: &mut StdRng) -> usize {
        let total: u32 = self.mix.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0..total.max(1));
        for (i, (_, w)) in self.mix.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyMs {
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Slowest request, ms.
    pub max: f64,
    /// Mean, ms.
    pub mean: f64,
}

/// The outcome of one workload run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Virtual clients.
    pub concurrency: usize,
    /// Length of the measurement window, in seconds.
    pub seconds: f64,
    /// Successful requests completed in the window.
    pub ok: u64,
    /// Failed requests completed in the window.
    pub errors: u64,
    /// Failed requests by kind: the status code (`"404"`), `"200 null"` (a session check not
    /// accepted), `"bad body"` or `"transport"`; prefixed with the operation (`"refresh 404"`)
    /// when the workload mixes several.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests per second of window.
    pub rps: f64,
    /// Latency of successful requests; all zero when none succeeded.
    pub latency_ms: LatencyMs,
    /// Per operation, when the workload mixes several (empty otherwise).
    pub by_op: Vec<OpMeasurement>,
}

/// One operation's share of a mixed workload.
#[derive(Debug, Clone, Serialize)]
pub struct OpMeasurement {
    /// The operation.
    pub op: Op,
    /// Its successful requests completed in the window.
    pub ok: u64,
    /// Its successful requests per second of window.
    pub rps: f64,
    /// Latency of its successful requests.
    pub latency_ms: LatencyMs,
}

impl LatencyMs {
    /// Summarises a histogram of latencies in µs; all zero when it is empty.
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One virtual client's counts: a latency histogram per entry of the plan's mix.
struct ClientTally {
    histograms: Vec<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

/// Runs `plan` against `target` and measures it.
///
/// # Errors
/// Only for failures of the harness itself (a client task panicked); request failures are
/// counted in the result.
pub async fn run(target: &Arc<Target>, creds: &Arc<Credentials>, plan: &Plan) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mixed = plan.mix.len() > 1;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..plan.concurrency {
        let (target, creds, plan) = (target.clone(), creds.clone(), plan.clone());
        tasks.spawn(async move {
            let mut st = ClientState::new(index, &creds);
            let histograms = plan.mix.iter().map(|_| new_histogram()).collect::<anyhow::Result<_>>()?;
            let mut tally = ClientTally { histograms, errors: BTreeMap::new() };
            while Instant::now() < end {
                let i = plan.pick(&mut st.rng);
                let op = plan.mix[i].0;
                let sent = Instant::now();
                let result = perform(&target, &creds, op, &mut st).await;
                let done = Instant::now();
                if done < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        let us = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(MAX_LATENCY_US);
                        tally.histograms[i].saturating_record(us.clamp(1, MAX_LATENCY_US));
                    }
                    Err(f) => {
                        let key = if mixed { format!("{} {}", op.name(), f.label()) } else { f.label() };
                        *tally.errors.entry(key).or_default() += 1;
                    }
                }
            }
            st.put_back(&creds);
            anyhow::Ok(tally)
        });
    }
    let mut per_op = plan.mix.iter().map(|_| new_histogram()).collect::<anyhow::Result<Vec<_>>>()?;
    let mut errors_by_kind = BTreeMap::<String, u64>::new();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.context("a virtual client failed")??;
        for (all, mine) in per_op.iter_mut().zip(&tally.histograms) {
            all.add(mine).context("merging latency histograms")?;
        }
        for (k, v) in tally.errors {
            *errors_by_kind.entry(k).or_default() += v;
        }
    }
    let mut histogram = new_histogram()?;
    for h in &per_op {
        histogram.add(h).context("merging latency histograms")?;
    }
    let seconds = plan.duration.as_secs_f64();
    let by_op = if mixed {
        plan.mix
            .iter()
            .zip(&per_op)
            .map(|((op, _), h)| OpMeasurement {
                op: *op,
                ok: h.len(),
                rps: h.len() as f64 / seconds,
                latency_ms: LatencyMs::of(h),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Measurement {
        concurrency: plan.concurrency,
        seconds,
        ok: histogram.len(),
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        rps: histogram.len() as f64 / seconds,
        latency_ms: LatencyMs::of(&histogram),
        by_op,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a latency histogram")
}

/// Signs in users for the session-check and `v1` workloads: `cookies` random seeded users
/// through `POST /api/users/signin` (keeping each `session` cookie) and `v1_sessions` through
/// `POST /v1/sessions` (keeping each token set), `parallel` at a time. Each sign-in costs the
/// server one argon2id verification.
///
/// Failures do not stop anything: they leave fewer (or no) credentials, and the returned notes
/// say what failed, e.g. `"v1 sessions: 64 of 64 sign-ins failed (first: 404 ...)"`.
///
/// # Errors
/// Never for request failures; only when the HTTP client itself cannot be used.
pub async fn prepare(
    target: &Target,
    users: u64,
    cookies: usize,
    v1_sessions: usize,
    parallel: usize,
) -> anyhow::Result<(Credentials, Vec<String>)> {
    let mut notes = Vec::new();
    let pick = |_| rand::thread_rng().gen_range(1..=users.max(1));

    let cookie_results: Vec<Result<String, String>> = futures::stream::iter((0..cookies).map(pick))
        .map(|n| async move {
            let body = json!({ "email": seed::email(n), "password": seed::PASSWORD });
            let r = target
                .client
                .post(target.url("/api/users/signin"))
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let cookie =
                r.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(session_cookie);
            let text = r.text().await.unwrap_or_default();
            match cookie {
                Some(c) if status.is_success() => Ok(c),
                _ => Err(format!("{status} {}", truncate(&text, 200))),
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let (cookie_list, failures) = split(cookie_results);
    if let Some(note) = failure_note("users sessions", cookies, &failures) {
        notes.push(note);
    }

    let v1_results: Vec<Result<V1Tokens, String>> = futures::stream::iter((0..v1_sessions).map(pick))
        .map(|n| async move {
            let body = json!({ "email": seed::email(n), "password": seed::PASSWORD });
            let r =
                target.client.post(target.url("/v1/sessions")).json(&body).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            match serde_json::from_str::<V1Tokens>(&text) {
                Ok(tokens) if status.is_success() => Ok(tokens),
                _ => Err(format!("{status} {}", truncate(&text, 200))),
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let (v1_list, failures) = split(v1_results);
    if let Some(note) = failure_note("v1 sessions", v1_sessions, &failures) {
        notes.push(note);
    }
    // Clients without a v1 session present an empty token and fail visibly.
    let mut v1: Vec<Mutex<V1Tokens>> = v1_list.into_iter().map(Mutex::new).collect();
    v1.resize_with(v1_sessions, || Mutex::new(V1Tokens::default()));

    let creds = Credentials {
        users,
        cookies: cookie_list,
        v1,
        run_tag: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        signups: AtomicU64::new(0),
    };
    Ok((creds, notes))
}

/// `session=<JWT>` from a `Set-Cookie` value for the `session` cookie.
fn session_cookie(set_cookie: &str) -> Option<String> {
    let pair = set_cookie.split(';').next()?.trim();
    let value = pair.strip_prefix("session=")?;
    (!value.is_empty()).then(|| pair.to_owned())
}

fn split<T>(results: Vec<Result<T, String>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}

fn failure_note(what: &str, asked: usize, failures: &[String]) -> Option<String> {
    let first = failures.first()?;
    Some(format!("{what}: {} of {asked} sign-ins failed (first: {first})", failures.len()))
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_read_from_set_cookie() {
        assert_eq!(
            session_cookie("session=abc.def; Path=/; HttpOnly; SameSite=Lax").as_deref(),
            Some("session=abc.def")
        );
        assert_eq!(session_cookie("session=; Max-Age=0"), None);
        assert_eq!(session_cookie("other=1"), None);
    }

    #[test]
    fn plans_pick_by_weight() {
        let plan = Plan {
            mix: vec![(Op::CurrentUser, 90), (Op::Refresh, 8), (Op::SignIn, 2)],
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(plan.mix[plan.pick(&mut rng)].0.name()).or_insert(0u32) += 1;
        }
        let share = |name| f64::from(counts.get(name).copied().unwrap_or(0)) / 100_000.0;
        assert!((share("currentuser") - 0.90).abs() < 0.01, "{counts:?}");
        assert!((share("refresh") - 0.08).abs() < 0.01, "{counts:?}");
        assert!((share("signin") - 0.02).abs() < 0.005, "{counts:?}");
    }
}
