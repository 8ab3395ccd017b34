//! Status conditions: Ready, Discovered, KeyReady, TokenReady. A condition's
//! lastTransitionTime moves only when its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::controller::decide::reason::{Failure, Reason};

pub const READY: &str = "Ready";
pub const DISCOVERED: &str = "Discovered";
pub const KEY_READY: &str = "KeyReady";
pub const TOKEN_READY: &str = "TokenReady";

/// Condition messages are read by people; long server text is cut before it
/// gets here, and this bounds the whole.
const MAX_MESSAGE: usize = 1024;

/// One condition's desired state, without timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl State {
    pub fn ok(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }

    /// A condition this operator wrote earlier, read back; `None` for a
    /// reason it does not know (written by another version).
    pub fn read(condition: &Condition) -> Option<Self> {
        Some(Self {
            ok: condition.status == "True",
            reason: Reason::parse(&condition.reason)?,
            message: condition.message.clone(),
        })
    }
}

impl From<Failure> for State {
    fn from(failure: Failure) -> Self {
        State::failed(failure.reason, failure.message)
    }
}

/// Whether `conditions` say Ready.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Builds a condition, keeping `lastTransitionTime` from `previous` unless
/// the status changed.
pub fn condition(
    type_: &str,
    state: &State,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if state.ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let mut message = state.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: state.reason.as_str().to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t1 = Timestamp::from_second(1_000).unwrap();
        let t2 = Timestamp::from_second(2_000).unwrap();
        let first = condition(
            READY,
            &State::ok(Reason::TokenIssued, "a"),
            Some(1),
            &[],
            t1,
        );
        let same = condition(
            READY,
            &State::ok(Reason::TokenIssued, "b"),
            Some(2),
            std::slice::from_ref(&first),
            t2,
        );
        assert_eq!(same.last_transition_time, Time(t1));
        let flipped = condition(
            READY,
            &State::failed(Reason::InvalidClient, "c"),
            Some(2),
            &[same],
            t2,
        );
        assert_eq!(flipped.last_transition_time, Time(t2));
        assert_eq!(flipped.status, "False");
    }

    #[test]
    fn long_messages_are_bounded() {
        let t = Timestamp::from_second(1_000).unwrap();
        let c = condition(
            READY,
            &State::failed(Reason::InvalidSpec, "é".repeat(2000)),
            None,
            &[],
            t,
        );
        assert!(c.message.len() <= MAX_MESSAGE + 4);
    }
}
