use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::controller::model::memory::TokenMemo;
use crate::crd::REGENERATE_KEY_ANNOTATION;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn meta(generation: i64, annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        generation: Some(generation),
        annotations: Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// A memory that settled at generation 3 with the token Secret at version
/// "10", next refresh at t(600).
fn settled_memory() -> ClientMemory {
    let mut memory = ClientMemory::default();
    memory.settle(Some(Settled {
        generation: Some(3),
        requests: [None, None, None],
        own_secrets: vec![("c-token".into(), vec!["9".into(), "10".into()])],
        until: t(600),
    }));
    memory
}

fn watch_shows(version: &'static str) -> impl Fn(&str) -> Option<String> {
    move |name| (name == "c-token").then(|| version.to_string())
}

#[test]
fn a_settled_client_waits_without_a_request_until_something_it_reads_changes() {
    let cases: Vec<(&str, ObjectMeta, u64, &str, Option<Duration>)> = vec![
        (
            "nothing changed: wait for the refresh",
            meta(3, &[]),
            100,
            "10",
            Some(Duration::from_secs(500)),
        ),
        (
            "an earlier version the reconcile also saw",
            meta(3, &[]),
            100,
            "9",
            Some(Duration::from_secs(500)),
        ),
        ("the spec changed", meta(4, &[]), 100, "10", None),
        (
            "a refresh was requested",
            meta(3, &[(REFRESH_REQUESTED_ANNOTATION, "now")]),
            100,
            "10",
            None,
        ),
        (
            "a new key was asked for",
            meta(3, &[(REGENERATE_KEY_ANNOTATION, "1")]),
            100,
            "10",
            None,
        ),
        (
            "someone changed the token Secret",
            meta(3, &[]),
            100,
            "11",
            None,
        ),
        ("the refresh is due", meta(3, &[]), 600, "10", None),
    ];
    for (what, meta, now, version, expected) in cases {
        let mut memory = settled_memory();
        let wait = settled_wait(&mut memory, &meta, t(now), watch_shows(version));
        assert_eq!(wait, expected, "{what}");
        assert_eq!(
            memory.take_settled().is_some(),
            expected.is_some(),
            "{what}: kept only while it holds"
        );
    }
    let mut memory = settled_memory();
    assert_eq!(
        settled_wait(&mut memory, &meta(3, &[]), t(100), |_| None),
        None,
        "a Secret the watch does not show"
    );
    let mut fresh = ClientMemory::default();
    assert_eq!(
        settled_wait(&mut fresh, &meta(3, &[]), t(100), watch_shows("10")),
        None,
        "nothing settled yet"
    );
}

fn target(annotations: &[(&str, &str)]) -> Target<'static> {
    Target {
        name: "c",
        namespace: "n",
        uid: "u",
        owner: OwnerReference::default(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        status_kid: None,
        handled_key_regeneration: None,
    }
}

/// A status after two failures at generation 3, retrying at t(300).
fn failing() -> SmartBackendClientStatus {
    SmartBackendClientStatus {
        consecutive_failures: 2,
        observed_generation: Some(3),
        next_retry_time: Some(secret_data::rfc3339(t(300))),
        handled_refresh_request: Some("old".into()),
        ..SmartBackendClientStatus::default()
    }
}

fn backoff(generation: i64, now: u64, just_granted: bool) -> Backoff {
    Backoff {
        generation: Some(generation),
        now: t(now),
        just_granted,
    }
}

/// What, the memory, the resource, the last status, the backoff inputs,
/// and the wait expected.
type BackoffCase<'a> = (
    &'a str,
    &'a ClientMemory,
    Target<'static>,
    &'a SmartBackendClientStatus,
    Backoff,
    Option<Duration>,
);

