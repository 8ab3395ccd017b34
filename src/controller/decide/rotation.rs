//! Key rotation for generated keys, decided as a pure function of the key
//! list the key Secret stores, the time and what asked for a rotation.
//!
//! A client holds at most one key in each state: `Next` (published, not yet
//! signing), `Active` (signing) and `Retiring` (published, no longer
//! signing). A rotation generates `Next`, waits until every EHR that cached
//! the JWKS before it was published has fetched it again (the JWKS max-age
//! plus a margin), then signs one token request with it: if the server
//! accepts it, `Next` becomes `Active` and the old key `Retiring`; if the
//! server refuses it, the old key keeps signing and the trial is retried.
//! `Retiring` is dropped once the last assertion it signed has expired and
//! the max-age has passed again. Because the plan reads only the stored
//! list, an operator that crashed at any step resumes from where it was.

use std::time::{Duration, SystemTime};

use crate::checked_time::{after, after_all};
use crate::smart::SigningAlgorithm;

pub use crate::crd::KeyState;
use crate::crd::SmartBackendClientStatus;

/// One key of a client, as stored beside the key material and shown in
/// `status.keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
    /// When the key entered its state.
    pub since: SystemTime,
}

/// Why a rotation starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `spec.signing.rotation.every` has passed since the key became active.
    Schedule,
    /// The rotate-key annotation has a value not acted on yet.
    Requested(String),
    /// The active key's algorithm is no longer wanted (the server stopped
    /// listing it, or spec.signing.algorithm names another); the new key
    /// uses this one.
    Algorithm(SigningAlgorithm),
}

/// What the plan reads besides the key list.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub now: SystemTime,
    /// `spec.signing.rotation.every`; no scheduled rotation when unset.
    pub every: Option<Duration>,
    /// The rotate-key annotation, and the value last acted on.
    pub requested: Option<&'a str>,
    pub handled: Option<&'a str>,
    /// The server's algorithms, when it lists them, and the one it would
    /// choose for a new key.
    pub server_algorithms: Option<&'a [String]>,
    pub preferred: SigningAlgorithm,
    /// spec.signing.algorithm, when set.
    pub required: Option<SigningAlgorithm>,
    /// After the server refused the next key: not tried again before this.
    pub trial_not_before: Option<SystemTime>,
    /// Since when every replica serves the next key ([`served_since`]).
    pub next_served: Option<SystemTime>,
    /// How long EHRs may cache the JWKS (`--jwks-max-age`) and the margin
    /// on top (`--rotation-margin`).
    pub jwks_max_age: Duration,
    pub margin: Duration,
    /// The longest an assertion lives.
    pub assertion_lifetime: Duration,
}

/// The one thing to do now. The caller carries it out, stores the list it
/// leads to, and comes back at `revisit` (or when the resource changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do; look again at `revisit`, if set.
    Steady { revisit: Option<SystemTime> },
    /// Generate a `Next` key with this algorithm and publish it.
    GenerateNext {
        algorithm: SigningAlgorithm,
        trigger: Trigger,
    },
    /// `Next` is published; EHRs may still hold a JWKS without it.
    AwaitPublication { kid: String, until: SystemTime },
    /// The server refused `Next`; it is tried again at `until`.
    AwaitTrial { kid: String, until: SystemTime },
    /// Sign the next token request with `Next` (a trial).
    Trial { kid: String },
    /// Drop the retiring key (public and private).
    DropRetiring { kid: String },
}

pub fn find(keys: &[KeyEntry], state: KeyState) -> Option<&KeyEntry> {
    keys.iter().find(|k| k.state == state)
}

/// Why the active key should be replaced, if it should.
pub fn trigger(active: &KeyEntry, inputs: &Inputs<'_>) -> Option<Trigger> {
    if let Some(required) = inputs.required
        && required != active.algorithm
    {
        return Some(Trigger::Algorithm(required));
    }
    if let Some(listed) = inputs.server_algorithms
        && inputs.required.is_none()
        && !listed.iter().any(|a| a == active.algorithm.as_str())
    {
        return Some(Trigger::Algorithm(inputs.preferred));
    }
    if let Some(value) = inputs.requested
        && inputs.handled != Some(value)
    {
        return Some(Trigger::Requested(value.to_string()));
    }
    let due = inputs.every.map(|every| after(active.since, every));
    match due {
        Some(due) if inputs.now >= due => Some(Trigger::Schedule),
        _ => None,
    }
}

