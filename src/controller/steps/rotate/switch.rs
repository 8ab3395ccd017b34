//! The two switches of the signing key: to the next key after the server
//! accepted it (a promotion), and back to the retiring key after the server
//! refused the key it had accepted (a fall-back). Each is one write of the
//! key Secret at the version it was read at.

use std::time::SystemTime;

use kube::runtime::events::Event;

use crate::checked_time::after_all;
use crate::controller::decide::events::Happened;
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::rotation::KeyState;
use crate::controller::model::memory::{KeyMemo, Recall};
use crate::controller::model::target::Target;
use crate::controller::steps::keys::{self, ResolvedKey, failure};
use crate::controller::steps::rotate::said::{forget_refusals, is_refusal, not_accepted};
use crate::controller::steps::rotate::{Context, Rotation, store, waits};
use crate::crd::{KeyRotationStatus, SmartBackendClientStatus};
use crate::smart::{PrivateKey, SigningKey};

/// The rotation after the server accepted the next key: it signs, the old
/// key retires.
pub(in crate::controller) struct Promoted {
    pub ring: Ring,
    /// When the retiring key may go.
    pub revisit: Option<SystemTime>,
    pub status: KeyRotationStatus,
    pub event: Event,
    /// What the client's memory keeps: the key Secret as written, and the
    /// promoted key, bound.
    pub learned: KeyMemo,
}

/// After the server accepted a token request signed with the next key: it
/// signs from now on, and the old key retires, its private key kept until
/// the retiring key is dropped.
pub(in crate::controller) async fn promote(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    rotation: &Rotation,
    next: &SigningKey,
    recall: Recall<'_>,
) -> Result<Promoted, Failure> {
    let mut status = rotation.status.clone().unwrap_or_default();
    forget_refusals(&mut status);
    status.next_key_served = None;
    let event = Happened::KeyRotated.event(
        format!(
            "the server accepted the new key (kid {}), which signs from now on; the old key (kid {}) stays published until nothing it signed is valid",
            next.kid(),
            key.signing.kid()
        ),
    );
    let ring = &rotation.ring;
    let waits = waits(ctx);
    let retires = |ring: &Ring| {
        let since = ring.find(KeyState::Retiring).map(|r| r.since);
        since.map(|since| after_all(since, &[waits.assertion_lifetime, waits.jwks_max_age]))
    };
    if key.key_manager.is_some() {
        // A key manager's versions: nothing to write, the status says it.
        let ring = ring.promoted_elsewhere(SystemTime::now());
        return Ok(Promoted {
            revisit: retires(&ring),
            ring,
            status,
            event,
            learned: KeyMemo::default(),
        });
    }
    let active_pem = pem_of(&key.signing)?;
    let Some((promoted, pem)) = ring.promoted(SystemTime::now(), active_pem) else {
        return Ok(Promoted {
            ring: ring.clone(),
            revisit: rotation.revisit,
            status,
            event,
            learned: KeyMemo::default(),
        });
    };
    let known = recall.key_secret;
    let (ring, learned) = store(ctx, target, key, ring, promoted, Some(&pem), known).await?;
    // Come back when the retiring key may go.
    Ok(Promoted {
        revisit: retires(&ring),
        ring,
        status,
        event,
        learned: bound(learned, &pem, next),
    })
}

/// The key to fall back to after the server refused the signing key: the
/// retiring key, when the refusal says the server does not know the key
/// (not an outage) and the retiring key's private key was kept.
pub(in crate::controller) fn fallback_key(ring: &Ring, refused: &Failure) -> Option<SigningKey> {
    if !is_refusal(refused.reason) {
        return None;
    }
    let retiring = ring.find(KeyState::Retiring)?;
    let pem = ring.retiring_pem.as_deref()?;
    PrivateKey::parse(pem)
        .and_then(|k| k.into_signing_key(Some(retiring.algorithm), None))
        .ok()
}

/// The rotation after the server refused the key promoted last and
/// accepted the retiring one.
pub(in crate::controller) struct FellBack {
    pub ring: Ring,
    /// When the refused key is tried again.
    pub again: SystemTime,
    pub status: KeyRotationStatus,
    pub event: Event,
    /// What the client's memory keeps: the key Secret as written, and the
    /// key that signs again, bound.
    pub learned: KeyMemo,
}

/// After the server refused the signing key and accepted the retiring one
/// (`back`): the retiring key signs again, and the refused key is the next
/// key once more, tried again after the same backoff as a refused trial.
#[allow(clippy::too_many_arguments)]
pub(in crate::controller) async fn fall_back(
    ctx: &Context,
    target: &Target<'_>,
    key: &ResolvedKey,
    rotation: &Rotation,
    previous: &SmartBackendClientStatus,
    back: &SigningKey,
    refused: &Failure,
    recall: Recall<'_>,
) -> Result<FellBack, Failure> {
    let now = SystemTime::now();
    let active_pem = pem_of(&key.signing)?;
    let (fallen, pem) = rotation.ring.fallen_back(now, active_pem).ok_or_else(|| {
        failure(
            Reason::KeyInvalid,
            "the retiring key has no private key".into(),
        )
    })?;
    let known = recall.key_secret;
    let (ring, learned) =
        store(ctx, target, key, &rotation.ring, fallen, Some(&pem), known).await?;
    let counted = not_accepted(rotation, previous, &key.signing, refused, now);
    let mut status = counted.status;
    status.next_key_served = None;
    let waits = waits(ctx);
    let published = ring.find(KeyState::Next).map_or(now, |n| n.since);
    let again = after_all(published, &[waits.jwks_max_age, waits.margin]).max(counted.again);
    let why = crate::smart::http::bounded_text(&refused.message, 160);
    let event = Happened::KeyFellBack.event(format!(
        "the server refused the key promoted last (kid {}): {why}; the previous key (kid {}), which it accepts, signs again, and the refused key is tried again from {}",
        key.signing.kid(),
        back.kid(),
        crate::controller::decide::secret_data::rfc3339(again)
    ));
    Ok(FellBack {
        ring,
        again,
        status,
        event,
        learned: bound(learned, &pem, back),
    })
}

/// The PEM of a key that stops signing, kept in the key Secret.
fn pem_of(key: &SigningKey) -> Result<Vec<u8>, Failure> {
    key.private_key()
        .ok_or_else(|| {
            failure(
                Reason::KeyInvalid,
                format!(
                    "the key kid {} is held by a key manager, not in the key Secret",
                    key.kid()
                ),
            )
        })?
        .to_pkcs8_pem()
        .map(String::into_bytes)
        .map_err(|e| failure(Reason::KeyInvalid, e.to_string()))
}

/// What memory keeps after a switch: the key that signs now, bound to the
/// PEM written as `private-key.pem`.
fn bound(mut learned: KeyMemo, pem: &[u8], signing: &SigningKey) -> KeyMemo {
    let fingerprint = keys::fingerprint(pem, Some(signing.algorithm()), None);
    if let Some(known) = learned.key_secret.as_mut() {
        known.fingerprint = fingerprint;
        learned.bound = Some((fingerprint, signing.clone()));
    }
    learned
}
