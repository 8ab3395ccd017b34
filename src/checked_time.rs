//! Time sums that cannot panic. `SystemTime + Duration` panics on overflow,
//! and a duration a tenant writes (`rotation.every`) or a server returns can
//! be as large as the type allows: one such sum in a reconcile once stopped
//! the controllers for every client. Every sum of a time and a duration that
//! comes from outside goes through [`after`], which saturates at [`latest`],
//! a time every formatter used here can still write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-30T00:00:00Z, in seconds since the epoch: past any plan the
/// operator makes, and within the range of RFC 3339 (four-digit years), so
/// a status can always show it.
const LATEST_SECS: u64 = 253_402_128_000;

/// [`LATEST_SECS`] as a time.
pub fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LATEST_SECS)
}

/// `t + d`, or [`latest`] when that is later or does not exist.
pub fn after(t: SystemTime, d: Duration) -> SystemTime {
    let latest = latest();
    t.checked_add(d).map_or(latest, |sum| sum.min(latest))
}

/// `t + a + b + ...`, saturating like [`after`].
pub fn after_all(t: SystemTime, durations: &[Duration]) -> SystemTime {
    durations.iter().fold(t, |t, d| after(t, *d))
}

/// `t - d`, or the epoch when that is earlier.
pub fn before(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d)
        .map_or(UNIX_EPOCH, |diff| diff.max(UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_past_the_end_of_time_is_the_latest_time_not_a_panic() {
        let now = SystemTime::now();
        assert_eq!(after(now, Duration::MAX), latest());
        assert_eq!(after(now, Duration::from_secs(u64::MAX / 2)), latest());
        assert_eq!(
            after_all(now, &[Duration::MAX, Duration::MAX, Duration::from_secs(1)]),
            latest()
        );
        assert_eq!(after(latest(), Duration::from_secs(1)), latest());
    }

    #[test]
    fn an_ordinary_sum_is_exact() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            after(t, Duration::from_secs(60)),
            t + Duration::from_secs(60)
        );
        assert_eq!(
            after_all(t, &[Duration::from_secs(60), Duration::from_secs(5)]),
            t + Duration::from_secs(65)
        );
        assert_eq!(
            before(t, Duration::from_secs(60)),
            t - Duration::from_secs(60)
        );
        assert_eq!(before(t, Duration::MAX), UNIX_EPOCH);
    }

    #[test]
    fn the_latest_time_can_be_written_as_rfc3339() {
        let written = crate::controller::decide::secret_data::rfc3339(latest());
        assert_eq!(written, "9999-12-30T00:00:00Z");
        assert_eq!(
            humantime::format_rfc3339_seconds(latest()).to_string(),
            written
        );
    }
}
