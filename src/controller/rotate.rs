//! Key rotation carried out. The plan ([`rotation::plan`]) reads the key
//! list stored in the generated key Secret; this module does the one step
//! it names: store a new next key, drop a retired one, or hand the next key
//! to the token step for a trial, and after an accepted trial make it the
//! signing key. Every change is one write of the key Secret at the version
//! it was read at, so a crash at any point resumes from what is stored, and
//! two writers cannot both succeed.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

use super::draft::Draft;
use super::key_ring::Ring;
use super::keys::{self, ResolvedKey, api_failure, failure};
use super::reason::{Failure, Reason};
use super::rotation::{self, KeyState, Step, Trigger};
use super::validate::{KeySource, ValidSpec};
use super::{ClientMemory, Context, Target};
use crate::checked_time::{after, after_all};
use crate::crd::{
    FIELD_MANAGER, KeyRotationStatus, ROTATE_KEY_ANNOTATION, SmartBackendClientStatus,
};
use crate::smart::{PrivateKey, SigningAlgorithm, SigningKey};

mod referenced;

/// How long a rotation waits between its steps.
pub(super) struct Waits {
    pub jwks_max_age: Duration,
    pub margin: Duration,
    pub assertion_lifetime: Duration,
}

pub(super) fn waits(ctx: &Context) -> Waits {
    Waits {
        jwks_max_age: ctx.settings.rotation.jwks_max_age,
        margin: ctx.settings.rotation.margin,
        assertion_lifetime: super::exchange::assertion_lifetime(&ctx.settings.clocks),
    }
}

/// Where the client's keys stand after this reconcile's rotation step.
pub(super) struct Rotation {
    pub ring: Ring,
    /// The next key, when this reconcile's token request is its trial.
    pub trial: Option<SigningKey>,
    /// When the rotation wants to look again.
    pub revisit: Option<SystemTime>,
    /// What the Key condition says about the rotation.
    pub note: Option<String>,
}

/// What the rotation step reads besides the key.
pub(super) struct Observed<'a> {
    pub spec: &'a ValidSpec,
    pub previous: &'a SmartBackendClientStatus,
    pub preferred: SigningAlgorithm,
    pub server_algorithms: Option<&'a [String]>,
    pub now: SystemTime,
}