#[test]
fn a_backoff_is_waited_out_unless_the_failure_is_no_longer_current() {
    let memory = ClientMemory::default();
    let mut handled_here = ClientMemory::default();
    handled_here.learn(TokenMemo {
        handled_request: Some("mine".into()),
        ..TokenMemo::default()
    });
    let healthy = SmartBackendClientStatus::default();
    let failing = failing();
    let requested = |v: &'static str| target(&[(REFRESH_REQUESTED_ANNOTATION, v)]);
    let cases: Vec<BackoffCase<'_>> = vec![
        (
            "still failing: wait",
            &memory,
            target(&[]),
            &failing,
            backoff(3, 100, false),
            Some(Duration::from_secs(200)),
        ),
        (
            "no failure",
            &memory,
            target(&[]),
            &healthy,
            backoff(3, 100, false),
            None,
        ),
        (
            "the spec changed",
            &memory,
            target(&[]),
            &failing,
            backoff(4, 100, false),
            None,
        ),
        (
            "the retry is due",
            &memory,
            target(&[]),
            &failing,
            backoff(3, 300, false),
            None,
        ),
        (
            "the namespace just granted Secrets",
            &memory,
            target(&[]),
            &failing,
            backoff(3, 100, true),
            None,
        ),
        (
            "a new refresh request",
            &memory,
            requested("new"),
            &failing,
            backoff(3, 100, false),
            None,
        ),
        (
            "a request the status shows handled",
            &memory,
            requested("old"),
            &failing,
            backoff(3, 100, false),
            Some(Duration::from_secs(200)),
        ),
        (
            "a new rotate-key request",
            &memory,
            target(&[(crate::crd::ROTATE_KEY_ANNOTATION, "1")]),
            &failing,
            backoff(3, 100, false),
            None,
        ),
        (
            "a request this process handled (the watch lags)",
            &handled_here,
            requested("mine"),
            &failing,
            backoff(3, 100, false),
            Some(Duration::from_secs(200)),
        ),
    ];
    for (what, memory, target, previous, backoff, expected) in cases {
        assert_eq!(
            backoff_remaining(memory, &target, previous, backoff),
            expected,
            "{what}"
        );
    }
}

/// A settled status at generation 3: Ready, no failure, the next refresh
/// at t(refresh).
fn settled_status(refresh: u64) -> SmartBackendClientStatus {
    SmartBackendClientStatus {
        observed_generation: Some(3),
        next_refresh_time: Some(secret_data::rfc3339(t(refresh))),
        handled_refresh_request: Some("r1".into()),
        conditions: vec![conditions::condition(
            conditions::READY,
            &conditions::State::ok(crate::controller::decide::reason::Reason::TokenIssued, ""),
            Some(3),
            &[],
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        )],
        ..SmartBackendClientStatus::default()
    }
}

#[test]
fn a_terms_first_looks_come_in_the_order_of_the_refreshes_and_never_after_one() {
    // The term started at t(0); it is t(0) now.
    let wait = |refresh| first_look_wait(&meta(3, &[]), Some(&settled_status(refresh)), t(0), t(0));
    let waits: Vec<Option<Duration>> = [0, 1, 10, 30, 60, 3600].map(wait).to_vec();
    assert_eq!(waits[0], None, "due now: looked at now");
    let looks: Vec<Duration> = waits[1..].iter().map(|w| w.expect("a wait")).collect();
    assert!(looks.windows(2).all(|w| w[0] < w[1]), "in order: {looks:?}");
    for (look, refresh) in looks.iter().zip([1, 10, 30, 60, 3600]) {
        assert!(*look < Duration::from_secs(refresh), "before the refresh");
        assert!(*look < FIRST_LOOK_SPREAD, "within the spread");
    }
    // A 60-second token refreshed at half its life: looked at by 20 s.
    assert_eq!(looks[2], Duration::from_secs(20));
    // Later in the term, the look is where it was planned, not later.
    let later = first_look_wait(&meta(3, &[]), Some(&settled_status(60)), t(0), t(10));
    assert_eq!(later, Some(Duration::from_secs(20)));
    assert_eq!(
        first_look_wait(&meta(3, &[]), Some(&settled_status(60)), t(0), t(31)),
        None,
        "its time has come"
    );
}

