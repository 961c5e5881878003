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
//!
//! [`run_open`] is the open-loop counterpart: requests *arrive* at a fixed rate whatever the
//! server does, each as its own task, and latency runs from each request's scheduled arrival.

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
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, SET_COOKIE};
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
    /// `POST /api/users/signin` as a random returning user (one argon2id verification): one of
    /// the [`Credentials::returning`] users signed in once before the run, or of all seeded
    /// users when there are none.
    SignIn,
    /// `POST /api/users/signup` with a fresh email (one argon2id hash and one mail).
    SignUp,
    /// `GET /` on the bare axum server of the HTTP ceiling.
    Bare,
    /// `GET /auth/user` with the `sAccessToken` cookie of an `auth` session; must answer the
    /// envelope with a user in `content`.
    AuthUser,
    /// `POST /auth/session/refresh` with the client's own `sRefreshToken` / `sIdRefreshToken`
    /// pair; keeps the rotated cookies.
    AuthRefresh,
    /// `POST /graphql` `query { me(token) { id email } }` with a `loginUser` token; must
    /// answer a non-null `me`.
    GraphqlMe,
    /// `POST /` `AWSCognitoIdentityProviderService.GetUser` with an `InitiateAuth` access
    /// token; must answer a `Username` and its attributes.
    CognitoGetUser,
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
            Op::AuthUser => "auth-user",
            Op::AuthRefresh => "auth-refresh",
            Op::GraphqlMe => "graphql-me",
            Op::CognitoGetUser => "cognito-get-user",
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

/// The three cookies of one `auth` session, as `/auth/signup` and `/auth/session/refresh` set
/// them (values only, without the `name=`).
#[derive(Debug, Clone, Default)]
pub struct AuthCookies {
    /// `sAccessToken`: the access JWT (`Path=/`).
    pub access: String,
    /// `sRefreshToken`: the opaque refresh token (`Path=/auth/session/refresh`).
    pub refresh: String,
    /// `sIdRefreshToken`: the value bound to the refresh token.
    pub id_refresh: String,
}

impl AuthCookies {
    /// The cookies of a response's `Set-Cookie` headers; `None` unless all three are set (and
    /// not cleared).
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Some(Self {
            access: set_cookie_value(headers, "sAccessToken")?,
            refresh: set_cookie_value(headers, "sRefreshToken")?,
            id_refresh: set_cookie_value(headers, "sIdRefreshToken")?,
        })
    }
}

/// Credentials the virtual clients draw on, prepared once per directory size.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Seeded users: `bench-1@example.com` to `bench-<users>@example.com`, password
    /// [`seed::PASSWORD`].
    pub users: u64,
    /// Seeded users `1..=returning` have signed in once already (so they have what a first
    /// sign-in stores, such as the SRP verifier); [`Op::SignIn`] picks among them.
    pub returning: u64,
    /// `Cookie` header values (`session=<JWT>`) of signed-in users; client `i` uses entry
    /// `i % len`.
    pub cookies: Vec<String>,
    /// One `v1` session per virtual client (client `i` owns entry `i`, so that its refresh
    /// token chain is its own); each client writes its latest tokens back when a run ends.
    pub v1: Vec<Mutex<V1Tokens>>,
    /// One `auth` session per virtual client (client `i` owns entry `i` for refresh; session
    /// checks read entry `i % len`); each client writes its latest cookies back when a run
    /// ends.
    pub auth: Vec<Mutex<AuthCookies>>,
    /// `graphql` session tokens (from `loginUser`); client `i` uses entry `i % len`.
    pub graphql: Vec<String>,
    /// `cognito` access tokens (from `InitiateAuth` `USER_PASSWORD_AUTH`); client `i` uses
    /// entry `i % len`.
    pub cognito: Vec<String>,
    /// Unique tag of this run, in sign-up emails and `auth` usernames.
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
    /// Open loop only: every refresh chain was busy with an earlier refresh (none was sent).
    NoFreeChain,
}

