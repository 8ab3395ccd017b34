//! What the server granted against what was asked for. RFC 6749 §5.1 lets a
//! server omit `scope` when it granted exactly the request, and return
//! fewer scopes than requested; both are said plainly instead of being
//! papered over with the request.

use std::time::SystemTime;

use kube::runtime::events::Event;

use crate::controller::decide::conditions::{State, TOKEN_READY};
use crate::controller::decide::events::Happened;
use crate::controller::decide::reason::Reason;
use crate::controller::decide::secret_data::rfc3339;
use crate::controller::decide::validate::ValidSpec;
use crate::crd::SmartBackendClientStatus;
use crate::smart::AccessToken;

/// The requested scopes the granted list lacks, in request order.
pub fn missing<'a>(requested: &'a str, granted: &str) -> Vec<&'a str> {
    let granted: Vec<&str> = granted.split_ascii_whitespace().collect();
    requested
        .split_ascii_whitespace()
        .filter(|scope| !granted.contains(scope))
        .collect()
}

/// TokenReady for a good token: `TokenIssued`, or `ScopeNarrowed` naming
/// what the server left out. `validity` says until when and the next
/// refresh.
pub fn token_state(requested: &str, granted: Option<&str>, validity: String) -> State {
    match granted {
        None => State::ok(
            Reason::TokenIssued,
            format!(
                "{validity}; the server did not state the granted scopes, which by RFC 6749 means those requested"
            ),
        ),
        Some(granted) => {
            let missing = missing(requested, granted);
            if missing.is_empty() {
                State::ok(Reason::TokenIssued, validity)
            } else {
                State::ok(
                    Reason::ScopeNarrowed,
                    format!(
                        "{validity}; the server granted {granted:?} and not {}: grant those scopes to the client at the server, or stop requesting them",
                        missing.join(" ")
                    ),
                )
            }
        }
    }
}

/// What TokenReady and the events say of a token obtained now, to be
/// refreshed at `next`: the first token is news, a narrowed grant is a
/// Warning once (not again while it stays narrowed).
pub fn obtained(
    spec: &ValidSpec,
    previous: &SmartBackendClientStatus,
    token: &AccessToken,
    next: SystemTime,
) -> (State, Vec<Event>) {
    let mut events = Vec::new();
    if previous.token_expires_at.is_none() {
        events.push(Happened::TokenIssued.event(format!(
            "first access token written to Secret {}",
            spec.token_secret_name
        )));
    }
    let mut message = format!(
        "token valid until {}; next refresh at {}",
        rfc3339(token.expires_at),
        rfc3339(next)
    );
    if token.expires_in_defaulted {
        message.push_str(&format!(
            "; the server gave no expires_in, so {}s is assumed",
            crate::smart::token::DEFAULT_EXPIRES_IN.as_secs()
        ));
    }
    let state = token_state(&spec.scope, token.scope.as_deref(), message);
    if state.reason == Reason::ScopeNarrowed {
        let was_narrowed = previous
            .conditions
            .iter()
            .any(|c| c.type_ == TOKEN_READY && c.reason == Reason::ScopeNarrowed.as_str());
        if !was_narrowed {
            events.push(Happened::ScopeNarrowed.event(state.message.clone()));
        }
    }
    (state, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrower_grant_is_reported_by_name_and_stays_ready() {
        let state = token_state(
            "system/Patient.rs system/Observation.rs",
            Some("system/Patient.rs"),
            "token valid".into(),
        );
        assert!(state.ok);
        assert_eq!(state.reason, Reason::ScopeNarrowed);
        assert!(
            state.message.contains("not system/Observation.rs"),
            "{}",
            state.message
        );
    }

    #[test]
    fn the_same_scopes_in_another_order_are_not_narrowed() {
        let state = token_state("a b", Some("b  a"), "token valid".into());
        assert_eq!(state.reason, Reason::TokenIssued);
        assert_eq!(state.message, "token valid");
        assert!(missing("a b c", "c").eq(&["a", "b"]));
    }

    #[test]
    fn an_unstated_grant_is_said_to_be_unstated() {
        let state = token_state("a b", None, "token valid".into());
        assert_eq!(state.reason, Reason::TokenIssued);
        assert!(state.message.contains("did not state the granted scopes"));
    }
}
