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
    ///
    /// Every read answer and audit line prints one or two of these, so the
    /// date is computed directly (days to civil date, Hinnant's algorithm)
    /// rather than through `fmt`: a tenth of the instructions. The tests
    /// check it against humantime.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let sod = secs % 86_400;
        let mut out = [0u8; 30];
        put_digits(&mut out[0..4], year);
        out[4] = b'-';
        put_digits(&mut out[5..7], month);
        out[7] = b'-';
        put_digits(&mut out[8..10], day);
        out[10] = b'T';
        put_digits(&mut out[11..13], sod / 3600);
        out[13] = b':';
        put_digits(&mut out[14..16], sod / 60 % 60);
        out[16] = b':';
        put_digits(&mut out[17..19], sod % 60);
        out[19] = b'.';
        put_digits(&mut out[20..29], nanos);
        out[29] = b'Z';
        // ASCII by construction.
        std::str::from_utf8(&out).map_or_else(|_| String::new(), str::to_owned)
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes the low `out.len()` decimal digits of `n`, zero-padded.
fn put_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
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
    fn rfc3339_agrees_with_humantime_from_1970_to_the_end_of_u64() {
        let humantime = |n: u64| {
            humantime::format_rfc3339_nanos(Timestamp::from_nanos(n).to_system_time()).to_string()
        };
        let mut edges = vec![
            0,
            u64::MAX,
            951_782_400_000_000_000,   // 2000-02-29
            4_107_542_400_000_000_000, // 2100-03-01
            1_709_164_799_999_999_999, // 2024-02-28T23:59:59.999999999
        ];
        // A fixed pseudo-random walk over the whole range.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            edges.push(x);
            edges.push(x % 4_102_444_800_000_000_000); // before 2100
        }
        for n in edges {
            assert_eq!(Timestamp::from_nanos(n).to_rfc3339(), humantime(n), "{n}");
        }
    }

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
