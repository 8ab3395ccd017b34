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
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::READY && c.status == "True");
    if !ready {
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
