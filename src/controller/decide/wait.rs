//! When a reconcile has nothing to do: the outcome of the last one still
//! holds (nothing it depends on changed and the next refresh is ahead), or
//! the backoff after a failure has not run out. Pure: the caller passes the
//! time and what the watches show.

use std::time::{Duration, SystemTime};

use kube::api::ObjectMeta;

use crate::controller::decide::conditions;
use crate::controller::decide::secret_data;
use crate::controller::model::memory::{ClientMemory, Settled};
use crate::controller::model::target::Target;
use crate::crd::{REFRESH_REQUESTED_ANNOTATION, SmartBackendClientStatus};

/// The outcome worth remembering, from a status just composed with a good
/// token: Ready, and the next refresh known. It holds until that refresh,
/// or until the rotation's next look (`revisit`) when that comes first.
pub(in crate::controller) fn settled(
    status: &SmartBackendClientStatus,
    revisit: Option<SystemTime>,
    reconciled: &ObjectMeta,
    own_secrets: Vec<(String, Vec<String>)>,
) -> Option<Settled> {
    if !conditions::is_ready(&status.conditions) {
        return None;
    }
    Some(Settled {
        generation: reconciled.generation,
        requests: Settled::requests(reconciled),
        own_secrets,
        until: secret_data::parse_rfc3339(status.next_refresh_time.as_deref()?)?
            .min(revisit.unwrap_or(crate::checked_time::latest())),
    })
}

/// When nothing the operator reads changed since the last settled outcome
/// (see [`Settled`]) and the next refresh is still ahead: the wait until it,
/// without an API request. Anything else is a full reconcile (and the
/// settled outcome is dropped). `version_of` gives an own Secret's resource
/// version as its watch shows it.
pub(in crate::controller) fn settled_wait(
    memory: &mut ClientMemory,
    meta: &ObjectMeta,
    now: SystemTime,
    version_of: impl Fn(&str) -> Option<String>,
) -> Option<Duration> {
    let settled = memory.take_settled()?;
    let unchanged = settled.generation == meta.generation
        && settled.requests == Settled::requests(meta)
        && settled
            .own_secrets
            .iter()
            .all(|(name, versions)| version_of(name).is_some_and(|v| versions.contains(&v)));
    let wait = settled
        .until
        .duration_since(now)
        .ok()
        .filter(|w| !w.is_zero())?;
    if !unchanged {
        return None;
    }
    memory.settle(Some(settled));
    Some(wait)
}

/// How long after a term starts every client has had its first look.
pub(in crate::controller) const FIRST_LOOK_SPREAD: Duration = Duration::from_secs(60);

/// A new term (a replica just became leader, or leads again after losing
/// the Lease) knows nothing of any client, and kube-runtime hands it every
/// client at once, in list order. With short tokens, the ones due soonest
/// could wait behind hundreds of others and expire. So the first look at a
/// client whose status shows it settled (Ready, this generation, no
/// failure, every request annotation handled) waits for its turn; kube-runtime
/// starts the waiting looks earliest first, which makes them a queue in
/// the order of urgency:
/// - a refresh still ahead at the term's start: spread over
///   [`FIRST_LOOK_SPREAD`] in the order of the planned refreshes, and never
///   past its own;
/// - a refresh already due (the term began late, after an outage): in the
///   order of the tokens' expiry, within a quarter of the time left and at
///   most [`OVERDUE_SPREAD`].
///
/// Anything else, or a client already looked at this term, is looked at
/// now (`None`).
pub(in crate::controller) fn first_look_wait(
    meta: &ObjectMeta,
    status: Option<&SmartBackendClientStatus>,
    term_started: SystemTime,
    now: SystemTime,
) -> Option<Duration> {
    let status = status?;
    let ready = conditions::is_ready(&status.conditions);
    let rotation = status.key_rotation.as_ref();
    let handled = [
        status.handled_refresh_request.as_deref(),
        status.handled_key_regeneration.as_deref(),
        rotation.and_then(|r| r.handled_request.as_deref()),
    ];
    let pending = Settled::requests(meta)
        .iter()
        .zip(handled)
        .any(|(asked, handled)| asked.is_some() && asked.as_deref() != handled);
    if !ready
        || pending
        || status.consecutive_failures != 0
        || status.observed_generation != meta.generation
    {
        return None;
    }
    let mut due = secret_data::parse_rfc3339(status.next_refresh_time.as_deref()?)?;
    if let Some(trial) = rotation.and_then(|r| r.next_trial_time.as_deref()) {
        due = due.min(secret_data::parse_rfc3339(trial)?);
    }
    let look = match due.duration_since(term_started) {
        // d from the term's start to the refresh: the look at
        // SPREAD * d / (d + SPREAD), before the refresh and within the spread.
        Ok(d) => compress(d, FIRST_LOOK_SPREAD, 1.0),
        // e from the term's start to the expiry: at e * O / (4 O + e).
        Err(_) => {
            let expires = secret_data::parse_rfc3339(status.token_expires_at.as_deref()?)?;
            let e = expires.duration_since(term_started).ok()?;
            compress(e, OVERDUE_SPREAD, 4.0)
        }
    };
    crate::checked_time::after(term_started, look)
        .duration_since(now)
        .ok()
        .filter(|w| !w.is_zero())
}

