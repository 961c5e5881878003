//! Conversions between [`OffsetDateTime`] and the integer forms used on the wire and in storage.

use time::OffsetDateTime;

/// Milliseconds since the Unix epoch (the storage form of every timestamp).
pub fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant `ms` milliseconds after the Unix epoch (out-of-range values clamp to the epoch).
pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Whole seconds since the Unix epoch (JWT `NumericDate`, RFC 7519 section 2).
pub fn seconds(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}
