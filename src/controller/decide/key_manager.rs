//! Which of a key manager's keys sign and which are published: a new key
//! (a Transit key's new version, or the KMS key named as next) is
//! published first (Next) and, once every server can have fetched it,
//! tried; it signs from the first token it brings (the rotation step's
//! trial), as for a key the operator generates. The state is the last
//! status: the kid shown Active is the key that signs.

use crate::controller::decide::rotation::KeyState;
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
/// kids; `latest` the key manager's latest version.
pub fn choose(versions: &[(u64, String)], latest: u64, previous: &[KeyStatus]) -> Choice {
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
    let newer = latest > active && versions.iter().any(|(v, _)| *v == latest);
    Choice {
        active,
        next: newer.then_some(latest),
    }
}

/// One of two named keys: the one the spec says signs, or its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    Key,
    Next,
}

/// For keys named in the spec (AWS KMS's `key` and `nextKey`), by kid (None:
/// the key could not be read): which signs, and which is published ahead
/// of it. The next key signs once the status shows it Active (a trial
/// brought a token), even if the old key is gone by then; until the spec
/// names it as `key`, the old key is left to retire. None: nothing can sign.
pub fn choose_named(
    key: Option<&str>,
    next: Option<&str>,
    previous: &[KeyStatus],
) -> Option<(Named, Option<Named>)> {
    let active = previous
        .iter()
        .find(|k| k.state == KeyState::Active)
        .map(|k| k.kid.as_str());
    match (key, next) {
        (Some(key), Some(next)) if key == next => Some((Named::Key, None)),
        (_, Some(next)) if active == Some(next) => Some((Named::Next, None)),
        (Some(_), Some(_)) => Some((Named::Key, Some(Named::Next))),
        (Some(_), None) => Some((Named::Key, None)),
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(kid: &str, state: KeyState) -> KeyStatus {
        KeyStatus {
            kid: kid.into(),
            algorithm: crate::smart::SigningAlgorithm::ES384,
            state,
            since: "2027-01-01T00:00:00Z".into(),
        }
    }

    fn versions(n: u64) -> Vec<(u64, String)> {
        (1..=n).map(|v| (v, format!("kid-{v}"))).collect()
    }

    #[test]
    fn the_first_look_signs_with_the_latest_version() {
        let choice = choose(&versions(3), 3, &[]);
        assert_eq!(
            choice,
            Choice {
                active: 3,
                next: None
            }
        );
    }

    #[test]
    fn a_new_version_is_next_until_a_trial_makes_it_active() {
        let active = shown("kid-1", KeyState::Active);
        let choice = choose(&versions(2), 2, std::slice::from_ref(&active));
        assert_eq!(
            choice,
            Choice {
                active: 1,
                next: Some(2)
            }
        );
        // However long it has been published: only the status (a trial
        // that brought a token) makes it sign.
        let status = [active, shown("kid-2", KeyState::Next)];
        assert_eq!(choose(&versions(2), 2, &status).active, 1);
        let promoted = [
            shown("kid-2", KeyState::Active),
            shown("kid-1", KeyState::Retiring),
        ];
        assert_eq!(
            choose(&versions(2), 2, &promoted),
            Choice {
                active: 2,
                next: None
            }
        );
    }

    #[test]
    fn two_rotations_in_a_row_publish_the_newest() {
        let status = [
            shown("kid-1", KeyState::Active),
            shown("kid-2", KeyState::Next),
        ];
        let choice = choose(&versions(3), 3, &status);
        assert_eq!(
            choice,
            Choice {
                active: 1,
                next: Some(3)
            }
        );
    }

    #[test]
    fn a_named_next_key_is_published_then_signs_once_a_trial_promoted_it() {
        let choose = |key, next, status: &[KeyStatus]| choose_named(key, next, status);
        assert_eq!(choose(Some("a"), None, &[]), Some((Named::Key, None)));
        let signing = [shown("a", KeyState::Active)];
        let ahead = Some((Named::Key, Some(Named::Next)));
        assert_eq!(choose(Some("a"), Some("b"), &signing), ahead);
        let published = [shown("a", KeyState::Active), shown("b", KeyState::Next)];
        assert_eq!(choose(Some("a"), Some("b"), &published), ahead);
        let promoted = [shown("b", KeyState::Active), shown("a", KeyState::Retiring)];
        assert_eq!(
            choose(Some("a"), Some("b"), &promoted),
            Some((Named::Next, None))
        );
        // The old key gone before the spec names the new one alone.
        assert_eq!(
            choose(None, Some("b"), &promoted),
            Some((Named::Next, None))
        );
        // The spec then names the new key alone.
        assert_eq!(choose(Some("b"), None, &promoted), Some((Named::Key, None)));
        // The same key named twice (the same kid under two aliases).
        assert_eq!(
            choose(Some("a"), Some("a"), &signing),
            Some((Named::Key, None))
        );
        // The key that signs cannot be read, and no next key signs yet.
        assert_eq!(choose(None, Some("b"), &signing), None);
        assert_eq!(choose(None, None, &signing), None);
    }

    #[test]
    fn a_signing_version_gone_from_the_key_manager_gives_way_to_the_latest() {
        let status = [shown("kid-0", KeyState::Active)];
        assert_eq!(
            choose(&versions(2), 2, &status),
            Choice {
                active: 2,
                next: None
            }
        );
    }
}
