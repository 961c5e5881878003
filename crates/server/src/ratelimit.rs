//! Rate limits shared by every instance, counted in Redis (`LATCHKEY_REDIS_URL`).
//!
//! The quotas are the core's ([`LimitKind::quota`]); this only counts. Each key holds the
//! GCRA "theoretical arrival time" in milliseconds of Redis's own clock (so instances with
//! skewed clocks agree), updated atomically by one Lua script, and expires when its bucket is
//! full again. Keys are SHA-256 hashes of the limited identifier, so Redis never holds an
//! email address. If Redis cannot be reached, attempts are allowed and the failure is logged:
//! an outage of the limiter must not lock every user out.

use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::limits::{LimitKind, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

/// GCRA in one round trip. KEYS[1]: the bucket; ARGV[1]: emission interval in ms (period /
/// burst); ARGV[2]: burst. Returns 0 when allowed, else the milliseconds to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1)
return 0
";

/// A [`RateLimiter`] on Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to `url` (`redis://host:port/db` or `rediss://...`). Keys start with
    /// `latchkey:rl:`.
    ///
    /// # Errors
    /// A message when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("LATCHKEY_REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("LATCHKEY_REDIS_URL: cannot connect: {e}"))?;
        Ok(Self { connection, script: redis::Script::new(GCRA), prefix: "latchkey:rl:".into() })
    }

    fn bucket(&self, kind: LimitKind, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}:{hex}", self.prefix, kind.as_str())
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration> {
        let quota = kind.quota();
        let interval_ms = (quota.period.as_millis() / u128::from(quota.burst.max(1))).max(1);
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> = self
            .script
            .key(self.bucket(kind, key))
            .arg(u64::try_from(interval_ms).unwrap_or(u64::MAX))
            .arg(quota.burst)
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))),
            Err(e) => {
                tracing::warn!(error = %e, limit = kind.as_str(), "rate limiter unavailable; allowing the attempt");
                Ok(())
            }
        }
    }
}
