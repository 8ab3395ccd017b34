//! When to refresh a token and how long to wait after a failure. Pure
//! functions of time, so every rule here is unit-tested without a clock.

use std::time::{Duration, SystemTime};

use crate::controller::decide::reason::Class;
use crate::controller::model::settings::Timing;

/// A mounted Secret reaches a pod up to kubelet's sync period plus its
/// cache delay after it is written: about two minutes in the worst case.
pub const PROPAGATION_LEAD: Duration = Duration::from_secs(150);

/// How long before expiry to refresh: `refresh_before` if set, otherwise
/// half the lifetime but at least [`PROPAGATION_LEAD`] where the lifetime
/// leaves room for it after the minimum interval.
pub fn refresh_lead(
    lifetime: Duration,
    refresh_before: Option<Duration>,
    timing: &Timing,
) -> Duration {
    if let Some(lead) = refresh_before {
        return lead.min(lifetime);
    }
    let room = lifetime.saturating_sub(timing.min_refresh_interval);
    (lifetime / 2).max(PROPAGATION_LEAD.min(room))
}

/// The moment to refresh a token issued at `issued_at` that expires at
/// `expires_at`. `jitter` in [0, 1) moves it earlier by up to a tenth of
/// the lead (at most 30 s) so that clients created together spread out.
/// Never earlier than `issued_at + min_refresh_interval`.
pub fn refresh_at(
    issued_at: SystemTime,
    expires_at: SystemTime,
    refresh_before: Option<Duration>,
    timing: &Timing,
    jitter: f64,
) -> SystemTime {
    let lifetime = expires_at
        .duration_since(issued_at)
        .unwrap_or(Duration::ZERO);
    let lead = refresh_lead(lifetime, refresh_before, timing);
    let spread = (lead / 10)
        .min(Duration::from_secs(30))
        .mul_f64(jitter.clamp(0.0, 1.0));
    let at = expires_at
        .checked_sub(lead.saturating_add(spread))
        .unwrap_or(issued_at);
    at.max(crate::checked_time::after(
        issued_at,
        timing.min_refresh_interval,
    ))
}

/// `base` doubled for each failure after the first, at most `cap`.
fn doubled(base: Duration, failures: u32, cap: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exponent).min(cap)
}

/// Exponential backoff for the n-th consecutive transient failure (n ≥ 1),
/// capped, with ±20 % jitter from `jitter` in [0, 1). A server's
/// Retry-After is honoured (up to `retry_after_max`): never retry sooner.
pub fn backoff(
    failures: u32,
    retry_after: Option<Duration>,
    timing: &Timing,
    jitter: f64,
) -> Duration {
    let raw = doubled(timing.backoff_base, failures, timing.backoff_max);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    let delay = raw.mul_f64(factor).min(timing.backoff_max);
    match retry_after {
        Some(wait) => delay.max(wait.min(timing.retry_after_max)),
        None => delay,
    }
}

/// The first retry after a reconcile that ended in an error of the
/// operator's own (the API server refused the status write, say).
pub const ERROR_RETRY: Duration = Duration::from_secs(2);

/// When to look again after the `failures`-th reconcile in a row that
/// ended in an error of the operator's own: 2, 4, 8 ... seconds, with
/// ±20 % jitter, at most the backoff ceiling. A status the API server keeps
/// refusing is not patched every 2 s forever.
pub fn after_error(failures: u32, timing: &Timing, jitter: f64) -> Duration {
    let raw = doubled(ERROR_RETRY, failures, timing.backoff_max);
    raw.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
        .min(timing.backoff_max)
}

/// The error retry, never later than halfway to the current token's
/// expiry: after an API-server outage has counted many errors in a row, a
/// client whose token expires soon is looked at again before it does.
/// With no token known, or one already expired, the backoff stands.
pub fn error_retry_before_expiry(backoff: Duration, token_left: Option<Duration>) -> Duration {
    match token_left {
        Some(left) if !left.is_zero() => backoff.min((left / 2).max(Duration::from_secs(1))),
        _ => backoff,
    }
}

/// When to look again after a failure of `class`, the `failures`-th in a
/// row: permanent problems wait for a change (with a slow safety retry),
/// transient ones back off (never sooner than `Retry-After`), and waiting
/// ones back off quietly, never more often than the refresh floor.
pub fn after_failure(
    class: Class,
    failures: u32,
    retry_after: Option<Duration>,
    timing: &Timing,
    jitter: f64,
) -> Duration {
    match class {
        Class::Permanent => timing.permanent_retry,
        Class::Transient => backoff(failures, retry_after, timing, jitter),
        Class::Waiting | Class::Ok => backoff(failures, None, timing, jitter)
            .max(timing.min_refresh_interval)
            .min(timing.backoff_max.max(timing.min_refresh_interval)),
    }
}