impl Failure {
    fn label(&self) -> String {
        match self {
            Failure::Status(s) => s.to_string(),
            Failure::NotSignedIn => "200 null".into(),
            Failure::BadBody => "bad body".into(),
            Failure::Transport => "transport".into(),
            Failure::NoFreeChain => "no free chain".into(),
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
    /// The refresh chains (`v1` and `auth` entry) this client owns, if any.
    chain: Option<usize>,
    rng: StdRng,
    cookie: String,
    v1: V1Tokens,
    auth: AuthCookies,
    graphql: String,
    cognito: String,
}

/// Entry `i % len` of `pool` (cloned), or `fallback` when the pool is empty (the request then
/// fails visibly).
fn pick_shared(pool: &[String], i: usize, fallback: &str) -> String {
    if pool.is_empty() { fallback.to_owned() } else { pool[i % pool.len()].clone() }
}

fn lock<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

impl ClientState {
    /// State of a client reading the shared session pools at `shared % len` and owning the
    /// refresh chains of entry `chain`, if given.
    fn new(shared: usize, chain: Option<usize>, creds: &Credentials, rng: StdRng) -> Self {
        // Without a pool, a placeholder that fails visibly.
        let cookie = pick_shared(&creds.cookies, shared, "session=none");
        let graphql = pick_shared(&creds.graphql, shared, "none");
        let cognito = pick_shared(&creds.cognito, shared, "none");
        let v1 = chain.and_then(|c| creds.v1.get(c)).map(lock).unwrap_or_default();
        // Session checks read any entry; refresh needs the owned one.
        let auth_slot = match chain {
            Some(c) if c < creds.auth.len() => Some(c),
            _ if creds.auth.is_empty() => None,
            _ => Some(shared % creds.auth.len()),
        };
        let auth = auth_slot.and_then(|c| creds.auth.get(c)).map(lock).unwrap_or_default();
        Self { chain, rng, cookie, v1, auth, graphql, cognito }
    }

    /// Hands the client's latest `v1` tokens and `auth` cookies back to the shared pools.
    fn put_back(self, creds: &Credentials) {
        let Some(c) = self.chain else { return };
        if let Some(slot) = creds.v1.get(c) {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.v1;
        }
        if let Some(slot) = creds.auth.get(c) {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.auth;
        }
    }
}

/// `GET /auth/user` and the refresh answer: the envelope with a user in `content`.
#[derive(Deserialize)]
struct AuthEnvelope {
    status: u16,
    content: Option<AuthContent>,
}

#[derive(Deserialize)]
struct AuthContent {
    id: String,
}

/// The `me` query's answer.
#[derive(Deserialize)]
struct GraphqlAnswer<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct MeData {
    me: Option<MeUser>,
}

#[derive(Deserialize)]
struct MeUser {
    id: String,
}

/// `GetUser`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CognitoUser {
    username: String,
    user_attributes: Vec<serde::de::IgnoredAny>,
}

/// The `me` query, with the token as a variable.
const ME_QUERY: &str = "query Me($token: String!) { me(token: $token) { id email } }";
/// The Cognito JSON protocol's content type.
const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// Checks an `auth` envelope: status 200 and a user id in `content`.
fn check_auth_envelope(body: &[u8]) -> Result<(), Failure> {
    match serde_json::from_slice::<AuthEnvelope>(body) {
        Ok(AuthEnvelope { status: 200, content: Some(c) }) if !c.id.is_empty() => Ok(()),
        _ => Err(Failure::BadBody),
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
            let among = if creds.returning > 0 { creds.returning } else { creds.users };
            let n = st.rng.gen_range(1..=among.max(1));
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
        Op::AuthUser => {
            let cookie = format!("sAccessToken={}", st.auth.access);
            let r = client.get(target.url("/auth/user")).header(COOKIE, cookie).send().await?;
            check_auth_envelope(&check_status(r).await?)?;
        }
        Op::AuthRefresh => {
            // No Origin header: a non-browser client passes the route's cross-site guard.
            let cookie = format!("sRefreshToken={}; sIdRefreshToken={}", st.auth.refresh, st.auth.id_refresh);
            let r = client.post(target.url("/auth/session/refresh")).header(COOKIE, cookie).send().await?;
            let rotated = AuthCookies::from_headers(r.headers());
            check_auth_envelope(&check_status(r).await?)?;
            st.auth = rotated.ok_or(Failure::BadBody)?;
        }
        Op::GraphqlMe => {
            let body = json!({ "query": ME_QUERY, "variables": { "token": st.graphql } });
            let r = client.post(target.url("/graphql")).json(&body).send().await?;
            let bytes = check_status(r).await?;
            let answer = serde_json::from_slice::<GraphqlAnswer<MeData>>(&bytes).map_err(|_| Failure::BadBody)?;
            match answer.data.ok_or(Failure::BadBody)?.me {
                Some(me) if !me.id.is_empty() => {}
                Some(_) => return Err(Failure::BadBody),
                None => return Err(Failure::NotSignedIn),
            }
        }
        Op::CognitoGetUser => {
            let body = serde_json::to_vec(&json!({ "AccessToken": st.cognito })).map_err(|_| Failure::BadBody)?;
            let r = client
                .post(target.url("/"))
                .header(CONTENT_TYPE, AMZ_JSON)
                .header("x-amz-target", "AWSCognitoIdentityProviderService.GetUser")
                .body(body)
                .send()
                .await?;
            let bytes = check_status(r).await?;
            let user = serde_json::from_slice::<CognitoUser>(&bytes).map_err(|_| Failure::BadBody)?;
            if user.username.is_empty() || user.user_attributes.is_empty() {
                return Err(Failure::BadBody);
            }
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
        pick(&self.mix, rng)
    }
}

/// The index in `mix` of a randomly chosen operation, by weight.
fn pick(mix: &[(Op, u32)], rng: &mut StdRng) -> usize {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (i, (_, w)) in mix.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    0
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
            let mut st = ClientState::new(index, Some(index), &creds, StdRng::from_entropy());
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

/// An open-loop run: requests arrive at a fixed rate, whatever the server does.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    /// Operations and their relative weights; each arrival draws one.
    pub mix: Vec<(Op, u32)>,
    /// Arrivals per second.
    pub rate: f64,
    /// Most requests in flight at once; an arrival finding this many is dropped (not sent) and
    /// counted in [`OpenMeasurement::dropped`].
    pub max_in_flight: usize,
    /// Warm-up before measuring (arrivals sent, results discarded).
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
}

/// The outcome of an open-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenMeasurement {
    /// Arrivals per second asked for.
    pub rate: f64,
    /// The in-flight cap.
    pub max_in_flight: usize,
    /// Length of the measurement window, in seconds.
    pub seconds: f64,
    /// Arrivals scheduled inside the window (sent, dropped or not).
    pub scheduled: u64,
    /// Arrivals of the window dropped because the in-flight cap was reached.
    pub dropped: u64,
    /// Most requests in flight at once, warm-up included.
    pub peak_in_flight: usize,
    /// The window's arrivals that succeeded (each is waited for, even past the window's end).
    pub ok: u64,
    /// The window's arrivals that failed.
    pub errors: u64,
    /// Failed requests by kind, prefixed with the operation (`"refresh 404"`); `"no free
    /// chain"` is a refresh not sent because every refresh chain was in use.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests per second of window (the achieved rate).
    pub rps: f64,
    /// Latency of successful requests from their *scheduled* arrival (queueing in the client
    /// and up to about 1 ms of timer granularity included), so a stalled server cannot hide
    /// behind requests it delayed (no coordinated omission).
    pub latency_ms: LatencyMs,
    /// Per operation.
    pub by_op: Vec<OpMeasurement>,
}

/// What one open-loop arrival reports: its mix entry, its outcome, its latency in µs from the
/// scheduled arrival.
type Arrival = (usize, Result<(), Failure>, u64);

/// Runs `plan` open-loop against `target`: arrival `k` is scheduled at `k / rate` seconds
/// after the start and spawned as its own task then (late only when the scheduler itself is
/// starved), unless `max_in_flight` requests are outstanding. Arrivals scheduled inside the
/// measurement window are counted, each when it completes (the run waits for them).
///
/// A refresh arrival takes a free `v1` refresh chain for the time of its request (a chain is
/// never used by two requests at once); with none free it fails as `"no free chain"`.
///
/// # Errors
/// When `rate` is not positive, or the harness itself fails.
pub async fn run_open(
    target: &Arc<Target>,
    creds: &Arc<Credentials>,
    plan: &OpenPlan,
) -> anyhow::Result<OpenMeasurement> {
    anyhow::ensure!(plan.rate.is_finite() && plan.rate > 0.0, "the arrival rate must be above zero");
    let start = tokio::time::Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut peak_in_flight = 0;
    let chains = Arc::new(Mutex::new((0..creds.v1.len()).collect::<Vec<usize>>()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arrival>();
    let mix = plan.mix.clone();
    let collector = tokio::spawn(async move {
        let mut per_op = mix.iter().map(|_| new_histogram()).collect::<anyhow::Result<Vec<_>>>()?;
        let mut errors = BTreeMap::<String, u64>::new();
        while let Some((i, result, us)) = rx.recv().await {
            match result {
                Ok(()) => per_op[i].saturating_record(us.clamp(1, MAX_LATENCY_US)),
                Err(f) => *errors.entry(format!("{} {}", mix[i].0.name(), f.label())).or_default() += 1,
            }
        }
        anyhow::Ok((per_op, errors))
    });
    let mut rng = StdRng::from_entropy();
    let (mut scheduled, mut dropped) = (0u64, 0u64);
    for k in 0u64.. {
        let at = start + Duration::from_secs_f64(k as f64 / plan.rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let measured = at >= measure_from;
        scheduled += u64::from(measured);
        let i = pick(&plan.mix, &mut rng);
        let now = in_flight.load(Ordering::Relaxed);
        peak_in_flight = peak_in_flight.max(now);
        if now >= plan.max_in_flight {
            dropped += u64::from(measured);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let op = plan.mix[i].0;
        let seed: u64 = rng.r#gen();
        let (target, creds, chains, in_flight) = (target.clone(), creds.clone(), chains.clone(), in_flight.clone());
        let tx = measured.then(|| tx.clone());
        tokio::spawn(async move {
            let result = arrive(&target, &creds, &chains, op, k, seed).await;
            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(MAX_LATENCY_US);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(tx) = tx {
                let _ = tx.send((i, result, us));
            }
        });
    }
    drop(tx);
    let (per_op, errors_by_kind) = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), collector)
        .await
        .context("the open-loop requests did not finish")?
        .context("the open-loop collector failed")??;
    let mut histogram = new_histogram()?;
    for h in &per_op {
        histogram.add(h).context("merging latency histograms")?;
    }
    let seconds = plan.duration.as_secs_f64();
    Ok(OpenMeasurement {
        rate: plan.rate,
        max_in_flight: plan.max_in_flight,
        seconds,
        scheduled,
        dropped,
        peak_in_flight,
        ok: histogram.len(),
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        rps: histogram.len() as f64 / seconds,
        latency_ms: LatencyMs::of(&histogram),
        by_op: plan
            .mix
            .iter()
            .zip(&per_op)
            .map(|((op, _), h)| OpMeasurement {
                op: *op,
                ok: h.len(),
                rps: h.len() as f64 / seconds,
                latency_ms: LatencyMs::of(h),
            })
            .collect(),
    })
}

/// One open-loop arrival (number `k`): a refresh borrows a free chain for its request; anything
/// else reads the shared pools at entry `k`.
async fn arrive(
    target: &Target,
    creds: &Credentials,
    chains: &Mutex<Vec<usize>>,
    op: Op,
    k: u64,
    seed: u64,
) -> Result<(), Failure> {
    let shared = usize::try_from(k).unwrap_or_default();
    let rng = StdRng::seed_from_u64(seed);
    let refresh = matches!(op, Op::Refresh | Op::AuthRefresh);
    if !refresh {
        let mut st = ClientState::new(shared, None, creds, rng);
        return perform(target, creds, op, &mut st).await;
    }
    let chain = chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop().ok_or(Failure::NoFreeChain)?;
    let mut st = ClientState::new(shared, Some(chain), creds, rng);
    let result = perform(target, creds, op, &mut st).await;
    st.put_back(creds);
    chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(chain);
    result
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a latency histogram")
}

/// Signs seeded user `n` in through `POST /api/users/signin` and returns its `session`
/// cookie, or the status and the start of the body when it fails.
async fn users_sign_in(target: &Target, n: u64) -> Result<String, String> {
    let body = json!({ "email": seed::email(n), "password": seed::PASSWORD });
    let r = target.client.post(target.url("/api/users/signin")).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let cookie = r.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(session_cookie);
    let text = r.text().await.unwrap_or_default();
    match cookie {
        Some(c) if status.is_success() => Ok(c),
        _ => Err(format!("{status} {}", truncate(&text, 200))),
    }
}

/// How many sessions of each kind [`prepare`] signs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pools {
    /// `users` sessions (`session` cookies), through `POST /api/users/signin`.
    pub cookies: usize,
    /// `v1` sessions (one refresh chain each), through `POST /v1/sessions`.
    pub v1: usize,
    /// `auth` sessions (one refresh chain each), through `POST /auth/signup` of new
    /// username-only users (seeded users have no username).
    pub auth: usize,
    /// `graphql` tokens, through the `loginUser` mutation.
    pub graphql: usize,
    /// `cognito` access tokens, through `InitiateAuth` `USER_PASSWORD_AUTH`.
    pub cognito: usize,
    /// Seeded users `1..=returning` signed in once through `POST /api/users/signin`, so that
    /// the sign-in workloads measure returning users: a seeded user's first sign-in also
    /// computes and stores the SRP verifier that sign-up would have stored.
    pub returning: usize,
}

/// Signs in users for the session-check and refresh workloads, `parallel` requests at a time:
/// `pools.cookies` random seeded users through `POST /api/users/signin` (keeping each
/// `session` cookie), `pools.v1` through `POST /v1/sessions` (keeping each token set),
/// `pools.graphql` through `loginUser`, `pools.cognito` through `InitiateAuth`, and
/// `pools.auth` new users through `POST /auth/signup` (keeping the three cookies), and seeded
/// users `1..=pools.returning` once through `POST /api/users/signin`. Each costs the server one
/// argon2id hash.
///
/// Failures do not stop anything: they leave fewer (or no) credentials, and the returned notes
/// say what failed, e.g. `"v1 sessions: 64 of 64 sign-ins failed (first: 404 ...)"`.
///
/// # Errors
/// Never for request failures; only when the HTTP client itself cannot be used.
pub async fn prepare(
    target: &Target,
    users: u64,
    pools: Pools,
    parallel: usize,
) -> anyhow::Result<(Credentials, Vec<String>)> {
    let mut notes = Vec::new();
    let pick = |_| rand::thread_rng().gen_range(1..=users.max(1));
    let parallel = parallel.max(1);
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let cookie_results: Vec<Result<String, String>> = futures::stream::iter((0..pools.cookies).map(pick))
        .map(|n| users_sign_in(target, n))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let returning_results: Vec<Result<String, String>> = futures::stream::iter(1..=pools.returning as u64)
        .map(|n| users_sign_in(target, n))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let (signed_in, failures) = split(returning_results);
    if let Some(note) = failure_note("returning users", pools.returning, &failures) {
        notes.push(note);
    }
    // Only a complete set is used: otherwise sign-ins pick among every seeded user.
    let returning = if signed_in.len() == pools.returning { pools.returning as u64 } else { 0 };
    let (cookie_list, failures) = split(cookie_results);
    if let Some(note) = failure_note("users sessions", pools.cookies, &failures) {
        notes.push(note);
    }

    let v1_results: Vec<Result<V1Tokens, String>> = futures::stream::iter((0..pools.v1).map(pick))
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
        .buffer_unordered(parallel)
        .collect()
        .await;
    let (v1_list, failures) = split(v1_results);
    if let Some(note) = failure_note("v1 sessions", pools.v1, &failures) {
        notes.push(note);
    }
    // Clients without a v1 session present an empty token and fail visibly.
    let mut v1: Vec<Mutex<V1Tokens>> = v1_list.into_iter().map(Mutex::new).collect();
    v1.resize_with(pools.v1, || Mutex::new(V1Tokens::default()));

    let tag = &run_tag;
    let auth_results: Vec<Result<AuthCookies, String>> = futures::stream::iter(0..pools.auth)
        .map(|i| async move {
            let body = json!({
                "username": format!("bench-auth-{tag}-{i}"),
                "password": seed::PASSWORD,
                "employee_id": format!("bench-{tag}-{i}"),
            });
            let r =
                target.client.post(target.url("/auth/signup")).json(&body).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let cookies = AuthCookies::from_headers(r.headers());
            let text = r.text().await.unwrap_or_default();
            match cookies {
                Some(c) if status.is_success() => Ok(c),
                _ => Err(format!("{status} {}", truncate(&text, 200))),
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let (auth_list, failures) = split(auth_results);
    if let Some(note) = failure_note("auth sessions (sign-ups)", pools.auth, &failures) {
        notes.push(note);
    }
    let mut auth: Vec<Mutex<AuthCookies>> = auth_list.into_iter().map(Mutex::new).collect();
    auth.resize_with(pools.auth, || Mutex::new(AuthCookies::default()));

    let graphql_results: Vec<Result<String, String>> = futures::stream::iter((0..pools.graphql).map(pick))
        .map(|n| async move {
            let body = json!({
                "query": "mutation Login($email: String!, $password: String!) { loginUser(email: $email, password: $password) { exitcode msg token } }",
                "variables": { "email": seed::email(n), "password": seed::PASSWORD },
            });
            let r = target.client.post(target.url("/graphql")).json(&body).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let login = &value["data"]["loginUser"];
            match (login["exitcode"].as_i64(), login["token"].as_str()) {
                (Some(0), Some(token)) if status.is_success() && !token.is_empty() => Ok(token.to_owned()),
                _ => Err(format!("{status} {}", truncate(&text, 200))),
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let (graphql, failures) = split(graphql_results);
    if let Some(note) = failure_note("graphql sessions", pools.graphql, &failures) {
        notes.push(note);
    }

    let cognito_results: Vec<Result<String, String>> = futures::stream::iter((0..pools.cognito).map(pick))
        .map(|n| async move {
            let body = json!({
                "AuthFlow": "USER_PASSWORD_AUTH",
                "ClientId": "local",
                "AuthParameters": { "USERNAME": seed::email(n), "PASSWORD": seed::PASSWORD },
            });
            let r = target
                .client
                .post(target.url("/"))
                .header(CONTENT_TYPE, AMZ_JSON)
                .header("x-amz-target", "AWSCognitoIdentityProviderService.InitiateAuth")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            match value["AuthenticationResult"]["AccessToken"].as_str() {
                Some(token) if status.is_success() && !token.is_empty() => Ok(token.to_owned()),
                _ => Err(format!("{status} {}", truncate(&text, 200))),
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let (cognito, failures) = split(cognito_results);
    if let Some(note) = failure_note("cognito sessions", pools.cognito, &failures) {
        notes.push(note);
    }

    let creds = Credentials {
        users,
        returning,
        cookies: cookie_list,
        v1,
        auth,
        graphql,
        cognito,
        run_tag,
        signups: AtomicU64::new(0),
    };
    Ok((creds, notes))
}

/// The value of cookie `name` among a response's `Set-Cookie` headers; `None` when it is not
/// set, or set empty (cleared).
fn set_cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let (n, value) = v.split(';').next()?.trim().split_once('=')?;
        (n == name && !value.is_empty()).then(|| value.to_owned())
    })
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
