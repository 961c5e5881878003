//! Rate limits: how often an attempt may be made, per account, per client address, per session
//! (API.md, "Guessing").
//!
//! The quotas are rules of the core ([`LimitKind::quota`]); where they are counted is a port
//! ([`RateLimiter`]): in process memory ([`MemoryRateLimiter`], per instance) or in a store
//! shared by every instance (the server's Redis limiter). A quota is either a token bucket in
//! its GCRA form (`burst` attempts at once, refilled evenly over `period`: smooth limits on
//! attempts) or a fixed window (at most `burst` in a window of `period` that opens with the
//! first one, then nothing until it closes: the hard daily caps on failures).
//!
//! Limits on *failures* (wrong passwords, wrong codes) take a unit before the attempt is
//! evaluated and give it back ([`RateLimiter::refund`]) when the attempt succeeds, so only
//! failures count, yet a flood of concurrent guesses is refused at once instead of all being
//! evaluated before the first failure is recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Failed sign-ins for one account from one client address (or IPv6 /64): guessing from
    /// one place, without locking the owner out from another.
    SignInFailuresPerLoginAndAddress,
    /// Failed sign-ins for one account from anywhere: at most 100 a day (NIST SP 800-63B
    /// section 5.2.2).
    SignInFailuresPerLogin,
    /// Sign-in attempts from one client address: password spraying across accounts.
    SignInPerAddress,
    /// Failed re-authentications (password change, account deletion, email change) of one
    /// signed-in user.
    ReauthFailuresPerUser,
    /// Sign-ups from one client address.
    SignUpPerAddress,
    /// Code mails to one address: mail bombing.
    CodeMailPerRecipient,
    /// Wrong one-time codes for one account and purpose, across reissued codes.
    CodeFailuresPerAccount,
    /// Code checks from one client address, whatever the account.
    CodeChecksPerAddress,
    /// Email changes started by one user.
    EmailChangePerUser,
    /// Refreshes of one session.
    RefreshPerSession,
    /// Wrong or revoked API keys presented from one client address (`projects`).
    ApiKeyFailuresPerAddress,
}

/// How a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Token bucket (GCRA): `burst` at once, one unit back every `period / burst`.
    Bucket,
    /// Fixed window: at most `burst` from the first attempt until `period` later.
    Window,
}

/// `burst` attempts per `period`, counted as `shape` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Attempts allowed at once (bucket) or per window.
    pub burst: u32,
    /// Time to refill the whole burst (bucket), or the window's length.
    pub period: Duration,
    /// Bucket or window.
    pub shape: Shape,
}

impl Quota {
    /// The time one attempt's unit takes to come back: `period / burst`, at least 1 ms.
    pub fn interval(self) -> Duration {
        (self.period / self.burst.max(1)).max(Duration::from_millis(1))
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl LimitKind {
    /// Every kind.
    pub const ALL: [LimitKind; 11] = [
        LimitKind::SignInFailuresPerLoginAndAddress,
        LimitKind::SignInFailuresPerLogin,
        LimitKind::SignInPerAddress,
        LimitKind::ReauthFailuresPerUser,
        LimitKind::SignUpPerAddress,
        LimitKind::CodeMailPerRecipient,
        LimitKind::CodeFailuresPerAccount,
        LimitKind::CodeChecksPerAddress,
        LimitKind::EmailChangePerUser,
        LimitKind::RefreshPerSession,
        LimitKind::ApiKeyFailuresPerAddress,
    ];

    /// The quota of this kind.
    pub fn quota(self) -> Quota {
        let q = |burst, period| Quota { burst, period, shape: Shape::Bucket };
        let window = |burst, period| Quota { burst, period, shape: Shape::Window };
        match self {
            LimitKind::SignInFailuresPerLoginAndAddress => q(10, 5 * MINUTE),
            LimitKind::SignInFailuresPerLogin => window(100, DAY),
            LimitKind::SignInPerAddress => q(60, MINUTE),
            LimitKind::ReauthFailuresPerUser => q(10, 5 * MINUTE),
            LimitKind::SignUpPerAddress => q(30, HOUR),
            LimitKind::CodeMailPerRecipient => q(5, 15 * MINUTE),
            LimitKind::CodeFailuresPerAccount => window(20, DAY),
            LimitKind::CodeChecksPerAddress => q(60, 10 * MINUTE),
            LimitKind::EmailChangePerUser => q(5, HOUR),
            LimitKind::RefreshPerSession => q(30, MINUTE),
            LimitKind::ApiKeyFailuresPerAddress => q(20, MINUTE),
        }
    }

    /// A short stable name (metric labels, shared-store key prefixes).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::SignInFailuresPerLoginAndAddress => "sign_in_failures_login_address",
            LimitKind::SignInFailuresPerLogin => "sign_in_failures_login",
            LimitKind::SignInPerAddress => "sign_in_address",
            LimitKind::ReauthFailuresPerUser => "reauth_failures_user",
            LimitKind::SignUpPerAddress => "sign_up_address",
            LimitKind::CodeMailPerRecipient => "code_mail",
            LimitKind::CodeFailuresPerAccount => "code_failures_account",
            LimitKind::CodeChecksPerAddress => "code_checks_address",
            LimitKind::EmailChangePerUser => "email_change_user",
            LimitKind::RefreshPerSession => "refresh_session",
            LimitKind::ApiKeyFailuresPerAddress => "api_key_failures_address",
        }
    }
}