/// When to ask again for a client the server does not know yet, after
/// the `failures`-th such answer in a row: 2, 4, 8 ... minutes (by
/// default), at most 30, with ±10 % jitter; so at most three requests in
/// its first ten minutes.
pub fn awaiting_registration(failures: u32, timing: &Timing, jitter: f64) -> Duration {
    let raw = doubled(
        timing.registration_retry,
        failures,
        timing.registration_retry_max,
    );
    raw.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0))
        .min(timing.registration_retry_max)
        .max(timing.min_refresh_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_retry_never_waits_past_half_the_tokens_remaining_life() {
        let s = Duration::from_secs;
        let cases = [
            // (backoff, token left, retry)
            (s(64), Some(s(30)), s(15)),
            (s(64), Some(s(200)), s(64)),
            (s(4), Some(s(30)), s(4)),
            (s(64), Some(Duration::from_millis(500)), s(1)),
            (s(64), Some(Duration::ZERO), s(64)),
            (s(64), None, s(64)),
        ];
        for (backoff, left, retry) in cases {
            assert_eq!(
                error_retry_before_expiry(backoff, left),
                retry,
                "{backoff:?} {left:?}"
            );
        }
    }

    #[test]
    fn errors_of_the_operators_own_back_off_from_two_seconds_to_the_ceiling() {
        let t = Timing::default();
        let middle: Vec<u64> = (1..=10)
            .map(|n| after_error(n, &t, 0.5).as_secs())
            .collect();
        assert_eq!(middle, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        for n in [0, 1, 7, u32::MAX] {
            for jitter in [-1.0, 0.0, 0.999, 7.0] {
                let wait = after_error(n, &t, jitter);
                assert!(wait >= ERROR_RETRY.mul_f64(0.8), "{n} {jitter}: {wait:?}");
                assert!(wait <= t.backoff_max, "{n} {jitter}: {wait:?}");
            }
        }
    }

    #[test]
    fn a_client_awaiting_registration_asks_at_most_three_times_in_ten_minutes() {
        let t = Timing::default();
        for jitter in [0.0, 0.5, 0.999] {
            // The first request at 0, then each retry after its wait.
            let mut at = Duration::ZERO;
            let mut requests = vec![at];
            for failures in 1..=12 {
                at += awaiting_registration(failures, &t, jitter);
                requests.push(at);
            }
            let first_ten = requests
                .iter()
                .filter(|r| **r < Duration::from_secs(600))
                .count();
            assert!(first_ten <= 3, "{first_ten} requests: {requests:?}");
            // Slower after, and never silent for more than the cap.
            assert!(awaiting_registration(30, &t, jitter) <= t.registration_retry_max);
            assert!(awaiting_registration(30, &t, jitter) >= Duration::from_secs(1500));
        }
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn five_minute_tokens_refresh_at_half_life_which_is_the_propagation_lead() {
        let t = Timing::default();
        assert_eq!(refresh_at(at(0), at(300), None, &t, 0.0), at(150));
    }

    #[test]
    fn long_tokens_refresh_at_half_life() {
        let t = Timing::default();
        assert_eq!(refresh_at(at(0), at(3600), None, &t, 0.0), at(1800));
    }

    #[test]
    fn short_tokens_keep_150s_of_lead_when_the_lifetime_allows() {
        let t = Timing::default();
        // 200 s: half would leave 100 s; 150 s of lead still leaves 50 s ≥ 30 s.
        assert_eq!(refresh_at(at(0), at(200), None, &t, 0.0), at(50));
        // 60 s: no room for 150 s; half the lifetime.
        assert_eq!(refresh_at(at(0), at(60), None, &t, 0.0), at(30));
    }

    #[test]
    fn tiny_lifetimes_never_refresh_faster_than_the_floor() {
        let t = Timing::default();
        assert_eq!(refresh_at(at(0), at(10), None, &t, 0.0), at(30));
    }

    #[test]
    fn refresh_before_overrides_the_default_lead() {
        let t = Timing::default();
        assert_eq!(
            refresh_at(at(0), at(3600), Some(Duration::from_secs(600)), &t, 0.0),
            at(3000)
        );
    }

    #[test]
    fn jitter_only_moves_refresh_earlier_and_by_a_bounded_amount() {
        let t = Timing::default();
        let base = refresh_at(at(0), at(3600), None, &t, 0.0);
        let jittered = refresh_at(at(0), at(3600), None, &t, 0.999);
        assert!(jittered <= base);
        assert!(base.duration_since(jittered).unwrap() <= Duration::from_secs(30));
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let t = Timing::default();
        let mid = 0.5; // factor 1.0
        assert_eq!(backoff(1, None, &t, mid), Duration::from_secs(5));
        assert_eq!(backoff(2, None, &t, mid), Duration::from_secs(10));
        assert_eq!(backoff(4, None, &t, mid), Duration::from_secs(40));
        assert_eq!(backoff(30, None, &t, mid), Duration::from_secs(300));
        assert!(backoff(30, None, &t, 0.999) <= t.backoff_max);
        assert!(backoff(1, None, &t, 0.0) >= Duration::from_secs(4));
    }

    #[test]
    fn retry_after_is_never_undercut_but_is_bounded() {
        let t = Timing::default();
        assert_eq!(
            backoff(1, Some(Duration::from_secs(120)), &t, 0.5),
            Duration::from_secs(120)
        );
        assert_eq!(
            backoff(1, Some(Duration::from_secs(86_400)), &t, 0.5),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn each_class_of_failure_has_its_own_retry() {
        let t = Timing::default();
        let wait = Some(Duration::from_secs(600));
        assert_eq!(
            after_failure(Class::Permanent, 1, None, &t, 0.5),
            t.permanent_retry
        );
        assert_eq!(
            after_failure(Class::Transient, 1, wait, &t, 0.5),
            Duration::from_secs(600)
        );
        assert_eq!(
            after_failure(Class::Transient, 2, None, &t, 0.5),
            Duration::from_secs(10)
        );
        // Waiting ignores Retry-After, starts at the refresh floor and
        // settles at the backoff cap.
        assert_eq!(
            after_failure(Class::Waiting, 1, wait, &t, 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            after_failure(Class::Waiting, 4, None, &t, 0.5),
            Duration::from_secs(40)
        );
        assert_eq!(
            after_failure(Class::Waiting, 9, None, &t, 0.5),
            t.backoff_max
        );
    }
}
