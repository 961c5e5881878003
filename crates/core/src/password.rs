//! Password hashing with argon2id on a fixed pool of hashing threads.
//!
//! Each hash needs `memory_kib` KiB (19 MiB by default) for tens of milliseconds of CPU. Hashes
//! run on one dedicated thread per core, each reusing one memory buffer for every hash it
//! computes: a storm of sign-ins queues here (FIFO) instead of exhausting memory or starving
//! the async threads that serve session checks, and the process holds `cores × memory_kib`
//! KiB for hashing, allocated once. (Letting argon2 allocate per hash on tokio's blocking
//! threads made the allocator keep every freed 19 MiB buffer in per-thread arenas: hundreds of
//! MiB after a few dozen sign-ins.) The hashing threads run at the lowest ordinary priority
//! (nice 19): they take every core the rest of the server leaves idle, so sign-ins alone still
//! run at the hash rate, but a sign-in storm barely delays the cheap requests (session checks,
//! refreshes) that share those cores. Unknown logins are verified against a dummy hash so that
//! they cost the same as a wrong password (API.md, "Timing").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::identity::{NewPassword, PresentedPassword};
use crate::secret::constant_time_eq;

mod imported;

pub use imported::{
    HashFormat, HashRejection, MAX_ARGON2_ITERATIONS, MAX_ARGON2_MEMORY_KIB, MAX_ARGON2_PARALLELISM, MAX_BCRYPT_COST,
    MAX_PBKDF2_ITERATIONS, MAX_SCRYPT_MEMORY, MAX_SCRYPT_N, MAX_SCRYPT_P, check_importable,
};

/// Argon2id cost parameters (RFC 9106 section 3.1 names: m, t, p).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost `m` in KiB (default 19456 = 19 MiB, the OWASP minimum for argon2id).
    pub memory_kib: u32,
    /// Time cost `t`: passes over memory (default 2).
    pub iterations: u32,
    /// Parallelism `p`: lanes (default 1).
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

impl HashParams {
    /// The least memory per hash, in KiB, that [`HashParams::check_strength`] accepts: 7 MiB,
    /// the smallest of the OWASP Password Storage Cheat Sheet's argon2id configurations.
    pub const MIN_MEMORY_KIB: u32 = 7_168;

    /// The least memory × passes, in KiB, that [`HashParams::check_strength`] accepts: that of
    /// OWASP's weakest listed configuration (m = 7168 KiB, t = 5). Its five configurations
    /// (46 MiB × 1, 19 MiB × 2, 12 MiB × 3, 9 MiB × 4, 7 MiB × 5 passes, one lane) all reach it
    /// and are, in its words, an equal level of defense traded between CPU and memory.
    pub const MIN_WORK_KIB: u64 = 35_840;

    /// Whether no parameter exceeds the bounds stored hashes are verified within
    /// (`MAX_ARGON2_MEMORY_KIB`, `MAX_ARGON2_ITERATIONS`, `MAX_ARGON2_PARALLELISM`).
    fn within_verifiable_bounds(&self) -> bool {
        self.memory_kib <= MAX_ARGON2_MEMORY_KIB
            && self.iterations <= MAX_ARGON2_ITERATIONS
            && self.parallelism <= MAX_ARGON2_PARALLELISM
    }

