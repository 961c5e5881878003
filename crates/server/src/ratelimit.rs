//! Rate limits shared by every instance, counted in Redis (`LATCHKEY_REDIS_URL`).
//!
//! The quotas are the core's ([`LimitKind::quota`]); this only counts, each operation one Lua
//! script run atomically by Redis on Redis's own clock (so instances with skewed clocks agree).
//! A bucket key holds the GCRA "theoretical arrival time" in milliseconds and expires when the
//! bucket is full again; a window key holds its count and expires when the window closes. Keys are SHA-256 hashes of the limited identifier, so Redis never holds an
//! email address. If Redis cannot be reached, attempts are allowed and the failure is logged:
//! an outage of the limiter must not lock every user out.

use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::limits::{LimitKind, RateLimiter, Shape};
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

/// Gives one GCRA unit back. KEYS[1]: the bucket; ARGV[1]: emission interval in ms.
const GCRA_REFUND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
tat = tat - tonumber(ARGV[1])
if tat <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1)
return 0
";

/// Fixed window. KEYS[1]: the window; ARGV[1]: its length in ms; ARGV[2]: the count allowed.
/// Returns 0 when allowed, else the milliseconds until the window closes.
const WINDOW: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0
";

/// Gives one window unit back. KEYS[1]: the window.
const WINDOW_REFUND: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]))
if n and n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// A [`RateLimiter`] on Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    gcra: redis::Script,
    gcra_refund: redis::Script,
    window: redis::Script,
    window_refund: redis::Script,
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
        Ok(Self {
            connection,
            gcra: redis::Script::new(GCRA),
            gcra_refund: redis::Script::new(GCRA_REFUND),
            window: redis::Script::new(WINDOW),
            window_refund: redis::Script::new(WINDOW_REFUND),
            prefix: "latchkey:rl:".into(),
        })
    }

    fn bucket(&self, kind: LimitKind, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}:{hex}", self.prefix, kind.as_str())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, kind: LimitKind, key: &str) -> Result<(), Duration> {
        let quota = kind.quota();
        let (script, length) = match quota.shape {
            Shape::Bucket => (&self.gcra, quota.interval()),
            Shape::Window => (&self.window, quota.period),
        };
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> =
            script.key(self.bucket(kind, key)).arg(millis(length)).arg(quota.burst).invoke_async(&mut connection).await;
        match result {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))),
            Err(e) => {
                tracing::warn!(error = %e, limit = kind.as_str(), "rate limiter unavailable; allowing the attempt");
                Ok(())
            }
        }
    }

    async fn refund(&self, kind: LimitKind, key: &str) {
        let quota = kind.quota();
        let mut invocation = match quota.shape {
            Shape::Bucket => self.gcra_refund.key(self.bucket(kind, key)),
            Shape::Window => self.window_refund.key(self.bucket(kind, key)),
        };
        invocation.arg(millis(quota.interval()));
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> = invocation.invoke_async(&mut connection).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, limit = kind.as_str(), "rate limiter unavailable; refund dropped");
        }
    }
}
