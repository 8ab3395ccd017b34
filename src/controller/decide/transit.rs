//! Which versions of a Transit key sign and which are published: the key
//! manager rotates (a new version), the operator publishes the new version
//! first and lets it sign once every server can have fetched it, as for a
//! key it generates. The state is the last status: the kid shown Active
//! and since when the kid shown Next has been published.

use std::time::{Duration, SystemTime};

use crate::checked_time::after_all;
use crate::controller::decide::rotation::KeyState;
use crate::controller::decide::secret_data::parse_rfc3339;
use crate::crd::KeyStatus;

/// The versions chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The version that signs.
    pub active: u64,
    /// A newer version, published but not yet signing.
    pub next: Option<u64>,
}

/// `versions` are the key's versions that have a public key, with their
/// kids; `latest` the key manager's latest version; `wait` the JWKS
/// max-age plus the margin.
pub fn choose(
    versions: &[(u64, String)],
    latest: u64,
    previous: &[KeyStatus],
    now: SystemTime,
    wait: Duration,
) -> Choice {
    let shown = |state: KeyState| previous.iter().find(|k| k.state == state);
    let signing = |kid: &str| versions.iter().find(|(_, k)| k == kid).map(|(v, _)| *v);
    let Some(active) = shown(KeyState::Active).and_then(|k| signing(&k.kid)) else {
        // Nothing signed yet, or the signing version is gone from the key
        // manager: the latest is all there is to sign with.
        return Choice {
            active: latest,
            next: None,
        };
    };
    let newer = (latest > active)
        .then(|| version_of(versions, latest))
        .flatten();
    let Some(latest_kid) = newer else {
        return Choice { active, next: None };
    };
    let published = previous
        .iter()
        .find(|k| k.state == KeyState::Next && k.kid == latest_kid)
        .and_then(|k| parse_rfc3339(&k.since));
    match published {
        Some(since) if now >= after_all(since, &[wait]) => Choice {
            active: latest,
            next: None,
        },
        _ => Choice {
            active,
            next: Some(latest),
        },
    }
}

/// The kid of `version`.
fn version_of(versions: &[(u64, String)], version: u64) -> Option<String> {
    versions
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::secret_data::rfc3339;

    const WAIT: Duration = Duration::from_secs(360);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn shown(kid: &str, state: KeyState, since: SystemTime) -> KeyStatus {
        KeyStatus {
            kid: kid.into(),
            algorithm: crate::smart::SigningAlgorithm::ES384,
            state,
            since: rfc3339(since),
        }
    }

    fn versions(n: u64) -> Vec<(u64, String)> {
        (1..=n).map(|v| (v, format!("kid-{v}"))).collect()
    }

    #[test]
    fn the_first_look_signs_with_the_latest_version() {
        let choice = choose(&versions(3), 3, &[], at(0), WAIT);
        assert_eq!(
            choice,
            Choice {
                active: 3,
                next: None
            }
        );
    }

    #[test]
    fn a_new_version_is_published_first_and_signs_after_the_wait() {
        let active = shown("kid-1", KeyState::Active, at(0));
        // Just seen: published, not signing.
        let choice = choose(
            &versions(2),
            2,
            std::slice::from_ref(&active),
            at(100),
            WAIT,
        );
        assert_eq!(
            choice,
            Choice {
                active: 1,
                next: Some(2)
            }
        );
        // Published at 100 s: still waiting at 459 s, signing at 460 s.
        let next = shown("kid-2", KeyState::Next, at(100));
        let status = [active, next];
        assert_eq!(choose(&versions(2), 2, &status, at(459), WAIT).active, 1);
        assert_eq!(
            choose(&versions(2), 2, &status, at(460), WAIT),
            Choice {
                active: 2,
                next: None
            }
        );
    }

    #[test]
    fn two_rotations_in_a_row_restart_the_wait_for_the_newest() {
        let status = [
            shown("kid-1", KeyState::Active, at(0)),
            shown("kid-2", KeyState::Next, at(0)),
        ];
        // Version 3 appeared; version 2's publication does not count for it.
        let choice = choose(&versions(3), 3, &status, at(10_000), WAIT);
        assert_eq!(
            choice,
            Choice {
                active: 1,
                next: Some(3)
            }
        );
    }

    #[test]
    fn a_signing_version_gone_from_the_key_manager_gives_way_to_the_latest() {
        let status = [shown("kid-0", KeyState::Active, at(0))];
        let choice = choose(&versions(2), 2, &status, at(10), WAIT);
        assert_eq!(
            choice,
            Choice {
                active: 2,
                next: None
            }
        );
        // And an up-to-date key stays as it is.
        let status = [shown("kid-2", KeyState::Active, at(0))];
        assert_eq!(
            choose(&versions(2), 2, &status, at(10), WAIT),
            Choice {
                active: 2,
                next: None
            }
        );
    }
}