/// How long after a term starts the overdue clients have had their first
/// look at the latest.
pub(in crate::controller) const OVERDUE_SPREAD: Duration = Duration::from_secs(10);

/// `x * bound / (share * bound + x)`: grows with `x`, and stays below both
/// `x / share` and `bound`.
fn compress(x: Duration, bound: Duration, share: f64) -> Duration {
    let (x, bound) = (x.as_secs_f64(), bound.as_secs_f64());
    Duration::from_secs_f64(x * bound / (share * bound + x))
}

/// What ends a backoff early besides the resource itself.
#[derive(Clone, Copy, Debug)]
pub(in crate::controller) struct Backoff {
    pub generation: Option<i64>,
    pub now: SystemTime,
    /// The client was woken because its namespace just granted the operator
    /// its Secrets.
    pub just_granted: bool,
}

/// Time left before the retry that the last failure scheduled, if that
/// failure is still current (same generation, no new refresh request, no
/// new grant).
pub(in crate::controller) fn backoff_remaining(
    memory: &ClientMemory,
    target: &Target<'_>,
    previous: &SmartBackendClientStatus,
    backoff: Backoff,
) -> Option<Duration> {
    if backoff.just_granted
        || previous.consecutive_failures == 0
        || previous.observed_generation != backoff.generation
    {
        return None;
    }
    if pending_refresh_request(memory.recall().handled_refresh, target, previous).is_some() {
        return None;
    }
    let rotations = previous.key_rotation.as_ref();
    let handled = rotations.and_then(|r| r.handled_request.as_deref());
    let rotate = target.annotation(crate::crd::ROTATE_KEY_ANNOTATION);
    if rotate.is_some() && rotate != handled {
        return None;
    }
    // A status written before nextRetryTime existed kept the retry in
    // nextRefreshTime.
    let retry = previous.next_retry_time.as_ref();
    let retry_at = secret_data::parse_rfc3339(retry.or(previous.next_refresh_time.as_ref())?)?;
    retry_at
        .duration_since(backoff.now)
        .ok()
        .filter(|d| !d.is_zero())
}

/// The refresh-requested-at value not yet acted on, if any: compared with
/// the status and with this process's own memory, since the watch cache can
/// lag behind our last status write.
pub(in crate::controller) fn pending_refresh_request<'a>(
    handled_here: Option<&str>,
    target: &'a Target<'_>,
    previous: &SmartBackendClientStatus,
) -> Option<&'a str> {
    target.annotation(REFRESH_REQUESTED_ANNOTATION).filter(|v| {
        Some(*v) != previous.handled_refresh_request.as_deref() && Some(*v) != handled_here
    })
}

#[cfg(test)]
mod tests;
