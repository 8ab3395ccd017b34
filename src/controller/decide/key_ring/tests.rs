use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::smart::PrivateKey;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn key() -> (SigningKey, Vec<u8>) {
    let private = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
    let pem = private.to_pkcs8_pem().unwrap().into_bytes();
    (private.into_signing_key(None, None).unwrap(), pem)
}

fn stored(ring: &Ring, active_pem: &[u8]) -> Secret {
    let mut secret = Secret::default();
    ring.store(&mut secret, Some(active_pem));
    secret
}

fn kids(set: &JwkSet) -> Vec<&str> {
    set.keys.iter().map(|k| k.kid.as_str()).collect()
}

#[test]
fn a_secret_from_before_rotation_reads_as_one_active_key_since_its_creation() {
    let (active, pem) = key();
    let mut secret = Secret::default();
    secret.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    secret.data = Some(BTreeMap::from([
        (PRIVATE_KEY_FILE.to_string(), ByteString(pem)),
        (
            PUBLIC_JWKS_FILE.to_string(),
            ByteString(active.public_jwks().to_json().into_bytes()),
        ),
    ]));
    let ring = Ring::read(&secret, &active).unwrap();
    assert_eq!(ring, Ring::single(&active, t(0)));
    assert_eq!(ring.status()[0].state, KeyState::Active);
}

#[test]
fn each_rotation_step_survives_a_write_and_a_read() {
    let (active, active_pem) = key();
    let (next, next_pem) = key();
    let ring = Ring::single(&active, t(0));
    assert_eq!(
        Ring::read(&stored(&ring, &active_pem), &active).unwrap(),
        ring
    );

    // Next published beside the active key, its private key kept.
    let rotating = ring.with_next(
        next.public_jwk(),
        next_pem.clone(),
        SigningAlgorithm::ES384,
        t(10),
    );
    let secret = stored(&rotating, &active_pem);
    let read = Ring::read(&secret, &active).unwrap();
    assert_eq!(read, rotating);
    assert_eq!(kids(&read.published()), [active.kid(), next.kid()]);
    assert!(
        secret
            .data
            .as_ref()
            .unwrap()
            .contains_key(NEXT_PRIVATE_KEY_FILE)
    );

    // Accepted: the next key signs, the old one retires, its private key
    // kept for a fall-back.
    let (promoted, pem) = read.promoted(t(400), active_pem.clone()).unwrap();
    assert_eq!(pem, next_pem);
    let secret = stored(&promoted, &pem);
    let data = secret.data.as_ref().unwrap();
    assert!(!data.contains_key(NEXT_PRIVATE_KEY_FILE));
    assert_eq!(data[PRIVATE_KEY_FILE].0, next_pem);
    assert_eq!(data[RETIRING_PRIVATE_KEY_FILE].0, active_pem);
    let read = Ring::read(&secret, &next).unwrap();
    assert_eq!(read, promoted, "what was written reads back equal");
    assert_eq!(read.find(KeyState::Active).unwrap().kid, next.kid());
    assert_eq!(read.find(KeyState::Retiring).unwrap().kid, active.kid());
    assert_eq!(read.find(KeyState::Active).unwrap().since, t(400));
    assert_eq!(kids(&read.published()), [next.kid(), active.kid()]);
    let annotations = secret.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[KID_ANNOTATION], next.kid());

    // Retired: only the active key is left, the retired private key gone.
    let done = read.without(active.kid());
    let secret = stored(&done, &pem);
    assert!(
        !secret
            .data
            .as_ref()
            .unwrap()
            .contains_key(RETIRING_PRIVATE_KEY_FILE)
    );
    let read = Ring::read(&secret, &next).unwrap();
    assert_eq!(read, done);
    assert_eq!(kids(&read.published()), [next.kid()]);
    assert_eq!(read.entries.len(), 1);
}

#[test]
fn a_refused_new_key_falls_back_to_the_retiring_key_which_signs_again() {
    let (old, old_pem) = key();
    let (new, new_pem) = key();
    let rotating = Ring::single(&old, t(0)).with_next(
        new.public_jwk(),
        new_pem.clone(),
        SigningAlgorithm::ES384,
        t(10),
    );
    let (promoted, pem) = rotating.promoted(t(400), old_pem.clone()).unwrap();
    let promoted = Ring::read(&stored(&promoted, &pem), &new).unwrap();
    assert_eq!(promoted.retiring_pem.as_deref(), Some(&old_pem[..]));

    let (fallen, pem) = promoted.fallen_back(t(500), new_pem.clone()).unwrap();
    assert_eq!(pem, old_pem, "the retiring key's PEM signs again");
    let secret = stored(&fallen, &pem);
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data[PRIVATE_KEY_FILE].0, old_pem);
    assert_eq!(data[NEXT_PRIVATE_KEY_FILE].0, new_pem);
    assert!(!data.contains_key(RETIRING_PRIVATE_KEY_FILE));
    let read = Ring::read(&secret, &old).unwrap();
    assert_eq!(read, fallen);
    assert_eq!(read.find(KeyState::Active).unwrap().kid, old.kid());
    assert_eq!(read.find(KeyState::Next).unwrap().kid, new.kid());
    assert_eq!(read.find(KeyState::Next).unwrap().since, t(500));
    assert!(read.find(KeyState::Retiring).is_none());
    assert_eq!(kids(&read.published()), [old.kid(), new.kid()]);
}

