//! Rate limits: how often an attempt may be made, per account and per client address.
//!
//! The quotas are rules of the core ([`LimitKind::quota`]); where they are counted is a port
//! ([`RateLimiter`]): in process memory ([`MemoryRateLimiter`], per instance) or in a store
//! shared by every instance (the server's Redis limiter). Each quota is a token bucket (GCRA):
//! `burst` attempts at once, refilled evenly over `period`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as GovernorQuota};

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Sign-in attempts for one login (email or username) in one tenant: password guessing
    /// against one account.
    SignInPerLogin,
    /// Sign-in attempts from one IP address: password spraying across accounts.
    SignInPerAddress,
    /// Sign-ups from one IP address.
    SignUpPerAddress,
    /// Code mails to one address: mail bombing.
    CodeMailPerRecipient,
}

/// `burst` attempts, refilled evenly over `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Attempts allowed at once.
    pub burst: u32,
    /// Time to refill the whole burst.
    pub period: Duration,
}

impl LimitKind {
    /// Every kind.
    pub const ALL: [LimitKind; 4] = [
        LimitKind::SignInPerLogin,
        LimitKind::SignInPerAddress,
        LimitKind::SignUpPerAddress,
        LimitKind::CodeMailPerRecipient,
    ];

    /// The quota of this kind.
    pub fn quota(self) -> Quota {
        match self {
            LimitKind::SignInPerLogin => Quota { burst: 10, period: Duration::from_secs(5 * 60) },
            LimitKind::SignInPerAddress => Quota { burst: 60, period: Duration::from_secs(60) },
            LimitKind::SignUpPerAddress => Quota { burst: 30, period: Duration::from_secs(60 * 60) },
            LimitKind::CodeMailPerRecipient => Quota { burst: 5, period: Duration::from_secs(15 * 60) },
        }
    }

    /// A short stable name (metric labels, shared-store key prefixes).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::SignInPerLogin => "sign_in_login",
            LimitKind::SignInPerAddress => "sign_in_address",
            LimitKind::SignUpPerAddress => "sign_up_address",
            LimitKind::CodeMailPerRecipient => "code_mail",
        }
    }
}

/// Counts attempts. `check` records one attempt under `key` and says whether it is allowed.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// `Ok(())` if the attempt is within the quota of `kind` for `key`, else `Err(wait)` with
    /// how long until the next attempt would be allowed. A limiter that cannot reach its
    /// backing store should allow the attempt (and log), not lock everybody out.
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration>;
}

/// No limits (`LATCHKEY_RATE_LIMIT=off`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

#[async_trait]
impl RateLimiter for Unlimited {
    async fn check(&self, _kind: LimitKind, _key: &str) -> Result<(), Duration> {
        Ok(())
    }
}

/// Limits counted in this process's memory (one instance; use a shared limiter for several).
pub struct MemoryRateLimiter {
    limiters: HashMap<LimitKind, DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter").finish_non_exhaustive()
    }
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        let limiters = LimitKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let q = kind.quota();
                let burst = NonZeroU32::new(q.burst)?;
                let quota = GovernorQuota::with_period(q.period / q.burst)?.allow_burst(burst);
                Some((kind, DefaultKeyedRateLimiter::keyed(quota)))
            })
            .collect();
        Self { limiters, clock: DefaultClock::default() }
    }
}

impl MemoryRateLimiter {
    /// Forgets keys whose buckets are full again, bounding memory. Call periodically.
    pub fn forget_idle(&self) {
        for limiter in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration> {
        match self.limiters.get(&kind) {
            Some(limiter) => {
                limiter.check_key(&key.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_allowed_then_refused_per_key() {
        let limiter = MemoryRateLimiter::default();
        let burst = LimitKind::CodeMailPerRecipient.quota().burst;
        for _ in 0..burst {
            assert!(limiter.check(LimitKind::CodeMailPerRecipient, "a@example.com").await.is_ok());
        }
        let wait = limiter.check(LimitKind::CodeMailPerRecipient, "a@example.com").await.expect_err("over quota");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(15 * 60 / 5));
        assert!(limiter.check(LimitKind::CodeMailPerRecipient, "b@example.com").await.is_ok(), "other keys unaffected");
        assert!(limiter.check(LimitKind::SignInPerLogin, "a@example.com").await.is_ok(), "other kinds unaffected");
        assert!(Unlimited.check(LimitKind::SignInPerLogin, "x").await.is_ok());
        limiter.forget_idle();
    }
}
