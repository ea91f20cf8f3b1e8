//! Wall-clock timestamps as stored in records.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (UTC). Stored as 8 bytes in records.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current wall-clock time (the epoch if the clock is before it).
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self(nanos)
    }

    /// A timestamp from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// RFC 3339 with nanoseconds, UTC, as Vault prints times:
    /// `2026-11-23T10:55:00.123456789Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_nanos(self.to_system_time()).to_string()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_vault() {
        let t = Timestamp::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123456789Z");
        assert!(Timestamp::now() > t);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).as_nanos(),
            1_700_000_001_123_456_789
        );
        assert_eq!(
            Timestamp::from_nanos(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp::from_nanos(u64::MAX)
        );
    }
}