pub(super) async fn advance(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    observed: &Observed<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Rotation, Failure> {
    let Some(ring) = &key.ring else {
        return Ok(referenced::rotation(key, observed, &waits(ctx)));
    };
    let rotation_status = observed.previous.key_rotation.clone().unwrap_or_default();
    let mut requested = target.annotation(ROTATE_KEY_ANNOTATION);
    if observed.spec.kid.is_some()
        && requested.is_some_and(|r| rotation_status.handled_request.as_deref() != Some(r))
    {
        draft.events.push(warning(
            "KeyRotationNotPossible",
            "the rotate-key annotation was ignored: a rotation publishes two keys at once, which need different kids; remove spec.signing.kid to rotate",
        ));
        key_rotation(draft).handled_request = requested.map(str::to_string);
        requested = None;
    }
    let timing = waits(ctx);
    let inputs = rotation::Inputs {
        now: observed.now,
        every: observed.spec.rotate_every,
        requested,
        handled: rotation_status.handled_request.as_deref(),
        server_algorithms: observed.server_algorithms,
        preferred: observed.preferred,
        required: observed.spec.algorithm,
        trial_not_before: rotation_status
            .next_trial_time
            .as_deref()
            .and_then(super::secrets::parse_rfc3339),
        jwks_max_age: timing.jwks_max_age,
        margin: timing.margin,
        assertion_lifetime: timing.assertion_lifetime,
    };
    let step = rotation::plan(&ring.entries, &inputs);
    let mut rotation = Rotation {
        ring: ring.clone(),
        trial: None,
        revisit: None,
        note: None,
    };
    match step {
        Step::Steady { revisit } => rotation.revisit = revisit,
        Step::GenerateNext { algorithm, trigger } => {
            if observed.spec.kid.is_some() {
                return Err(failure(
                    Reason::KeyAlgorithmMismatch,
                    format!(
                        "the key signs with {} but {algorithm} is now wanted (the server's list or spec.signing.algorithm changed), and a rotation to a new key needs a kid per key: remove spec.signing.kid, or set spec.signing.algorithm: {}",
                        key.signing.algorithm(),
                        key.signing.algorithm()
                    ),
                ));
            }
            let rsa_bits = match &observed.spec.key {
                KeySource::Generated { rsa_bits, .. } => *rsa_bits,
                KeySource::Referenced { .. } => 0,
            };
            let (next, pem) = keys::generate(algorithm, rsa_bits).await?;
            let next = next
                .into_signing_key(Some(algorithm), None)
                .map_err(|e| failure(Reason::KeyGenerationFailed, e.to_string()))?;
            let grown =
                ring.with_next(next.public_jwk(), pem.into_bytes(), algorithm, observed.now);
            rotation.ring = store(ctx, target, key, ring, grown, None, memory).await?;
            if let Trigger::Requested(value) = &trigger {
                key_rotation(draft).handled_request = Some(value.clone());
            }
            forget_refusals(draft);
            draft.events.push(normal(
                "KeyRotationStarted",
                format!(
                    "{}: published the next {algorithm} key (kid {}) beside the signing key (kid {}); it signs once EHRs have fetched the JWKS again and the server accepts it",
                    why(&trigger),
                    next.kid(),
                    key.signing.kid()
                ),
            ));
            // From the stored (rounded-up) time, so the wait never comes short.
            let published = rotation.ring.find(KeyState::Next).map(|n| n.since);
            rotation.revisit =
                published.map(|since| after_all(since, &[timing.jwks_max_age, timing.margin]));
        }
        Step::AwaitPublication { until, .. } => rotation.revisit = Some(until),
        Step::AwaitTrial { until, .. } => rotation.revisit = Some(until),
        Step::Trial { kid } => {
            let next = ring.find(KeyState::Next).map(|e| e.algorithm);
            let pem = ring.next_pem.as_deref().zip(next);
            let (pem, algorithm) = pem.ok_or_else(|| {
                failure(
                    Reason::KeyInvalid,
                    format!("the next key {kid} has no private key"),
                )
            })?;
            let next = PrivateKey::parse(pem)
                .and_then(|k| k.into_signing_key(Some(algorithm), None))
                .map_err(|e| {
                    failure(
                        Reason::KeyInvalid,
                        format!("the next key {kid} cannot be used: {e}"),
                    )
                })?;
            rotation.trial = Some(next);
        }
        Step::DropRetiring { kid } => {
            let shrunk = ring.without(&kid);
            rotation.ring = store(ctx, target, key, ring, shrunk, None, memory).await?;
            // A rotation due meanwhile starts at once, not at the next refresh.
            rotation.revisit = match rotation::plan(&rotation.ring.entries, &inputs) {
                Step::Steady { revisit } => revisit,
                Step::AwaitPublication { until, .. } | Step::AwaitTrial { until, .. } => {
                    Some(until)
                }
                _ => Some(inputs.now),
            };
            draft.events.push(normal(
                "KeyRetired",
                format!("removed the retired key (kid {kid}) from the JWKS: nothing it signed is still valid"),
            ));
        }
    }
    rotation.note = current_note(ctx, draft, &rotation.ring);
    Ok(rotation)
}

/// After the server accepted a token request signed with the next key: it
/// signs from now on, and the old key retires.
pub(super) async fn promote(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    ring: &Ring,
    next: &SigningKey,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Ring, Failure> {
    let Some((promoted, pem)) = ring.promoted(SystemTime::now()) else {
        return Ok(ring.clone());
    };
    let ring = store(ctx, target, key, ring, promoted, Some(&pem), memory).await?;
    // Come back when the retiring key may go.
    let waits = waits(ctx);
    let retiring = ring.find(KeyState::Retiring).map(|r| r.since);
    draft.revisit =
        retiring.map(|since| after_all(since, &[waits.assertion_lifetime, waits.jwks_max_age]));
    let fingerprint = keys::fingerprint(&pem, Some(next.algorithm()), None);
    memory.key_promoted(fingerprint, next.clone());
    forget_refusals(draft);
    draft.events.push(normal(
        "KeyRotated",
        format!(
            "the server accepted the new key (kid {}), which signs from now on; the old key (kid {}) stays published until nothing it signed is valid",
            next.kid(),
            key.signing.kid()
        ),
    ));
    Ok(ring)
}

/// After a trial that brought no token: the old key keeps signing, and
/// the next key is tried again after a backoff. A refusal by the server
/// (it does not know the key yet) and any other failure (the server down,
/// an answer that is not OAuth) back off alike; the event says which.
pub(super) fn not_accepted(
    draft: &mut Draft,
    previous: &SmartBackendClientStatus,
    next: &SigningKey,
    failure: &Failure,
) {
    let before = previous.key_rotation.clone().unwrap_or_default();
    let refusals = before.refused_trials.saturating_add(1);
    let again = after(SystemTime::now(), rotation::trial_retry(refusals));
    let status = key_rotation(draft);
    status.refused_trials = refusals;
    let again = super::secrets::rfc3339_ceil(again);
    status.next_trial_time = Some(again.clone());
    draft.revisit = super::secrets::parse_rfc3339(&again);
    let why = crate::smart::http::bounded_text(&failure.message, MAX_EVENT_CAUSE);
    let event = if is_refusal(failure.reason) {
        warning(
            "NextKeyRefused",
            &format!(
                "the server refused a token request signed with the next key (kid {}): {why}; the current key keeps signing, and the next key is tried again at {again}. If the EHR holds a copy of the JWKS rather than its URL, register the new JWKS (status.publicJwks)",
                next.kid(),
            ),
        )
    } else {
        warning(
            "NextKeyTrialFailed",
            &format!(
                "a token request signed with the next key (kid {}) brought no token: {why}; the current key keeps signing, and the next key is tried again at {again}",
                next.kid(),
            ),
        )
    };
    draft.events.push(event);
}

/// The most of a failure's message an event repeats, in characters: the
/// API server drops an event whose note is over 1 KiB.
const MAX_EVENT_CAUSE: usize = 160;

/// Whether a failed trial means the server does not know the next key (as
/// opposed to the server being down).
fn is_refusal(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::InvalidClient
            | Reason::UnauthorizedClient
            | Reason::AwaitingRegistration
            | Reason::InvalidGrant
    )
}

/// Writes `changed` into the key Secret, if the Secret still holds `from`.
#[allow(clippy::too_many_arguments)]
async fn store(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    from: &Ring,
    changed: Ring,
    active_pem: Option<&[u8]>,
    memory: &mut ClientMemory,
) -> Result<Ring, Failure> {
    let name = &key.secret_name;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), target.namespace);
    let mut secret = api
        .get(name)
        .await
        .map_err(|e| api_failure("get", target, name, e))?;
    let moved = || {
        failure(
            Reason::KeySecretUnavailable,
            format!(
                "Secret {name} changed while its keys were being rotated; the operator reads it again and goes on"
            ),
        )
    };
    if Ring::read(&secret, &key.signing).ok().as_ref() != Some(from) {
        return Err(moved());
    }
    changed.store(&mut secret, active_pem);
    let written = api
        .replace(
            name,
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 409 => moved(),
            e => api_failure("update", target, name, e),
        })?;
    ctx.metrics.write("key_secret");
    memory.key_secret_written(name, written.metadata.resource_version, &changed);
    Ok(changed)
}