    /// Checks that these parameters are at least as strong as one of the OWASP Password
    /// Storage Cheat Sheet's argon2id configurations (section "Argon2id"): memory at least
    /// [`HashParams::MIN_MEMORY_KIB`] and memory × passes at least
    /// [`HashParams::MIN_WORK_KIB`], and within the bounds stored hashes are verified within
    /// (`MAX_ARGON2_MEMORY_KIB`, `MAX_ARGON2_ITERATIONS`, `MAX_ARGON2_PARALLELISM`).
    ///
    /// # Errors
    /// What is wrong, as one line for an operator, e.g. `7168 KiB needs at least 5 passes
    /// (memory × passes at least 35840 KiB, OWASP's minimum)`.
    pub fn check_strength(&self) -> std::result::Result<(), String> {
        let Self { memory_kib: m, iterations: t, parallelism: p } = *self;
        if !self.within_verifiable_bounds() || t == 0 || p == 0 {
            return Err(format!(
                "m={m} KiB, t={t}, p={p} is outside 1 to {MAX_ARGON2_MEMORY_KIB} KiB, 1 to {MAX_ARGON2_ITERATIONS} passes, 1 to {MAX_ARGON2_PARALLELISM} lanes"
            ));
        }
        if m < Self::MIN_MEMORY_KIB {
            return Err(format!("{m} KiB is less than {} KiB, OWASP's minimum for argon2id", Self::MIN_MEMORY_KIB));
        }
        if u64::from(m) * u64::from(t) < Self::MIN_WORK_KIB {
            let passes = Self::MIN_WORK_KIB.div_ceil(u64::from(m));
            return Err(format!(
                "{m} KiB needs at least {passes} passes (memory × passes at least {} KiB, OWASP's minimum)",
                Self::MIN_WORK_KIB
            ));
        }
        Ok(())
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Whether the password matched.
    pub matched: bool,
    /// Whether the stored hash uses other parameters than the current ones and should be
    /// replaced (only meaningful when `matched`).
    pub needs_rehash: bool,
}

/// Salt length in bytes (RFC 9106 section 3.1 recommends 16).
const SALT_LEN: usize = 16;

/// Hash output length in bytes.
const OUTPUT_LEN: usize = 32;

/// Work for a hashing thread; it lends the job its reusable memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// How long a caller refused by a full queue is told to wait.
const RETRY_WHEN_FULL: Duration = Duration::from_secs(1);

/// The blocks of `memory` needed for `params`, growing it if needed.
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let count = params.block_count();
    if memory.len() < count {
        memory.resize(count, Block::default());
    }
    &mut memory[..count]
}

/// Starts `n` hashing threads fed by one FIFO queue. They exit when the returned sender and
/// all its clones are dropped.
fn spawn_workers(n: usize) -> Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("latchkey-argon2-{i}"))
            .spawn(move || {
                yield_to_other_work();
                let mut memory = Vec::new();
                loop {
                    let job = {
                        let queue = rx.lock().unwrap_or_else(|p| p.into_inner());
                        match queue.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    job(&mut memory);
                }
            })
            .map_err(|e| Error::internal(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(tx)
}

/// Puts the calling thread at the lowest ordinary priority (nice 19 on Linux, the lowest
/// priority elsewhere), below the server's other threads. A platform that refuses leaves the
/// thread as it was: hashes then share the cores equally with everything else.
fn yield_to_other_work() {
    // SCHED_IDLE (below nice 19) starved sign-ins almost entirely while session checks kept
    // the cores busy; nice 19 leaves them a share.
    #[cfg(target_os = "linux")]
    let set = {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        )
    };
    #[cfg(not(target_os = "linux"))]
    let set = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    if let Err(e) = set {
        tracing::debug!(error = ?e, "hashing threads keep their default priority");
    }
}

/// Hashes `password` with `argon2` (whose parameters are `params`) and a fresh random salt,
/// into a PHC string.
fn hash_into_phc(argon2: &Argon2<'_>, params: &Params, password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let fail = |e: &dyn std::fmt::Display| Error::internal(format!("argon2: {e}"));
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    argon2.hash_password_into_with_memory(password, &salt, &mut out, blocks(memory, params)).map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Recomputes a stored argon2 PHC hash for `password` and compares in constant time. Returns
/// whether it matched and the stored parameters; `None` when the string is not an argon2 hash
/// Latchkey can check (malformed, or beyond the cost bounds of [`imported`]).
fn verify_phc(stored: &str, password: &[u8], memory: &mut Vec<Block>) -> Option<(bool, PasswordHash)> {
    let (parsed, algorithm, params) = imported::parse_argon2(stored).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let (salt, expected) = (parsed.salt.as_ref()?, parsed.hash.as_ref()?);
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, &mut out, blocks(memory, &params))
        .ok()?;
    let matched = constant_time_eq(&out, expected.as_bytes());
    Some((matched, parsed))
}

/// Verifies `password` against a stored hash of any format [`check_importable`] accepts:
/// `(matched, needs_rehash)`, where every hash but argon2id with the `current` parameters needs
/// re-hashing; `None` when the hash is not one Latchkey can check.
fn verify_stored(stored: &str, password: &[u8], current: HashParams, memory: &mut Vec<Block>) -> Option<(bool, bool)> {
    if stored.starts_with("$argon2") {
        let (matched, parsed) = verify_phc(stored, password, memory)?;
        Some((matched, !uses_params(&parsed, current)))
    } else {
        let foreign = imported::Foreign::parse(stored).ok()?;
        Some((foreign.verify(password), true))
    }
}

/// Hashes and verifies passwords with argon2id on `concurrency` dedicated threads, with at
/// most `queue` jobs waiting (API.md, "Guessing": a full queue answers 503).
#[derive(Clone)]
pub struct PasswordHasher {
    params: HashParams,
    argon2_params: Params,
    jobs: mpsc::Sender<Job>,
    concurrency: usize,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).field("concurrency", &self.concurrency).finish()
    }
}

