//! Keys the user provides (`keySecretRef`): the operator never writes them,
//! so their states come from the spec and the last status. The key named
//! by `keySecretRef` is `Active`; the one named by `nextKeySecretRef` is
//! `Next` (published, never signing); a key that was active until the user
//! switched stays `Retiring` (its public key carried over from the last
//! status) until nothing it signed is valid.

use std::time::SystemTime;

use crate::checked_time::after_all;
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::secret_data::{parse_rfc3339, rfc3339};
use crate::controller::steps::keys::ResolvedKey;
use crate::controller::steps::rotate::{KeyState, Observed, Rotation, Waits};
use crate::crd::{KeyStatus, SmartBackendClientStatus};
use crate::smart::keys::JwkSet;

pub(super) fn rotation(key: &ResolvedKey, observed: &Observed<'_>, waits: &Waits) -> Rotation {
    let previous = observed.previous;
    let now = observed.now;
    let since = |kid: &str, state: KeyState| {
        previous
            .keys
            .iter()
            .find(|k| k.kid == kid && k.state == state)
            .and_then(|k| parse_rfc3339(&k.since))
            .unwrap_or(now)
    };
    let active = key.signing.kid();
    let mut ring = Ring::single(&key.signing, since(active, KeyState::Active));
    let mut notes = Vec::new();
    let mut revisit = None;
    let mut trial = None;
    match &key.next {
        Some(Ok(next)) if next.kid() != active => {
            let published = since(next.kid(), KeyState::Next);
            ring = ring.with_next(next.public_jwk(), Vec::new(), next.algorithm(), published);
            let safe = after_all(published, &[waits.jwks_max_age, waits.margin]);
            notes.push(if let Some(name) = &key.key_manager {
                // The operator switches a key manager's keys itself: once
                // published long enough, a token request tries the new
                // key, and the first token it brings promotes it.
                let not_before = previous
                    .key_rotation
                    .as_ref()
                    .and_then(|r| r.next_trial_time.as_deref())
                    .and_then(parse_rfc3339);
                let at = not_before.map_or(safe, |t| t.max(safe));
                if now < at {
                    revisit = Some(at);
                } else {
                    trial = Some(next.clone());
                }
                format!(
                    "the next key of {name} (kid {}) is published and is tried from {}",
                    next.kid(),
                    rfc3339(at.max(now))
                )
            } else if now < safe {
                revisit = Some(safe);
                format!(
                    "the next key (kid {}) is published; switch spec.signing.keySecretRef to it from {}, then remove nextKeySecretRef",
                    next.kid(),
                    rfc3339(safe)
                )
            } else {
                format!(
                    "the next key (kid {}) has been published long enough: switch spec.signing.keySecretRef to it, then remove nextKeySecretRef",
                    next.kid()
                )
            });
        }
        Some(Ok(_)) => notes.push(
            "nextKeySecretRef holds the key that already signs: point it at the new key".into(),
        ),
        Some(Err(failure)) => notes.push(format!(
            "the next key ({}) is not published: {}",
            match key.key_manager {
                Some(_) => "spec.signing.awsKms.nextKey",
                None => "spec.signing.nextKeySecretRef",
            },
            failure.message
        )),
        None => {}
    }
    let next_kid = ring.find(KeyState::Next).map(|e| e.kid.clone());
    if let Some((retired, stopped)) = retired(previous, active, next_kid.as_deref(), now) {
        let gone = after_all(stopped, &[waits.assertion_lifetime, waits.jwks_max_age]);
        let jwk =
            published(previous).and_then(|set| set.keys.into_iter().find(|k| k.kid == retired.kid));
        if let (true, Some(jwk)) = (now < gone, jwk) {
            ring = ring.with_retiring(jwk, retired.algorithm, stopped);
            notes.push(format!(
                "the previous key (kid {}) stays published until {}",
                retired.kid,
                rfc3339(gone)
            ));
            revisit = Some(revisit.map_or(gone, |r| r.min(gone)));
        }
    }
    Rotation {
        ring,
        trial,
        revisit,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        status: previous.key_rotation.clone(),
        events: Vec::new(),
        learned: Default::default(),
    }
}

/// A key the last status showed signing or retiring that is neither the
/// current key nor the next one, and since when it no longer signs.
fn retired<'a>(
    previous: &'a SmartBackendClientStatus,
    active: &str,
    next: Option<&str>,
    now: SystemTime,
) -> Option<(&'a KeyStatus, SystemTime)> {
    let key = previous.keys.iter().find(|k| {
        k.kid != active
            && Some(k.kid.as_str()) != next
            && matches!(k.state, KeyState::Active | KeyState::Retiring)
    })?;
    let stopped = match key.state {
        KeyState::Retiring => parse_rfc3339(&key.since).unwrap_or(now),
        _ => now,
    };
    Some((key, stopped))
}

fn published(status: &SmartBackendClientStatus) -> Option<JwkSet> {
    serde_json::from_str(status.public_jwks.as_deref()?).ok()
}

#[cfg(test)]
mod tests;
