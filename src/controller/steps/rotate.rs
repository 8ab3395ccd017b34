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
use kube::runtime::events::Event;

use crate::checked_time::after_all;
use crate::controller::Context;
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::rotation::{self, KeyState, Step, Trigger};
use crate::controller::decide::validate::{KeySource, ValidSpec};
use crate::controller::model::memory::KnownKeySecret;
use crate::controller::model::memory::{KeyMemo, Recall};
use crate::controller::model::target::Target;
use crate::controller::steps::keys::{self, ResolvedKey, api_failure, failure};
use crate::crd::{
    FIELD_MANAGER, KeyRotationStatus, ROTATE_KEY_ANNOTATION, ServedKey, SmartBackendClientStatus,
};
use crate::smart::{PrivateKey, SigningAlgorithm, SigningKey};

mod referenced;
mod said;
mod switch;
use crate::controller::decide::events::Happened;
pub(in crate::controller) use said::{current_note, not_accepted};
use said::{forget_refusals, why};
pub(in crate::controller) use switch::fallback_key;
pub(in crate::controller) use switch::{fall_back, promote};
#[cfg(test)]
mod tests;

/// How long a rotation waits between its steps.
pub(in crate::controller) struct Waits {
    pub jwks_max_age: Duration,
    pub margin: Duration,
    pub assertion_lifetime: Duration,
}

pub(in crate::controller) fn waits(ctx: &Context) -> Waits {
    Waits {
        jwks_max_age: ctx.settings.rotation.jwks_max_age,
        margin: ctx.settings.rotation.margin,
        assertion_lifetime: ctx.settings.clocks.assertion_lifetime(),
    }
}

/// Where the client's keys stand after this reconcile's rotation step.
pub(in crate::controller) struct Rotation {
    pub ring: Ring,
    /// The next key, when this reconcile's token request is its trial.
    pub trial: Option<SigningKey>,
    /// When the rotation wants to look again.
    pub revisit: Option<SystemTime>,
    /// What the Key condition says about the rotation.
    pub note: Option<String>,
    /// `status.keyRotation` after the step.
    pub status: Option<KeyRotationStatus>,
    pub events: Vec<Event>,
    /// What the client's memory keeps of a write of the key Secret.
    pub learned: KeyMemo,
}

/// What the rotation step reads besides the key.
pub(in crate::controller) struct Observed<'a> {
    pub spec: &'a ValidSpec,
    pub previous: &'a SmartBackendClientStatus,
    pub preferred: SigningAlgorithm,
    pub server_algorithms: Option<&'a [String]>,
    pub now: SystemTime,
}

pub(in crate::controller) async fn advance(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    observed: &Observed<'_>,
    recall: Recall<'_>,
) -> Result<Rotation, Failure> {
    let Some(ring) = &key.ring else {
        return Ok(referenced::rotation(key, observed, &waits(ctx)));
    };
    let rotation_status = observed.previous.key_rotation.clone().unwrap_or_default();
    let mut rotation = Rotation {
        ring: ring.clone(),
        trial: None,
        revisit: None,
        note: None,
        status: observed.previous.key_rotation.clone(),
        events: Vec::new(),
        learned: KeyMemo::default(),
    };
    let mut requested = target.annotation(ROTATE_KEY_ANNOTATION);
    if observed.spec.kid.is_some()
        && requested.is_some_and(|r| rotation_status.handled_request.as_deref() != Some(r))
    {
        rotation.events.push(Happened::KeyRotationNotPossible.event(
            "the rotate-key annotation was ignored: a rotation publishes two keys at once, which need different kids; remove spec.signing.kid to rotate",
        ));
        rotation.status_mut().handled_request = requested.map(str::to_string);
        requested = None;
    }
    let timing = waits(ctx);
    let served =
        |ring: &Ring| rotation::next_served(&ring.entries, observed.previous, observed.now);
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
            .and_then(crate::controller::decide::secret_data::parse_rfc3339),
        next_served: served(ring).map(|(_, since)| since),
        jwks_max_age: timing.jwks_max_age,
        margin: timing.margin,
        assertion_lifetime: timing.assertion_lifetime,
    };
    let step = rotation::plan(&ring.entries, &inputs);
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
                KeySource::Referenced { .. }
                | KeySource::Transit { .. }
                | KeySource::Kms { .. } => 0,
            };
            let (next, pem) = keys::generate(algorithm, rsa_bits).await?;
            let next = next
                .into_signing_key(Some(algorithm), None)
                .map_err(|e| failure(Reason::KeyGenerationFailed, e.to_string()))?;
            let grown =
                ring.with_next(next.public_jwk(), pem.into_bytes(), algorithm, observed.now);
            let known = recall.key_secret;
            (rotation.ring, rotation.learned) =
                store(ctx, target, key, ring, grown, None, known).await?;
            if let Trigger::Requested(value) = &trigger {
                rotation.status_mut().handled_request = Some(value.clone());
            }
            forget_refusals(rotation.status_mut());
            rotation.events.push(Happened::KeyRotationStarted.event(
                format!(
                    "{}: published the next {algorithm} key (kid {}) beside the signing key (kid {}); it signs once EHRs have fetched the JWKS again and the server accepts it",
                    why(&trigger),
                    next.kid(),
                    key.signing.kid()
                ),
            ));
            // From when it is served (not before the stored, rounded-up
            // time), so the wait never comes short.
            let published = served(&rotation.ring).map(|(_, since)| since);
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
            let known = recall.key_secret;
            (rotation.ring, rotation.learned) =
                store(ctx, target, key, ring, shrunk, None, known).await?;
            // A rotation due meanwhile starts at once, not at the next refresh.
            rotation.revisit = match rotation::plan(&rotation.ring.entries, &inputs) {
                Step::Steady { revisit } => revisit,
                Step::AwaitPublication { until, .. } | Step::AwaitTrial { until, .. } => {
                    Some(until)
                }
                _ => Some(inputs.now),
            };
            rotation.events.push(Happened::KeyRetired.event(
                format!("removed the retired key (kid {kid}) from the JWKS: nothing it signed is still valid"),
            ));
        }
    }
    match served(&rotation.ring) {
        Some((kid, since)) => {
            let since = crate::controller::decide::secret_data::rfc3339(since);
            rotation.status_mut().next_key_served = Some(ServedKey { kid, since });
        }
        None => {
            if let Some(status) = rotation.status.as_mut() {
                status.next_key_served = None;
            }
        }
    }
    rotation.note = current_note(ctx, rotation.status.as_ref(), &rotation.ring);
    Ok(rotation)
}

impl Rotation {
    fn status_mut(&mut self) -> &mut KeyRotationStatus {
        self.status.get_or_insert_default()
    }
}

/// Writes `changed` into the key Secret, if the Secret still holds `from`.
/// Returns it with what memory keeps: `known` (the Secret as memory knew
/// it) at the version written.
#[allow(clippy::too_many_arguments)]
async fn store(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    from: &Ring,
    changed: Ring,
    active_pem: Option<&[u8]>,
    known: Option<&KnownKeySecret>,
) -> Result<(Ring, KeyMemo), Failure> {
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
    let version = written.metadata.resource_version;
    let key_secret = known
        .cloned()
        .zip(version.clone())
        .map(|(mut known, version)| {
            known.version = version;
            known.set_ring(changed.clone());
            known
        });
    let learned = KeyMemo {
        key_secret,
        seen: vec![(name.clone(), version)],
        ..KeyMemo::default()
    };
    Ok((changed, learned))
}
