//! A key rotation's trial (one token request signed with the next key)
//! that brings no token, for any reason, never blocks the key that works:
//! the server below knows only the first key and answers anything else the
//! way broken servers do (a 500, a 401 with no JSON body).

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::wait_for;
use support::fault_server::{Behaviour, FaultServer, assertion_kid};
use support::operator::{Harness, WAIT};

async fn trial_failing_with(prefix: &str, failure: Behaviour) {
    let h = Harness::with(prefix, |s| {
        s.rotation.jwks_max_age = Duration::from_secs(1);
        s.rotation.margin = Duration::from_secs(1);
    })
    .await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", Behaviour::token("first", 3600, None));
    h.apply("c", json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}))
        .await;
    let ready = h.wait_ready("c").await;
    let kid = ready.status.unwrap().kid.unwrap();
    server.on(
        "/token",
        Behaviour::ByKid {
            kid: kid.clone(),
            signed: Box::new(Behaviour::token("second", 3600, None)),
            other: Box::new(failure),
        },
    );
    h.annotate("c", "smartbackend.dev/rotate-key", "1").await;
    wait_for(
        "the trial fails and says so",
        WAIT,
        || async { Some(h.event_reasons("c").await) },
        |reasons| reasons.iter().any(|r| r == "NextKeyTrialFailed"),
    )
    .await;
    // A refresh asked for after the failed trial comes from the working key.
    // (The trial's own reconcile already refreshed with it, so the token
    // alone cannot tell that the request was honoured: wait for the status
    // to say so, and count the working key's requests.)
    let signed_by_working_key = || {
        server
            .requests("/token")
            .iter()
            .filter(|r| assertion_kid(&r.body).as_deref() == Some(kid.as_str()))
            .count()
    };
    let before = signed_by_working_key();
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "after-trial")
        .await;
    let sbc = wait_for(
        "the refresh request is honoured",
        WAIT,
        || async { h.sbcs().get("c").await.ok() },
        |sbc| {
            sbc.status
                .as_ref()
                .and_then(|s| s.handled_refresh_request.as_deref())
                == Some("after-trial")
        },
    )
    .await;
    assert!(
        signed_by_working_key() > before,
        "the requested refresh was signed with the working key"
    );
    let secret = h.secret("c-token").await.expect("the token Secret");
    assert_eq!(Harness::value(&secret, "access_token"), "second");
    let status = sbc.status.unwrap();
    assert_eq!(
        status.kid.as_deref(),
        Some(kid.as_str()),
        "the first key signs"
    );
    let rotation = status.key_rotation.unwrap_or_default();
    assert!(
        rotation.next_trial_time.is_some(),
        "the next trial waits: {rotation:?}"
    );
    // The trial backs off (a minute): it is not repeated at every look.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let trials = server
        .requests("/token")
        .iter()
        .filter(|r| assertion_kid(&r.body).as_deref() != Some(kid.as_str()))
        .count();
    assert_eq!(trials, 1, "one trial, then a backoff");
}

#[tokio::test]
async fn a_trial_answered_with_a_server_error_leaves_the_working_key_refreshing() {
    trial_failing_with(
        "trial-500",
        Behaviour::json(500, json!({"error": "server_error"})),
    )
    .await;
}

#[tokio::test]
async fn a_trial_answered_with_a_bare_401_leaves_the_working_key_refreshing() {
    trial_failing_with(
        "trial-401",
        Behaviour::Respond {
            status: 401,
            headers: Vec::new(),
            body: b"Unauthorized".to_vec(),
        },
    )
    .await;
}
