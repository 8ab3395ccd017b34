//! What the server granted against what was asked for. RFC 6749 §5.1 lets a
//! server omit `scope` when it granted exactly the request, and return
//! fewer scopes than requested; both are said plainly instead of being
//! papered over with the request.

use crate::controller::decide::conditions::State;
use crate::controller::decide::reason::Reason;

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
