//! The events the operator publishes about a client, each named once. A
//! Ready condition that turns False is published under its [`Reason`]
//! (see `draft::Draft::finish`); everything else that happens is one of these.

use kube::runtime::events::{Event, EventType};

use crate::crd::SmartBackendClientStatus;

use crate::controller::decide::reason::Reason;

/// Something that happened to a client that a person may want to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Happened {
    KeyGenerated,
    TokenIssued,
    ScopeNarrowed,
    ClockSkew,
    TokenEndpointChanged,
    KeyRotationStarted,
    KeyRotated,
    KeyRetired,
    KeyRotationNotPossible,
    NextKeyRefused,
    NextKeyTrialFailed,
    KeyFellBack,
}

impl Happened {
    #[cfg(test)]
    pub const ALL: [Happened; 12] = [
        Happened::KeyGenerated,
        Happened::TokenIssued,
        Happened::ScopeNarrowed,
        Happened::ClockSkew,
        Happened::TokenEndpointChanged,
        Happened::KeyRotationStarted,
        Happened::KeyRotated,
        Happened::KeyRetired,
        Happened::KeyRotationNotPossible,
        Happened::NextKeyRefused,
        Happened::NextKeyTrialFailed,
        Happened::KeyFellBack,
    ];

    /// The event's reason, as `kubectl get events` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Happened::KeyGenerated => "KeyGenerated",
            Happened::TokenIssued => "TokenIssued",
            Happened::ScopeNarrowed => Reason::ScopeNarrowed.as_str(),
            Happened::ClockSkew => "ClockSkew",
            Happened::TokenEndpointChanged => "TokenEndpointChanged",
            Happened::KeyRotationStarted => "KeyRotationStarted",
            Happened::KeyRotated => "KeyRotated",
            Happened::KeyRetired => "KeyRetired",
            Happened::KeyRotationNotPossible => "KeyRotationNotPossible",
            Happened::NextKeyRefused => "NextKeyRefused",
            Happened::NextKeyTrialFailed => "NextKeyTrialFailed",
            Happened::KeyFellBack => "KeyFellBack",
        }
    }

    /// Whether a person should look (Warning) or it is news (Normal).
    pub fn warns(self) -> bool {
        matches!(
            self,
            Happened::ScopeNarrowed
                | Happened::ClockSkew
                | Happened::TokenEndpointChanged
                | Happened::KeyRotationNotPossible
                | Happened::NextKeyRefused
                | Happened::NextKeyTrialFailed
                | Happened::KeyFellBack
        )
    }

    /// What the operator was doing.
    fn action(self) -> &'static str {
        match self {
            Happened::KeyGenerated => "GenerateKey",
            Happened::TokenIssued | Happened::ScopeNarrowed | Happened::ClockSkew => "RequestToken",
            Happened::TokenEndpointChanged => "Discover",
            Happened::KeyRotationStarted
            | Happened::KeyRotated
            | Happened::KeyRetired
            | Happened::KeyRotationNotPossible
            | Happened::NextKeyRefused
            | Happened::NextKeyTrialFailed
            | Happened::KeyFellBack => "RotateKey",
        }
    }

    /// The event, with `note` saying what happened and what to do.
    pub fn event(self, note: impl Into<String>) -> Event {
        Event {
            type_: if self.warns() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.as_str().into(),
            note: Some(note.into()),
            action: self.action().into(),
            secondary: None,
        }
    }
}

/// A Warning when the token endpoint's host differs from the one the last
/// token came from: assertions (and the client's identity) now go
/// elsewhere, which a person should know about.
pub fn endpoint_moved(previous: &SmartBackendClientStatus, now: &url::Url) -> Option<Event> {
    let before = url::Url::parse(previous.token_endpoint.as_deref()?).ok()?;
    if before.host_str() == now.host_str()
        && before.port_or_known_default() == now.port_or_known_default()
    {
        return None;
    }
    Some(Happened::TokenEndpointChanged.event(format!(
        "the token endpoint moved from {} to {} (the server's metadata or the resource changed); assertions are now sent there",
        before.authority(),
        now.authority()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_reason_is_distinct_and_documented() {
        let readme = include_str!("../../../README.md");
        let mut seen = std::collections::HashSet::new();
        for happened in Happened::ALL {
            let reason = happened.as_str();
            assert!(seen.insert(reason), "{reason} twice");
            assert!(
                readme.contains(&format!("`{reason}`")),
                "the README's events table names `{reason}`"
            );
            let event = happened.event("n");
            assert_eq!(event.reason, reason);
            assert_eq!(event.type_ == EventType::Warning, happened.warns());
        }
    }

    #[test]
    fn a_token_endpoint_on_another_host_is_an_event_and_a_new_path_is_not() {
        let previous = SmartBackendClientStatus {
            token_endpoint: Some("https://ehr.example/oauth/token".into()),
            ..Default::default()
        };
        let same_host = url::Url::parse("https://ehr.example/v2/token").unwrap();
        assert!(endpoint_moved(&previous, &same_host).is_none());
        let moved = url::Url::parse("https://login.elsewhere.example/token").unwrap();
        let event = endpoint_moved(&previous, &moved).unwrap();
        assert_eq!(event.reason, "TokenEndpointChanged");
        assert!(event.note.unwrap().contains("login.elsewhere.example"));
        assert!(endpoint_moved(&SmartBackendClientStatus::default(), &moved).is_none());
    }
}
