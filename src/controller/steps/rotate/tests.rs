use std::time::Duration;

use super::*;
use crate::smart::PrivateKey;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn key() -> SigningKey {
    PrivateKey::generate(SigningAlgorithm::ES384, 0)
        .unwrap()
        .into_signing_key(None, None)
        .unwrap()
}

fn rotation(status: Option<KeyRotationStatus>) -> Rotation {
    Rotation {
        ring: Ring::single(&key(), t(0)),
        trial: None,
        revisit: None,
        note: None,
        status,
        events: Vec::new(),
        learned: Default::default(),
    }
}

#[test]
fn a_trial_that_brings_no_token_backs_off_and_says_why() {
    let next = key();
    let previous = SmartBackendClientStatus {
        key_rotation: Some(KeyRotationStatus {
            refused_trials: 2,
            handled_request: Some("r1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    // This reconcile's rotation step kept the handled request.
    let current = rotation(previous.key_rotation.clone());
    let now = t(100) + Duration::from_millis(250);
    for (reason, event) in [
        (Reason::InvalidClient, "NextKeyRefused"),
        (Reason::AwaitingRegistration, "NextKeyRefused"),
        (Reason::TokenEndpointUnavailable, "NextKeyTrialFailed"),
        (Reason::InvalidTokenResponse, "NextKeyTrialFailed"),
    ] {
        let failure = Failure::new(reason, "the server said no\nwith a newline");
        let refused = not_accepted(&current, &previous, &next, &failure, now);
        assert_eq!(refused.event.reason, event, "{reason:?}");
        let note = refused.event.note.unwrap();
        assert!(note.contains(next.kid()) && !note.contains('\n'), "{note}");
        assert_eq!(refused.status.refused_trials, 3, "{reason:?}: counted");
        assert_eq!(refused.status.handled_request.as_deref(), Some("r1"));
        // The retry is typed and whole: the status says the same second.
        assert!(refused.again > now, "{reason:?}");
        assert_eq!(
            refused.again,
            crate::controller::decide::secret_data::whole_second(refused.again)
        );
        assert_eq!(
            refused.status.next_trial_time,
            Some(crate::controller::decide::secret_data::rfc3339(
                refused.again
            ))
        );
    }
}
