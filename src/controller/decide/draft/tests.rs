use std::time::{Duration, SystemTime};

use super::*;

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn with_token(expires_in: i64) -> SmartBackendClientStatus {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs((NOW as i64 + expires_in) as u64);
    SmartBackendClientStatus {
        token_expires_at: Some(secret_data::rfc3339(at)),
        token_secret_name: Some("c-token".into()),
        ..Default::default()
    }
}

fn ready(
    status: &SmartBackendClientStatus,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
}

#[test]
fn a_transient_failure_is_counted_backed_off_and_says_when_it_is_retried() {
    let previous = SmartBackendClientStatus {
        consecutive_failures: 2,
        ..Default::default()
    };
    let mut draft = Draft::new(&previous);
    let failure = Failure::new(
        Reason::TokenEndpointUnavailable,
        "the token endpoint answered HTTP 503",
    );
    let action = draft.fail(
        Slot::Token,
        failure,
        &previous,
        &Timing::default(),
        now(),
        0.5,
    );
    assert_eq!(action, Requeue::After(Duration::from_secs(20)));
    assert_eq!(draft.fields.consecutive_failures, 3);
    assert_eq!(
        draft.fields.next_retry_time,
        Some(secret_data::rfc3339(now() + Duration::from_secs(20)))
    );
    let token = draft.token.unwrap();
    assert!(!token.ok);
    assert!(
        token.message.ends_with("; retrying in 20s"),
        "{}",
        token.message
    );
}

#[test]
fn a_transient_api_failure_reading_the_ca_bundle_backs_off_instead_of_waiting_half_an_hour() {
    let previous = SmartBackendClientStatus::default();
    let mut draft = Draft::new(&previous);
    let failure = Failure::new(Reason::CaBundleUnavailable, "reading Secret ca failed");
    let action = draft.fail(
        Slot::Discovered,
        failure,
        &previous,
        &Timing::default(),
        now(),
        0.5,
    );
    assert_eq!(action, Requeue::After(Duration::from_secs(5)));
}

#[test]
fn a_permanent_failure_waits_for_a_change_with_a_slow_safety_retry() {
    let previous = SmartBackendClientStatus::default();
    let mut draft = Draft::new(&previous);
    let failure = Failure::new(
        Reason::InvalidClient,
        "the token endpoint answered invalid_client",
    );
    let action = draft.fail(
        Slot::Token,
        failure,
        &previous,
        &Timing::default(),
        now(),
        0.5,
    );
    assert_eq!(action, Requeue::After(Timing::default().permanent_retry));
    assert!(
        draft
            .token
            .unwrap()
            .message
            .contains("retries on any change")
    );
}

#[test]
fn a_failing_ready_says_until_when_the_kept_token_is_valid() {
    let previous = with_token(600);
    let mut draft = Draft::new(&previous);
    draft.set(
        Slot::Token,
        State::failed(Reason::RateLimited, "rate limited"),
    );
    let status = draft.finish(&previous, Some(1), now());
    assert_eq!(ready(&status).reason, "RateLimited");
    assert!(
        ready(&status).message.contains("stays valid until"),
        "{}",
        ready(&status).message
    );

    let expired = with_token(-5);
    let mut draft = Draft::new(&expired);
    draft.set(
        Slot::Token,
        State::failed(Reason::RateLimited, "rate limited"),
    );
    let status = draft.finish(&expired, Some(1), now());
    assert!(
        ready(&status).message.ends_with("has expired"),
        "{}",
        ready(&status).message
    );
}

#[test]
fn ready_warns_once_per_new_reason_and_not_for_the_normal_wait() {
    let previous = SmartBackendClientStatus::default();
    let mut draft = Draft::new(&previous);
    draft.set(Slot::Key, State::failed(Reason::KeyInvalid, "bad key"));
    let first = draft.finish(&previous, Some(1), now());
    assert_eq!(draft.events.len(), 1);
    assert_eq!(draft.events[0].type_, EventType::Warning);

    let mut again = Draft::new(&first);
    again.set(Slot::Key, State::failed(Reason::KeyInvalid, "bad key"));
    again.finish(&first, Some(1), now());
    assert!(again.events.is_empty(), "the same reason again is no news");

    let mut pending = Draft::new(&previous);
    pending.set(Slot::Key, State::ok(Reason::KeyReady, "key"));
    let status = pending.finish(&previous, Some(1), now());
    assert_eq!(ready(&status).reason, "TokenPending");
    assert!(pending.events.is_empty());

    let mut awaiting = Draft::new(&previous);
    awaiting.set(
        Slot::Token,
        State::failed(Reason::AwaitingRegistration, "register"),
    );
    awaiting.finish(&previous, Some(1), now());
    assert_eq!(awaiting.events[0].type_, EventType::Normal);
}

#[test]
fn conditions_not_evaluated_now_are_carried_and_still_decide_ready() {
    let previous = SmartBackendClientStatus::default();
    let mut draft = Draft::new(&previous);
    draft.set(
        Slot::Discovered,
        State::failed(Reason::DiscoveryFailed, "no metadata"),
    );
    let failed = draft.finish(&previous, Some(1), now());

    let mut later = Draft::new(&failed);
    later.set(Slot::Token, State::ok(Reason::TokenIssued, "fine"));
    let status = later.finish(&failed, Some(1), now());
    assert_eq!(ready(&status).reason, "DiscoveryFailed");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Discovered" && c.status == "False")
    );

    let mut healthy = Draft::new(&failed);
    healthy.set(Slot::Discovered, State::ok(Reason::Discovered, "ok"));
    healthy.set(Slot::Key, State::ok(Reason::KeyReady, "ok"));
    healthy.set(
        Slot::Token,
        State::ok(Reason::ScopeNarrowed, "fewer scopes"),
    );
    let status = healthy.finish(&failed, Some(1), now());
    assert_eq!(ready(&status).status, "True");
    assert_eq!(ready(&status).reason, "ScopeNarrowed");
}
