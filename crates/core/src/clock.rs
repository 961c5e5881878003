//! Time, injected: [`Auth`](crate::Auth) never reads the system clock directly, so expiry is
//! tested by moving a [`ManualClock`] instead of sleeping.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time (UTC).
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// The current time, truncated to whole milliseconds (the resolution of stored timestamps,
    /// so what a response shows equals what is stored).
    fn now(&self) -> OffsetDateTime {
        crate::time_util::from_millis(crate::time_util::millis(OffsetDateTime::now_utc()))
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(start))
    }

    /// A clock stopped at the current system time, truncated to whole milliseconds (the
    /// resolution of stored timestamps).
    pub fn starting_now() -> Self {
        Self::new(crate::time_util::from_millis(crate::time_util::millis(OffsetDateTime::now_utc())))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