/// The rate-limit key of a client address: the address itself for IPv4 (and IPv4-mapped IPv6),
/// its /64 prefix for IPv6, since one subscriber usually holds a whole /64 and could otherwise
/// take a fresh bucket for every guess. Text that is not an address is used as it is.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// Counts attempts.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one unit of `kind`'s quota under `key`: `Ok(())` if there was one, else
    /// `Err(wait)` with how long until there will be. A limiter that cannot reach its backing
    /// store allows the attempt (and logs): an outage must not lock everybody out.
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration>;

    /// Gives back one unit taken by [`RateLimiter::check`] (the attempt succeeded, and only
    /// failures count). Never gives more than the full burst.
    async fn refund(&self, kind: LimitKind, key: &str);
}

/// No limits (`LATCHKEY_RATE_LIMIT=off`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

#[async_trait]
impl RateLimiter for Unlimited {
    async fn check(&self, _kind: LimitKind, _key: &str) -> Result<(), Duration> {
        Ok(())
    }

    async fn refund(&self, _kind: LimitKind, _key: &str) {}
}

/// The state of one key.
#[derive(Debug, Clone, Copy)]
enum Counter {
    /// GCRA theoretical arrival time.
    Bucket(OffsetDateTime),
    /// Window opened at `start`, with `count` units taken.
    Window { start: OffsetDateTime, count: u32 },
}

impl Counter {
    /// When this counter is back to its initial state (and can be forgotten).
    fn idle_at(self, quota: Quota) -> OffsetDateTime {
        match self {
            Counter::Bucket(tat) => tat,
            Counter::Window { start, .. } => start + quota.period,
        }
    }
}