#[test]
fn a_key_retired_before_keys_were_kept_reads_without_a_fall_back() {
    let (old, old_pem) = key();
    let (new, new_pem) = key();
    let rotating = Ring::single(&old, t(0)).with_next(
        new.public_jwk(),
        new_pem,
        SigningAlgorithm::ES384,
        t(10),
    );
    let (promoted, pem) = rotating.promoted(t(400), old_pem).unwrap();
    let mut secret = stored(&promoted, &pem);
    secret
        .data
        .as_mut()
        .unwrap()
        .remove(RETIRING_PRIVATE_KEY_FILE);
    let read = Ring::read(&secret, &new).unwrap();
    assert_eq!(read.retiring_pem, None);
    assert_eq!(read.find(KeyState::Retiring).unwrap().kid, old.kid());
    assert!(read.fallen_back(t(500), pem).is_none());
}

#[test]
fn a_damaged_list_is_an_error_not_a_new_key() {
    let (active, active_pem) = key();
    let (next, next_pem) = key();
    let rotating = Ring::single(&active, t(0)).with_next(
        next.public_jwk(),
        next_pem,
        SigningAlgorithm::ES384,
        t(10),
    );
    let mut secret = stored(&rotating, &active_pem);
    secret.data.as_mut().unwrap().remove(NEXT_PRIVATE_KEY_FILE);
    let error = Ring::read(&secret, &active).unwrap_err();
    assert!(error.contains("next key"), "{error}");

    let mut secret = stored(&rotating, &active_pem);
    let jwks = active.public_jwks().to_json().into_bytes();
    secret
        .data
        .as_mut()
        .unwrap()
        .insert(PUBLIC_JWKS_FILE.into(), ByteString(jwks));
    let error = Ring::read(&secret, &active).unwrap_err();
    assert!(error.contains(next.kid()), "{error}");

    let mut secret = stored(&rotating, &active_pem);
    let annotations = secret.metadata.annotations.as_mut().unwrap();
    annotations.insert(KEYS_ANNOTATION.into(), "[{".into());
    assert!(
        Ring::read(&secret, &active)
            .unwrap_err()
            .contains("not a key list")
    );
}

/// A process that dies after any step and starts again reads the same
/// list back from the Secret and takes the same next step.
#[test]
fn a_restart_after_any_step_resumes_with_the_same_next_step() {
    use crate::controller::decide::rotation::{Inputs, Step, plan};
    let waits = (
        Duration::from_secs(300),
        Duration::from_secs(60),
        Duration::from_secs(240),
    );
    let inputs = |now: u64, handled: Option<&'static str>| Inputs {
        now: t(now),
        every: None,
        requested: Some("1"),
        handled,
        server_algorithms: None,
        preferred: SigningAlgorithm::ES384,
        required: None,
        trial_not_before: None,
        next_served: None,
        jwks_max_age: waits.0,
        margin: waits.1,
        assertion_lifetime: waits.2,
    };
    let (active, active_pem) = key();
    let (next, next_pem) = key();
    let mut ring = Ring::single(&active, t(0));
    let mut signing = (active.clone(), active_pem.clone());
    let mut steps = Vec::new();
    let mut handled = None;
    for now in (0..2000).step_by(10) {
        // Each moment starts from what the Secret holds, as after a crash.
        let secret = stored(&ring, &signing.1);
        let restarted = Ring::read(&secret, &signing.0).unwrap();
        assert_eq!(restarted, ring, "at {now}");
        let step = plan(&restarted.entries, &inputs(now, handled));
        assert_eq!(step, plan(&ring.entries, &inputs(now, handled)));
        ring = match &step {
            Step::GenerateNext { algorithm, .. } => {
                handled = Some("1");
                restarted.with_next(next.public_jwk(), next_pem.clone(), *algorithm, t(now))
            }
            Step::Trial { .. } => {
                let (promoted, pem) = restarted.promoted(t(now), signing.1.clone()).unwrap();
                signing = (next.clone(), pem);
                promoted
            }
            Step::DropRetiring { kid } => restarted.without(kid),
            _ => restarted,
        };
        if !matches!(step, Step::Steady { .. } | Step::AwaitPublication { .. }) {
            steps.push(std::mem::discriminant(&step));
        }
        if ring.find(KeyState::Next).is_some() || ring.find(KeyState::Retiring).is_some() {
            continue;
        }
        if steps.len() == 3 {
            break;
        }
    }
    assert_eq!(steps.len(), 3, "generate, trial, drop");
    assert_eq!(kids(&ring.published()), [next.kid()]);
}
