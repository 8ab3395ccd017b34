use std::time::Duration;

use super::*;
use crate::controller::decide::validate::{Rules, validate};
use crate::crd::{SmartBackendClient, SmartBackendClientSpec};
use crate::smart::{PrivateKey, SigningAlgorithm, SigningKey};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn key() -> SigningKey {
    PrivateKey::generate(SigningAlgorithm::ES384, 0)
        .and_then(|k| k.into_signing_key(None, None))
        .unwrap()
}

fn resolved(signing: &SigningKey, next: Option<&SigningKey>) -> ResolvedKey {
    ResolvedKey {
        signing: signing.clone(),
        secret_name: "mine".into(),
        generated: false,
        regeneration_handled: None,
        ring: None,
        next: next.map(|n| Ok(n.clone())),
        learned: Default::default(),
        key_manager: None,
    }
}

const WAITS: Waits = Waits {
    jwks_max_age: Duration::from_secs(300),
    margin: Duration::from_secs(60),
    assertion_lifetime: Duration::from_secs(240),
};

fn rotate(key: &ResolvedKey, previous: &SmartBackendClientStatus, now: u64) -> Rotation {
    let spec: SmartBackendClientSpec = serde_json::from_value(serde_json::json!({
        "fhirBaseUrl": "https://ehr.example/fhir", "clientId": "c", "scopes": ["system/Patient.rs"],
        "signing": {"keySecretRef": {"name": "mine", "key": "k"}}
    }))
    .unwrap();
    let spec = validate(
        &SmartBackendClient::new("c", spec),
        "c",
        Rules::https_only(),
    )
    .unwrap();
    let observed = Observed {
        spec: &spec,
        previous,
        preferred: SigningAlgorithm::ES384,
        server_algorithms: None,
        now: t(now),
    };
    rotation(key, &observed, &WAITS)
}

/// The status a reconcile would write for this rotation.
fn status(rotation: &Rotation) -> SmartBackendClientStatus {
    SmartBackendClientStatus {
        keys: rotation.ring.status(),
        public_jwks: Some(rotation.ring.published().to_json()),
        ..Default::default()
    }
}

fn states(rotation: &Rotation) -> Vec<(String, KeyState)> {
    let entries = rotation.ring.entries.iter();
    entries.map(|e| (e.kid.clone(), e.state)).collect()
}

#[test]
fn a_provided_next_key_is_published_then_the_old_one_retires_after_the_switch() {
    let (old, new) = (key(), key());
    let alone = rotate(
        &resolved(&old, None),
        &SmartBackendClientStatus::default(),
        0,
    );
    assert_eq!(states(&alone), [(old.kid().to_string(), KeyState::Active)]);
    assert!(alone.note.is_none() && alone.revisit.is_none());

    // The next key named: published, with the time it is safe to switch.
    let both = rotate(&resolved(&old, Some(&new)), &status(&alone), 100);
    assert_eq!(
        states(&both),
        [
            (old.kid().to_string(), KeyState::Active),
            (new.kid().to_string(), KeyState::Next)
        ]
    );
    assert_eq!(both.revisit, Some(t(100 + 360)));
    let note = both.note.clone().unwrap();
    assert!(note.contains(new.kid()) && note.contains("from"), "{note}");
    // Later reconciles keep when it was published.
    let later = rotate(&resolved(&old, Some(&new)), &status(&both), 500);
    assert!(later.note.as_deref().unwrap().contains("long enough"));
    assert_eq!(later.ring.find(KeyState::Next).unwrap().since, t(100));

    // The user switched: the old key stays published, not signing.
    let switched = rotate(&resolved(&new, None), &status(&later), 600);
    assert_eq!(
        states(&switched),
        [
            (new.kid().to_string(), KeyState::Active),
            (old.kid().to_string(), KeyState::Retiring)
        ]
    );
    assert_eq!(switched.revisit, Some(t(600 + 540)));
    let kids: Vec<String> = switched
        .ring
        .published()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, [new.kid(), old.kid()]);
    let still = rotate(&resolved(&new, None), &status(&switched), 1139);
    assert_eq!(
        still.ring.entries.len(),
        2,
        "until the last assertion and a max-age are over"
    );
    let gone = rotate(&resolved(&new, None), &status(&still), 1140);
    assert_eq!(states(&gone), [(new.kid().to_string(), KeyState::Active)]);
}

#[test]
fn a_next_key_that_cannot_be_used_is_reported_and_the_current_key_signs() {
    let old = key();
    let mut broken = resolved(&old, None);
    let failure = crate::controller::decide::reason::Failure::new(
        crate::controller::decide::reason::Reason::KeySecretNotFound,
        "Secret next does not exist",
    );
    broken.next = Some(Err(failure));
    let rotation = rotate(&broken, &SmartBackendClientStatus::default(), 0);
    assert_eq!(
        states(&rotation),
        [(old.kid().to_string(), KeyState::Active)]
    );
    assert!(
        rotation
            .note
            .unwrap()
            .contains("Secret next does not exist")
    );
}

/// A Transit key's versions go the same way, but the operator switches
/// them itself: once the new version has been published long enough, the
/// rotation hands it to the token step for a trial (a token it brings
/// promotes it); a trial that brought none is tried again after its
/// backoff; once it signs, the old version retires.
#[test]
fn a_transit_version_is_published_then_tried_and_the_old_one_retires() {
    let (old, new) = (key(), key());
    let in_transit = |signing: &SigningKey, next: Option<&SigningKey>| ResolvedKey {
        key_manager: Some("Transit key team.billing".into()),
        ..resolved(signing, next)
    };
    let alone = rotate(
        &in_transit(&old, None),
        &SmartBackendClientStatus::default(),
        0,
    );
    let both = rotate(&in_transit(&old, Some(&new)), &status(&alone), 100);
    assert_eq!(both.revisit, Some(t(100 + 360)));
    assert!(both.trial.is_none());
    let note = both.note.clone().unwrap();
    assert!(
        note.contains("Transit key team.billing") && note.contains("tried from"),
        "{note}"
    );
    assert!(!note.contains("keySecretRef"), "{note}");

    let due = rotate(&in_transit(&old, Some(&new)), &status(&both), 460);
    assert_eq!(due.trial.as_ref().map(|k| k.kid()), Some(new.kid()));

    // A trial that brought no token is tried again after its backoff.
    let mut backing_off = status(&both);
    backing_off.key_rotation = Some(crate::crd::KeyRotationStatus {
        next_trial_time: Some(crate::controller::decide::secret_data::rfc3339(t(500))),
        ..Default::default()
    });
    let waiting = rotate(&in_transit(&old, Some(&new)), &backing_off, 470);
    assert!(waiting.trial.is_none());
    assert_eq!(waiting.revisit, Some(t(500)));

    // Promoted (the status shows the new version active): the old retires.
    let promoted = SmartBackendClientStatus {
        keys: due.ring.promoted_elsewhere(t(461)).status(),
        ..status(&due)
    };
    let switched = rotate(&in_transit(&new, None), &promoted, 470);
    assert_eq!(
        states(&switched),
        [
            (new.kid().to_string(), KeyState::Active),
            (old.kid().to_string(), KeyState::Retiring)
        ]
    );
}