/// Limits counted in this process's memory (one instance; use a shared limiter for several),
/// by the injected clock.
pub struct MemoryRateLimiter {
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<(LimitKind, String), Counter>>,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter").finish_non_exhaustive()
    }
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryRateLimiter {
    /// A limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, buckets: Mutex::new(HashMap::new()) }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<(LimitKind, String), Counter>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets counters that are back to their initial state, bounding memory. Call
    /// periodically.
    pub fn forget_idle(&self) {
        let now = self.clock.now();
        self.buckets().retain(|(kind, _), counter| counter.idle_at(kind.quota()) > now);
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration> {
        let quota = kind.quota();
        let now = self.clock.now();
        let mut buckets = self.buckets();
        let slot = (kind, key.to_owned());
        let next = match (quota.shape, buckets.get(&slot).copied()) {
            (Shape::Bucket, previous) => {
                let interval = quota.interval();
                let tat = match previous {
                    Some(Counter::Bucket(tat)) => tat.max(now),
                    _ => now,
                };
                let allow_at = tat - interval * quota.burst.saturating_sub(1);
                if now < allow_at {
                    return Err((allow_at - now).unsigned_abs());
                }
                Counter::Bucket(tat + interval)
            }
            (Shape::Window, Some(Counter::Window { start, count })) if now < start + quota.period => {
                if count >= quota.burst {
                    return Err((start + quota.period - now).unsigned_abs());
                }
                Counter::Window { start, count: count + 1 }
            }
            (Shape::Window, _) => Counter::Window { start: now, count: 1 },
        };
        buckets.insert(slot, next);
        Ok(())
    }

    async fn refund(&self, kind: LimitKind, key: &str) {
        let quota = kind.quota();
        let now = self.clock.now();
        let mut buckets = self.buckets();
        match buckets.get_mut(&(kind, key.to_owned())) {
            Some(Counter::Bucket(tat)) => *tat = (*tat - quota.interval()).max(now),
            Some(Counter::Window { count, .. }) => *count = count.saturating_sub(1),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_burst_is_allowed_then_refused_per_key_until_it_refills() {
        let clock = Arc::new(ManualClock::starting_now());
        let limiter = MemoryRateLimiter::new(clock.clone());
        let kind = LimitKind::CodeMailPerRecipient;
        for _ in 0..kind.quota().burst {
            assert!(limiter.check(kind, "a@example.com").await.is_ok());
        }
        let wait = limiter.check(kind, "a@example.com").await.expect_err("over quota");
        assert_eq!(wait, kind.quota().interval(), "one unit comes back after one interval");
        assert!(limiter.check(kind, "b@example.com").await.is_ok(), "other keys unaffected");
        assert!(limiter.check(LimitKind::SignInPerAddress, "a@example.com").await.is_ok(), "other kinds unaffected");
        clock.advance(wait);
        assert!(limiter.check(kind, "a@example.com").await.is_ok(), "refilled");
        assert!(limiter.check(kind, "a@example.com").await.is_err());
        clock.advance(kind.quota().period);
        limiter.forget_idle();
        assert!(limiter.buckets().is_empty(), "full buckets are forgotten");
        assert!(Unlimited.check(kind, "x").await.is_ok());
    }

    #[tokio::test]
    async fn a_window_allows_its_count_then_nothing_until_it_closes() {
        let clock = Arc::new(ManualClock::starting_now());
        let limiter = MemoryRateLimiter::new(clock.clone());
        let kind = LimitKind::CodeFailuresPerAccount;
        let quota = kind.quota();
        assert_eq!((quota.burst, quota.period, quota.shape), (20, DAY, Shape::Window));
        for _ in 0..20 {
            assert!(limiter.check(kind, "acct").await.is_ok());
            clock.advance(Duration::from_secs(60));
        }
        let wait = limiter.check(kind, "acct").await.expect_err("21st in the window");
        assert_eq!(wait, DAY - Duration::from_secs(20 * 60), "until the window that opened with the first closes");
        clock.advance(wait - Duration::from_secs(1));
        assert!(limiter.check(kind, "acct").await.is_err(), "no trickle inside the window");
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(kind, "acct").await.is_ok(), "a new window");
        limiter.refund(kind, "acct").await;
        for _ in 0..20 {
            assert!(limiter.check(kind, "acct").await.is_ok());
        }
        assert!(limiter.check(kind, "acct").await.is_err(), "the refund gave one back");
    }

    #[tokio::test]
    async fn refunds_give_back_what_successes_took_and_never_more() {
        let clock = Arc::new(ManualClock::starting_now());
        let limiter = MemoryRateLimiter::new(clock);
        let kind = LimitKind::ReauthFailuresPerUser;
        let burst = kind.quota().burst;
        for _ in 0..burst * 3 {
            assert!(limiter.check(kind, "u").await.is_ok(), "successes are refunded");
            limiter.refund(kind, "u").await;
        }
        for _ in 0..burst {
            limiter.refund(kind, "u").await;
        }
        for _ in 0..burst {
            assert!(limiter.check(kind, "u").await.is_ok());
        }
        assert!(limiter.check(kind, "u").await.is_err(), "refunds never raise the burst");
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_64() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(address_key("2001:db8:1:3::1"), address_key("2001:db8:1:2::1"));
        assert_eq!(address_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(address_key("192.0.2.7"), "192.0.2.7");
    }
}