#[test]
fn a_first_look_waits_only_for_a_client_with_nothing_to_do() {
    let wait = |meta: ObjectMeta, status: SmartBackendClientStatus| {
        first_look_wait(&meta, Some(&status), t(0), t(0))
    };
    let settled = settled_status(30);
    assert!(wait(meta(3, &[]), settled.clone()).is_some());
    assert!(
        wait(
            meta(3, &[(REFRESH_REQUESTED_ANNOTATION, "r1")]),
            settled.clone()
        )
        .is_some(),
        "a request already handled"
    );
    let not_settled: Vec<(&str, ObjectMeta, SmartBackendClientStatus)> = vec![
        ("the spec changed", meta(4, &[]), settled.clone()),
        (
            "a new refresh request",
            meta(3, &[(REFRESH_REQUESTED_ANNOTATION, "r2")]),
            settled.clone(),
        ),
        (
            "a key regeneration asked for",
            meta(3, &[(REGENERATE_KEY_ANNOTATION, "1")]),
            settled.clone(),
        ),
        (
            "a rotation asked for",
            meta(3, &[(crate::crd::ROTATE_KEY_ANNOTATION, "1")]),
            settled.clone(),
        ),
        (
            "a failure",
            meta(3, &[]),
            SmartBackendClientStatus {
                consecutive_failures: 1,
                ..settled.clone()
            },
        ),
        (
            "not Ready",
            meta(3, &[]),
            SmartBackendClientStatus {
                conditions: Vec::new(),
                ..settled.clone()
            },
        ),
        (
            "no refresh planned",
            meta(3, &[]),
            SmartBackendClientStatus {
                next_refresh_time: None,
                ..settled.clone()
            },
        ),
    ];
    for (why, meta, status) in not_settled {
        assert_eq!(wait(meta, status), None, "{why}");
    }
    assert_eq!(
        first_look_wait(&meta(3, &[]), None, t(0), t(0)),
        None,
        "no status"
    );
    // A rotation's trial due sooner than the refresh brings the look forward.
    let trial = SmartBackendClientStatus {
        key_rotation: Some(crate::crd::KeyRotationStatus {
            next_trial_time: Some(secret_data::rfc3339(t(1))),
            ..Default::default()
        }),
        ..settled_status(3600)
    };
    assert!(wait(meta(3, &[]), trial).unwrap() < Duration::from_secs(1));
}

#[test]
fn overdue_clients_at_a_late_terms_start_come_in_the_order_of_expiry() {
    // The refresh was due before the term began (t(100)); the tokens
    // expire 1 s to an hour after it.
    let status = |expires: u64| SmartBackendClientStatus {
        token_expires_at: Some(secret_data::rfc3339(t(100 + expires))),
        ..settled_status(90)
    };
    let wait = |expires| first_look_wait(&meta(3, &[]), Some(&status(expires)), t(100), t(100));
    let looks: Vec<Duration> = [1, 5, 20, 30, 3600]
        .map(|e| wait(e).expect("a wait"))
        .to_vec();
    assert!(looks.windows(2).all(|w| w[0] < w[1]), "in order: {looks:?}");
    for (look, left) in looks.iter().zip([1, 5, 20, 30, 3600]) {
        assert!(
            *look <= Duration::from_secs(left) / 4,
            "a quarter of the time left"
        );
        assert!(*look < OVERDUE_SPREAD);
    }
    assert_eq!(wait(0), None, "expiring now: looked at now");
    let expired = first_look_wait(&meta(3, &[]), Some(&status(0)), t(101), t(101));
    assert_eq!(expired, None, "already expired: looked at now");
    let unknown = SmartBackendClientStatus {
        token_expires_at: None,
        ..settled_status(90)
    };
    assert_eq!(
        first_look_wait(&meta(3, &[]), Some(&unknown), t(100), t(100)),
        None,
        "no expiry known: looked at now"
    );
}