impl PasswordHasher {
    /// A hasher with the given parameters on `concurrency` hashing threads (use the number of
    /// cores), refusing work when `queue` jobs are already waiting. Computes the dummy hash
    /// once, synchronously (one hash's time).
    ///
    /// # Errors
    /// [`Error::Internal`] when the parameters are out of argon2's range or beyond the bounds
    /// stored hashes are verified within (`MAX_ARGON2_*`), or a thread cannot be started.
    pub fn new(params: HashParams, concurrency: usize, queue: usize) -> Result<Self> {
        if !params.within_verifiable_bounds() {
            return Err(Error::internal(format!("argon2 parameters beyond the verifiable bounds: {params:?}")));
        }
        let argon2_params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(OUTPUT_LEN))
            .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params.clone());
        let dummy_hash = hash_into_phc(&argon2, &argon2_params, b"latchkey dummy password", &mut Vec::new())?;
        let concurrency = concurrency.max(1);
        Ok(Self {
            params,
            argon2_params,
            jobs: spawn_workers(concurrency)?,
            concurrency,
            queue: queue.max(1),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a new password with a fresh random 16-byte salt; returns the PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, 32-byte output).
    ///
    /// # Errors
    /// [`Error::Internal`] if the hashing threads are gone or argon2 fails.
    pub async fn hash(&self, password: &NewPassword) -> Result<String> {
        self.hash_secret(password.expose().to_owned().into()).await
    }

    /// Re-hashes a presented password that just matched a hash with outdated parameters
    /// (API.md, "Passwords": re-hashed on sign-in). Crate-private: a presented password is only
    /// ever stored after it proved to be the user's current one.
    pub(crate) async fn rehash(&self, password: &PresentedPassword) -> Result<String> {
        self.hash_secret(password.expose().to_owned().into()).await
    }

    async fn hash_secret(&self, password: secrecy::SecretString) -> Result<String> {
        use secrecy::ExposeSecret as _;
        let params = self.argon2_params.clone();
        self.run(move |memory| {
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            hash_into_phc(&argon2, &params, password.expose_secret().as_bytes(), memory)
        })
        .await
    }

    /// Verifies a password against a stored hash, or against the dummy argon2id hash when
    /// `stored` is `None` (unknown user, or a user without a password) so that the caller
    /// spends the same time either way; in that case the result never matches.
    ///
    /// `stored` is a Latchkey argon2id PHC string or an imported hash of any format
    /// [`check_importable`] accepts (bcrypt, scrypt, Werkzeug and Django PBKDF2, argon2 of any
    /// variant and parameters), verified on the hashing threads like argon2. Every hash but
    /// argon2id with the current parameters is flagged `needs_rehash` when it matched.
    ///
    /// A stored hash that cannot be parsed, or whose cost exceeds the import bounds, counts as
    /// a mismatch (and is logged) and is not computed.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full, [`Error::Internal`] if the hashing threads
    /// are gone.
    pub async fn verify(&self, password: &PresentedPassword, stored: Option<&str>) -> Result<Verification> {
        let password = password.clone();
        let known = stored.is_some();
        let hash: Arc<str> = match stored {
            Some(h) => h.into(),
            None => self.dummy_hash.clone(),
        };
        let current = self.params;
        self.run(move |memory| {
            let Some((matched, outdated)) = verify_stored(&hash, password.expose().as_bytes(), current, memory) else {
                tracing::error!("stored password hash is not one Latchkey can check (format or cost)");
                return Ok(Verification { matched: false, needs_rehash: false });
            };
            let matched = matched && known;
            Ok(Verification { matched, needs_rehash: matched && outdated })
        })
        .await
    }

    /// Runs `work` on a hashing thread, in the current tracing span, and awaits its result.
    ///
    /// Refused with [`Error::Overloaded`] when `queue` jobs are already waiting. A job whose
    /// caller has gone (the request was cancelled while it waited) is dropped unhashed.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("latchkey_hash_queue_full_total").increment(1);
            return Err(Error::Overloaded { retry_after: RETRY_WHEN_FULL });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let counter = self.waiting.clone();
        let job: Job = Box::new(move |memory| {
            counter.fetch_sub(1, Ordering::AcqRel);
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(span.in_scope(|| work(memory)));
        });
        if self.jobs.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::internal("the hashing threads are gone"));
        }
        rx.await.map_err(|_| Error::internal("a hashing thread failed"))?
    }
}

