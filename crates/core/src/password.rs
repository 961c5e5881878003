//! Password hashing with argon2id on a bounded blocking pool.
//!
//! Each hash holds `memory_kib` KiB (19 MiB by default) for tens of milliseconds of CPU, so
//! hashing runs on tokio's blocking threads behind a semaphore with one permit per core: a
//! storm of sign-ins queues here instead of exhausting memory or starving the async threads
//! that serve session checks. Unknown logins are verified against a dummy hash so that they
//! cost the same as a wrong password (API.md, "Timing").

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::identity::Password;

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

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Whether the password matched.
    pub matched: bool,
    /// Whether the stored hash uses other parameters than the current ones and should be
    /// replaced (only meaningful when `matched`).
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords with argon2id, at most `concurrency` at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    params: HashParams,
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("concurrency", &self.permits.available_permits())
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher with the given parameters running at most `concurrency` hashes at once (use
    /// the number of cores). Computes the dummy hash once, synchronously (one hash's time).
    ///
    /// # Errors
    /// [`Error::Internal`] when the parameters are out of argon2's range.
    pub fn new(params: HashParams, concurrency: usize) -> Result<Self> {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.memory_kib, params.iterations, params.parallelism, None)
                .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?,
        );
        let dummy_hash = argon2
            .hash_password(b"latchkey dummy password")
            .map_err(|e| Error::internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            params,
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a password with a fresh random salt; returns the PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
    ///
    /// # Errors
    /// [`Error::Internal`] if the blocking pool is gone or argon2 fails.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let password = password.clone();
        let argon2 = self.argon2.clone();
        self.run(move || {
            argon2
                .hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Verifies a password against a PHC string, or against the dummy hash when `stored` is
    /// `None` (unknown user, or a user without a password) so that the caller spends the same
    /// time either way; in that case the result never matches.
    ///
    /// A stored hash that cannot be parsed counts as a mismatch (and is logged).
    ///
    /// # Errors
    /// [`Error::Internal`] if the blocking pool is gone.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verification> {
        let password = password.clone();
        let known = stored.is_some();
        let hash: Arc<str> = match stored {
            Some(h) => h.into(),
            None => self.dummy_hash.clone(),
        };
        let current = self.params;
        let argon2 = self.argon2.clone();
        self.run(move || {
            let parsed = match PasswordHash::new(&hash) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "stored password hash is not a valid PHC string");
                    return Ok(Verification { matched: false, needs_rehash: false });
                }
            };
            let matched = argon2.verify_password(password.expose().as_bytes(), &parsed).is_ok() && known;
            let needs_rehash = matched && !uses_params(&parsed, current);
            Ok(Verification { matched, needs_rehash })
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|e| Error::internal(format!("hash pool closed: {e}")))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|e| Error::internal(format!("hash task failed: {e}")))?
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

    fn cheap() -> HashParams {
        HashParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let policy = PasswordPolicy::default();
        let pw = policy.parse("correct horse battery").expect("valid");
        let wrong = Password::candidate("correct horse battery!");

        let hasher = PasswordHasher::new(cheap(), 2).expect("params");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");

        let ok = hasher.verify(&pw, Some(&hash)).await.expect("verify");
        assert_eq!(ok, Verification { matched: true, needs_rehash: false });
        let bad = hasher.verify(&wrong, Some(&hash)).await.expect("verify");
        assert!(!bad.matched);

        // A hash made with other parameters still verifies, and is flagged for re-hashing.
        let stronger = PasswordHasher::new(HashParams { memory_kib: 128, ..cheap() }, 1).expect("params");
        let v = stronger.verify(&pw, Some(&hash)).await.expect("verify");
        assert_eq!(v, Verification { matched: true, needs_rehash: true });
    }

    #[tokio::test]
    async fn unknown_users_never_match_and_garbage_hashes_do_not_panic() {
        let hasher = PasswordHasher::new(cheap(), 1).expect("params");
        let pw = Password::candidate("latchkey dummy password");
        assert!(!hasher.verify(&pw, None).await.expect("verify").matched, "dummy hash must never match");
        assert!(!hasher.verify(&pw, Some("not a hash")).await.expect("verify").matched);
    }

    #[test]
    fn default_parameters_are_the_documented_ones() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }
}
