//! What a rotation says: the Key condition's note, its events, and the
//! status after a trial that brought no token. Pure: the words and the
//! times come from values.

use std::time::SystemTime;

use kube::runtime::events::Event;

use crate::checked_time::{after, after_all};
use crate::controller::decide::events::Happened;
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::rotation::{self, KeyState, Trigger};
use crate::controller::steps::rotate::{Context, Rotation, Waits, waits};
use crate::crd::{KeyRotationStatus, ROTATE_KEY_ANNOTATION, SmartBackendClientStatus};
use crate::smart::SigningKey;

/// After a trial that brought no token: the old key keeps signing, and
/// the next key is tried again after a backoff. A refusal by the server
/// (it does not know the key yet) and any other failure (the server down,
/// an answer that is not OAuth) back off alike; the event says which.
///
/// Pure: returns the rotation as it stands after the failed trial (its
/// status with the refusal counted, when to try again, the event).
pub(in crate::controller) fn not_accepted(
    rotation: &Rotation,
    previous: &SmartBackendClientStatus,
    next: &SigningKey,
    failure: &Failure,
    now: SystemTime,
) -> NotAccepted {
    let before = previous.key_rotation.clone().unwrap_or_default();
    let refusals = before.refused_trials.saturating_add(1);
    let again_at = crate::controller::decide::secret_data::ceil_second(after(
        now,
        rotation::trial_retry(refusals),
    ));
    let again = crate::controller::decide::secret_data::rfc3339(again_at);
    let mut status = rotation.status.clone().unwrap_or_default();
    status.refused_trials = refusals;
    status.next_trial_time = Some(again.clone());
    let why = crate::smart::http::bounded_text(&failure.message, MAX_EVENT_CAUSE);
    let event = if is_refusal(failure.reason) {
        Happened::NextKeyRefused.event(
            format!(
                "the server refused a token request signed with the next key (kid {}): {why}; the current key keeps signing, and the next key is tried again at {again}. If the EHR holds a copy of the JWKS rather than its URL, register the new JWKS (status.publicJwks)",
                next.kid(),
            ),
        )
    } else {
        Happened::NextKeyTrialFailed.event(
            format!(
                "a token request signed with the next key (kid {}) brought no token: {why}; the current key keeps signing, and the next key is tried again at {again}",
                next.kid(),
            ),
        )
    };
    NotAccepted {
        status,
        again: again_at,
        event,
    }
}

/// The rotation after a trial that brought no token.
pub(in crate::controller) struct NotAccepted {
    pub status: KeyRotationStatus,
    /// When the next key is tried again.
    pub again: SystemTime,
    pub event: Event,
}

/// The most of a failure's message an event repeats, in characters: the
/// API server drops an event whose note is over 1 KiB.
const MAX_EVENT_CAUSE: usize = 160;

/// Whether a failed trial means the server does not know the next key (as
/// opposed to the server being down).
pub(super) fn is_refusal(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::InvalidClient
            | Reason::UnauthorizedClient
            | Reason::AwaitingRegistration
            | Reason::InvalidGrant
    )
}

/// What the Key condition adds during a rotation.
fn note(ring: &Ring, status: &KeyRotationStatus, timing: &Waits) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(next) = ring.find(KeyState::Next) {
        let served = status
            .next_key_served
            .as_ref()
            .filter(|s| s.kid == next.kid)
            .and_then(|s| crate::controller::decide::secret_data::parse_rfc3339(&s.since))
            .map_or(next.since, |s| s.max(next.since));
        let from = after_all(served, &[timing.jwks_max_age, timing.margin]);
        let mut part = format!(
            "rotating: the next key (kid {}) is published and is tried from {}",
            next.kid,
            crate::controller::decide::secret_data::rfc3339(from)
        );
        if status.refused_trials > 0 {
            part = format!(
                "rotating: the server refused the next key (kid {}) {} time(s); the current key keeps signing; if the EHR holds a copy of the JWKS rather than its URL, register the new one (status.publicJwks); tried again at {}",
                next.kid,
                status.refused_trials,
                status
                    .next_trial_time
                    .as_deref()
                    .unwrap_or("once the backoff ends")
            );
        }
        parts.push(part);
    }
    if let Some(retiring) = ring.find(KeyState::Retiring) {
        let gone = after_all(
            retiring.since,
            &[timing.assertion_lifetime, timing.jwks_max_age],
        );
        parts.push(format!(
            "the previous key (kid {}) stays published until {}",
            retiring.kid,
            crate::controller::decide::secret_data::rfc3339(gone)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

pub(super) fn why(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Schedule => "spec.signing.rotation.every has passed".into(),
        Trigger::Requested(value) => format!("{ROTATE_KEY_ANNOTATION}={value} asked for it"),
        Trigger::Algorithm(algorithm) => format!(
            "{algorithm} is now wanted (the server's list or spec.signing.algorithm changed)"
        ),
    }
}

/// A new next key, or one accepted: earlier refusals no longer count.
pub(super) fn forget_refusals(status: &mut KeyRotationStatus) {
    status.refused_trials = 0;
    status.next_trial_time = None;
}

/// What the Key condition says about a generated key's rotation, with the
/// rotation's status as it stands.
pub(in crate::controller) fn current_note(
    ctx: &Context,
    status: Option<&KeyRotationStatus>,
    ring: &Ring,
) -> Option<String> {
    let status = status.cloned().unwrap_or_default();
    note(ring, &status, &waits(ctx))
}