/// Whether a parsed hash is argon2id v19 with exactly the `current` parameters.
fn uses_params(hash: &PasswordHash, current: HashParams) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return false;
    }
    match Params::try_from(hash) {
        Ok(p) => {
            p.m_cost() == current.memory_kib && p.t_cost() == current.iterations && p.p_cost() == current.parallelism
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PasswordPolicy;

    fn presented(p: &NewPassword) -> PresentedPassword {
        PresentedPassword::parse(p.expose()).expect("bounded")
    }

    fn cheap() -> HashParams {
        HashParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    #[test]
    fn owasp_configurations_are_strong_enough_and_weaker_ones_are_not() {
        for (memory_kib, iterations) in [(47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5), (65_536, 3)] {
            let params = HashParams { memory_kib, iterations, parallelism: 1 };
            assert_eq!(params.check_strength(), Ok(()), "{params:?}");
        }
        assert_eq!(HashParams::default().check_strength(), Ok(()));
        let too_few_passes = HashParams { memory_kib: 7_168, iterations: 4, parallelism: 1 };
        let e = too_few_passes.check_strength().expect_err("7 MiB × 4");
        assert!(e.contains("at least 5 passes"), "{e}");
        let e =
            HashParams { memory_kib: 30_720, iterations: 1, parallelism: 1 }.check_strength().expect_err("30 MiB × 1");
        assert!(e.contains("at least 2 passes"), "{e}");
        let e = HashParams { memory_kib: 6_144, iterations: 16, parallelism: 1 }.check_strength().expect_err("6 MiB");
        assert!(e.contains("less than 7168 KiB"), "{e}");
        for beyond in [
            HashParams { memory_kib: MAX_ARGON2_MEMORY_KIB + 1, iterations: 1, parallelism: 1 },
            HashParams { memory_kib: 19_456, iterations: MAX_ARGON2_ITERATIONS + 1, parallelism: 1 },
            HashParams { memory_kib: 19_456, iterations: 0, parallelism: 1 },
        ] {
            let e = beyond.check_strength().expect_err("beyond the verifiable bounds");
            assert!(e.contains("outside"), "{e}");
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let policy = PasswordPolicy::default();
        let pw = policy.parse("correct horse battery").expect("valid");
        let wrong = PresentedPassword::parse("correct horse battery!").expect("bounded");

        let hasher = PasswordHasher::new(cheap(), 2, 64).expect("params");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");

        let ok = hasher.verify(&presented(&pw), Some(&hash)).await.expect("verify");
        assert_eq!(ok, Verification { matched: true, needs_rehash: false });
        let bad = hasher.verify(&wrong, Some(&hash)).await.expect("verify");
        assert!(!bad.matched);

        // A hash made with other parameters still verifies, and is flagged for re-hashing.
        let stronger = PasswordHasher::new(HashParams { memory_kib: 128, ..cheap() }, 1, 64).expect("params");
        let v = stronger.verify(&presented(&pw), Some(&hash)).await.expect("verify");
        assert_eq!(v, Verification { matched: true, needs_rehash: true });
    }

    #[tokio::test]
    async fn unknown_users_never_match_and_garbage_hashes_do_not_panic() {
        let hasher = PasswordHasher::new(cheap(), 1, 64).expect("params");
        let pw = PresentedPassword::parse("latchkey dummy password").expect("bounded");
        assert!(!hasher.verify(&pw, None).await.expect("verify").matched, "dummy hash must never match");
        assert!(!hasher.verify(&pw, Some("not a hash")).await.expect("verify").matched);
    }

    #[tokio::test]
    async fn hashes_from_the_reference_implementation_verify_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let pw = PasswordPolicy::default().parse("interoperable password").expect("valid");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).expect("params"));
        let theirs = argon2.hash_password(pw.expose().as_bytes()).expect("hash").to_string();
        let hasher = PasswordHasher::new(cheap(), 1, 64).expect("params");
        assert!(hasher.verify(&presented(&pw), Some(&theirs)).await.expect("verify").matched);
        let ours = hasher.hash(&pw).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(argon2.verify_password(pw.expose().as_bytes(), &parsed).is_ok(), "{ours}");
        // argon2i hashes (other variant) verify too, and are flagged for re-hashing.
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(64, 1, 1, None).expect("params"));
        let old = argon2i.hash_password(pw.expose().as_bytes()).expect("hash").to_string();
        assert_eq!(
            hasher.verify(&presented(&pw), Some(&old)).await.expect("verify"),
            Verification { matched: true, needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn concurrent_hashes_queue_on_the_fixed_pool() {
        let hasher = PasswordHasher::new(cheap(), 2, 64).expect("params");
        let pw = PasswordPolicy::default().parse("queued password").expect("valid");
        let hashes = futures_like_join(&hasher, &pw, 16).await;
        assert_eq!(hashes.len(), 16);
        for h in &hashes {
            assert!(hasher.verify(&presented(&pw), Some(h)).await.expect("verify").matched);
        }
    }

    async fn futures_like_join(hasher: &PasswordHasher, pw: &NewPassword, n: usize) -> Vec<String> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (h, p) = (hasher.clone(), pw.clone());
            set.spawn(async move { h.hash(&p).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.expect("task").expect("hash"));
        }
        out
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_abandoned_jobs_are_not_hashed() {
        // One slow thread and room for two waiting jobs. Each job takes long enough (tenths of
        // a second) that the hashing thread cannot drain the queue while the flood arrives,
        // even on a loaded machine.
        let slow = HashParams { memory_kib: 64 * 1024, iterations: 8, parallelism: 1 };
        let hasher = PasswordHasher::new(slow, 1, 2).expect("params");
        let pw = PresentedPassword::parse("flooding password").expect("bounded");
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (h, p) = (hasher.clone(), pw.clone());
            set.spawn(async move { h.verify(&p, None).await });
        }
        let mut overloaded = 0;
        while let Some(r) = set.join_next().await {
            match r.expect("task") {
                Ok(v) => assert!(!v.matched),
                Err(Error::Overloaded { retry_after }) => {
                    assert!(retry_after >= Duration::from_secs(1));
                    overloaded += 1;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(overloaded >= 30, "most of the flood is refused at once ({overloaded} of 40)");
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0, "the count of waiting jobs returns to zero");
        // Abandoned jobs: the futures are dropped while queued, and the queue empties again.
        for _ in 0..2 {
            let (h, p) = (hasher.clone(), pw.clone());
            let _ = tokio::time::timeout(Duration::from_millis(1), async move { h.verify(&p, None).await }).await;
        }
        assert!(hasher.verify(&pw, None).await.is_ok(), "the queue is usable after abandoned jobs");
    }

    /// Hashes made by the original libraries (`tests/fixtures/make_foreign_hashes.py`).
    const FOREIGN: &str = include_str!("../tests/fixtures/foreign_hashes.jsonl");

    #[tokio::test]
    async fn hashes_from_other_ecosystems_verify_and_are_flagged_for_rehashing() {
        let hasher = PasswordHasher::new(cheap(), 2, 64).expect("params");
        let mut formats = std::collections::BTreeSet::new();
        for line in FOREIGN.lines() {
            let row: serde_json::Value = serde_json::from_str(line).expect("fixture line");
            let (format, password, hash) = (row["format"].as_str(), row["password"].as_str(), row["hash"].as_str());
            let (Some(format), Some(password), Some(hash)) = (format, password, hash) else {
                panic!("fixture fields: {line}");
            };
            let recognised = check_importable(hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
            assert_eq!(recognised.name(), format, "{hash}");
            formats.insert(format.to_owned());
            let right = PresentedPassword::parse(password).expect("bounded");
            let wrong = PresentedPassword::parse(&format!("{password}?")).expect("bounded");
            let mut shorter = password.chars();
            shorter.next_back();
            let first = PresentedPassword::parse(shorter.as_str()).expect("bounded");
            assert_eq!(
                hasher.verify(&right, Some(hash)).await.expect("verify"),
                Verification { matched: true, needs_rehash: true },
                "{format} ({}) {hash}",
                row["library"]
            );
            // bcrypt reads the first 72 bytes only: past them, any suffix matches (as in the
            // original libraries).
            let truncated = format == "bcrypt" && password.len() > 72;
            for other in [&wrong, &first] {
                let v = hasher.verify(other, Some(hash)).await.expect("verify");
                assert_eq!(v.matched, truncated, "{hash}");
            }
        }
        assert_eq!(formats.len(), 6, "every format is covered: {formats:?}");
    }

    #[tokio::test]
    async fn stored_hashes_beyond_the_cost_bounds_are_mismatches_and_not_computed() {
        let hasher = PasswordHasher::new(cheap(), 1, 64).expect("params");
        let pw = PresentedPassword::parse("whatever").expect("bounded");
        for absurd in [
            "$2b$31$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "pbkdf2:sha256:4000000000$s$00112233445566778899aabbccddeeff",
            "scrypt:1073741824:8:1$s$00112233445566778899aabbccddeeff",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$ASNFZ4mrze8BI0VniavN7w",
            "$argon2id$v=19$m=64,t=4000000,p=1$c2FsdHNhbHQ$ASNFZ4mrze8BI0VniavN7w",
        ] {
            let started = std::time::Instant::now();
            assert!(!hasher.verify(&pw, Some(absurd)).await.expect("verify").matched, "{absurd}");
            assert!(started.elapsed() < Duration::from_secs(1), "{absurd} was computed");
        }
    }

    #[test]
    fn the_hasher_refuses_parameters_it_could_not_verify() {
        assert!(PasswordHasher::new(HashParams { iterations: 17, ..cheap() }, 1, 1).is_err());
        assert!(PasswordHasher::new(HashParams { memory_kib: MAX_ARGON2_MEMORY_KIB + 1, ..cheap() }, 1, 1).is_err());
    }

    #[test]
    fn default_parameters_are_the_documented_ones() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }
}