/// What the Key condition adds during a rotation.
pub(super) fn note(ring: &Ring, status: &KeyRotationStatus, timing: &Waits) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(next) = ring.find(KeyState::Next) {
        let from = after_all(next.since, &[timing.jwks_max_age, timing.margin]);
        let mut part = format!(
            "rotating: the next key (kid {}) is published and is tried from {}",
            next.kid,
            super::secrets::rfc3339(from)
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
            super::secrets::rfc3339(gone)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn why(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Schedule => "spec.signing.rotation.every has passed".into(),
        Trigger::Requested(value) => format!("{ROTATE_KEY_ANNOTATION}={value} asked for it"),
        Trigger::Algorithm(algorithm) => format!(
            "{algorithm} is now wanted (the server's list or spec.signing.algorithm changed)"
        ),
    }
}

fn key_rotation(draft: &mut Draft) -> &mut KeyRotationStatus {
    draft.fields.key_rotation.get_or_insert_default()
}

/// A new next key, or one accepted: earlier refusals no longer count.
fn forget_refusals(draft: &mut Draft) {
    let status = key_rotation(draft);
    status.refused_trials = 0;
    status.next_trial_time = None;
}

/// What the Key condition says about a generated key's rotation, as the
/// draft stands.
pub(super) fn current_note(ctx: &Context, draft: &Draft, ring: &Ring) -> Option<String> {
    let status = draft.fields.key_rotation.clone().unwrap_or_default();
    note(ring, &status, &waits(ctx))
}

fn normal(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "RotateKey".into(),
        secondary: None,
    }
}

fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "RotateKey".into(),
        secondary: None,
    }
}