/// The next step of rotation for one client's keys.
pub fn plan(keys: &[KeyEntry], inputs: &Inputs<'_>) -> Step {
    let (next, active, retiring) = (
        find(keys, KeyState::Next),
        find(keys, KeyState::Active),
        find(keys, KeyState::Retiring),
    );
    let Some(active) = active else {
        // No key yet: the caller generates the first one as it always has.
        return Step::Steady { revisit: None };
    };
    // A retiring key leaves first: it may be past what anyone needs.
    if let Some(retiring) = retiring {
        let gone = retiring_gone(retiring, inputs);
        if inputs.now >= gone {
            return Step::DropRetiring {
                kid: retiring.kid.clone(),
            };
        }
    }
    if let Some(next) = next {
        let served = inputs.next_served.map_or(next.since, |s| s.max(next.since));
        let published = after_all(served, &[inputs.jwks_max_age, inputs.margin]);
        if inputs.now < published {
            return Step::AwaitPublication {
                kid: next.kid.clone(),
                until: published,
            };
        }
        // Promoting now would make a second retiring key: wait for the
        // first to go.
        if let Some(retiring) = retiring {
            return Step::Steady {
                revisit: Some(retiring_gone(retiring, inputs)),
            };
        }
        if let Some(until) = inputs.trial_not_before.filter(|t| inputs.now < *t) {
            return Step::AwaitTrial {
                kid: next.kid.clone(),
                until,
            };
        }
        return Step::Trial {
            kid: next.kid.clone(),
        };
    }
    if let Some(trigger) = trigger(active, inputs) {
        let algorithm = match &trigger {
            Trigger::Algorithm(algorithm) => *algorithm,
            _ => active.algorithm,
        };
        return Step::GenerateNext { algorithm, trigger };
    }
    let revisit = [
        retiring.map(|r| retiring_gone(r, inputs)),
        inputs.every.map(|every| after(active.since, every)),
    ]
    .into_iter()
    .flatten()
    .min();
    Step::Steady { revisit }
}

/// Since when every replica serves the next key: the replicas serve the
/// JWKS from the status, so it counts from the first status that listed
/// the key (`recorded`, when it names this key), not from the write of the
/// key Secret, which a failed status write can leave unpublished for long.
/// A key no status has listed yet is not served: its wait counts from
/// `now`. A status written before this was recorded counts from the key's
/// own time.
pub fn served_since(
    next: &KeyEntry,
    listed: bool,
    recorded: Option<(&str, SystemTime)>,
    now: SystemTime,
) -> SystemTime {
    if !listed {
        return now.max(next.since);
    }
    match recorded {
        Some((kid, since)) if kid == next.kid => since.max(next.since),
        _ => next.since,
    }
}

/// The next key, and since when every replica serves it ([`served_since`]),
/// read from the last status.
pub fn next_served(
    keys: &[KeyEntry],
    previous: &SmartBackendClientStatus,
    now: SystemTime,
) -> Option<(String, SystemTime)> {
    let next = find(keys, KeyState::Next)?;
    let listed = previous.keys.iter().any(|k| k.kid == next.kid);
    let recorded = previous
        .key_rotation
        .as_ref()
        .and_then(|r| r.next_key_served.as_ref())
        .and_then(|s| {
            let since = crate::controller::decide::secret_data::parse_rfc3339(&s.since)?;
            Some((s.kid.as_str(), since))
        });
    let now = crate::controller::decide::secret_data::ceil_second(now);
    let since = served_since(next, listed, recorded, now);
    Some((next.kid.clone(), since))
}

/// When a retiring key may go: its last assertion has expired and every
/// cache that held it has had time to drop it.
fn retiring_gone(retiring: &KeyEntry, inputs: &Inputs<'_>) -> SystemTime {
    after_all(
        retiring.since,
        &[inputs.assertion_lifetime, inputs.jwks_max_age],
    )
}

/// How long after the `refusals`-th refused trial the next key is tried
/// again: a minute, doubling, at most an hour.
pub fn trial_retry(refusals: u32) -> Duration {
    let doublings = refusals.saturating_sub(1).min(6);
    Duration::from_secs(60 << doublings).min(Duration::from_secs(3600))
}

/// The list after a trial the server accepted: `Next` signs from now on,
/// the old active key retires (its private key is no longer needed).
pub fn promote(keys: &[KeyEntry], now: SystemTime) -> Vec<KeyEntry> {
    keys.iter()
        .map(|k| {
            let state = match k.state {
                KeyState::Next => KeyState::Active,
                KeyState::Active => KeyState::Retiring,
                KeyState::Retiring => KeyState::Retiring,
            };
            KeyEntry {
                state,
                since: if state == k.state { k.since } else { now },
                ..k.clone()
            }
        })
        .collect()
}

/// The list after the server refused the key promoted last: the retiring
/// key signs again and the refused one is `Next` again (a `Next` published
/// meanwhile, which never signed, is dropped).
pub fn fall_back(keys: &[KeyEntry], now: SystemTime) -> Vec<KeyEntry> {
    keys.iter()
        .filter(|k| k.state != KeyState::Next)
        .map(|k| {
            let state = match k.state {
                KeyState::Retiring => KeyState::Active,
                _ => KeyState::Next,
            };
            KeyEntry {
                state,
                since: now,
                ..k.clone()
            }
        })
        .collect()
}

/// The list with a new `Next` key published now.
pub fn add_next(
    keys: &[KeyEntry],
    kid: &str,
    algorithm: SigningAlgorithm,
    now: SystemTime,
) -> Vec<KeyEntry> {
    let mut keys: Vec<KeyEntry> = keys
        .iter()
        .filter(|k| k.state != KeyState::Next)
        .cloned()
        .collect();
    keys.push(KeyEntry {
        kid: kid.to_string(),
        algorithm,
        state: KeyState::Next,
        since: now,
    });
    keys
}

/// The list without `kid`.
pub fn drop_key(keys: &[KeyEntry], kid: &str) -> Vec<KeyEntry> {
    keys.iter().filter(|k| k.kid != kid).cloned().collect()
}

#[cfg(test)]
mod tests;
