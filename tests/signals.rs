//! Honest signals at the operator level, against the real control plane
//! and the fault server: a narrower grant than requested, a grant whose
//! scopes the server did not state, and a server whose clock disagrees.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, condition};

const BOTH: &str = "system/Patient.rs system/Observation.rs";

fn token(value: &str, scope: Option<&str>) -> Behaviour {
    Behaviour::token(value, 600, scope)
}

#[tokio::test]
async fn a_narrower_grant_stays_ready_and_names_what_is_missing_and_an_unstated_one_is_not_invented()
 {
    let h = Harness::new("sig-scope").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("one", Some("system/Patient.rs")));
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": BOTH.split(' ').collect::<Vec<_>>()}),
    )
    .await;
    let sbc = h
        .wait_condition("c", "Ready", "True", Some("ScopeNarrowed"))
        .await;
    let message = &condition(&sbc, "TokenReady").unwrap().message;
    assert!(message.contains("not system/Observation.rs"), "{message}");
    let status = sbc.status.as_ref().unwrap();
    assert_eq!(status.granted_scopes.as_deref(), Some("system/Patient.rs"));
    let secret = h.wait_secret("c-token").await;
    assert_eq!(Harness::value(&secret, "scope"), "system/Patient.rs");
    // Events are published right after the status write.
    support::cluster::wait_for(
        "the ScopeNarrowed event",
        support::operator::WAIT,
        || async { Some(h.event_reasons("c").await) },
        |reasons| reasons.iter().any(|r| r == "ScopeNarrowed"),
    )
    .await;
    assert!(
        h.metrics()
            .await
            .contains("smart_backend_tokens_scope_narrowed_total 1"),
        "the narrowed grant is counted"
    );

    // A grant that does not state its scopes is not written as the request.
    server.on("/token", token("two", None));
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    let sbc = h
        .wait_condition("c", "Ready", "True", Some("TokenIssued"))
        .await;
    let message = &condition(&sbc, "TokenReady").unwrap().message;
    assert!(
        message.contains("did not state the granted scopes"),
        "{message}"
    );
    assert_eq!(sbc.status.as_ref().unwrap().granted_scopes, None);
    let secret = h.wait_secret("c-token").await;
    assert_eq!(Harness::value(&secret, "access_token"), "two");
    assert!(
        !secret.data.as_ref().unwrap().contains_key("scope"),
        "no scope file when the server stated none"
    );
}

#[tokio::test]
async fn a_server_clock_a_minute_ahead_is_reported_once_and_measured() {
    let h = Harness::new("sig-clock").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    let ahead = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    server.on(
        "/token",
        token("one", Some("system/Patient.rs")).with_header("date", &ahead),
    );
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    let sbc = h.wait_ready("c").await;
    let message = &condition(&sbc, "TokenReady").unwrap().message;
    assert!(message.contains("ClockSkew"), "{message}");
    assert!(message.contains("ahead of this host"), "{message}");
    let gauge: f64 = h
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("smart_backend_clock_skew_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the skew gauge is exported");
    assert!((110.0..=125.0).contains(&gauge), "{gauge}");
    h.annotate("c", "smartbackend.dev/refresh-requested-at", "1")
        .await;
    support::cluster::wait_for(
        "a second token",
        support::operator::WAIT,
        || async { Some(server.requests("/token").len()) },
        |n| *n >= 2,
    )
    .await;
    let reasons = h.event_reasons("c").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "ClockSkew").count(),
        1,
        "said once, not at every refresh: {reasons:?}"
    );

    // Assertions are backdated, and exp - iat stays within SMART's 300 s.
    let request = server.requests("/token").pop().unwrap();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(request.body.as_bytes())
        .into_owned()
        .collect();
    let jwt = &form
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .unwrap()
        .1;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat + 4 <= now, "iat is backdated: {iat} vs {now}");
    assert!(exp - iat <= 300, "{}", exp - iat);
}

#[tokio::test]
async fn a_metadata_server_clock_a_minute_behind_is_said_on_discovered() {
    let h = Harness::new("sig-clock-disco").await;
    let server = FaultServer::start().await;
    let behind = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(90));
    let doc = json!({
        "token_endpoint": server.url("/token"),
        "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
    });
    server.on(
        "/fhir/.well-known/smart-configuration",
        Behaviour::json(200, doc).with_header("date", &behind),
    );
    server.on("/token", token("one", Some("system/Patient.rs")));
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    let sbc = h.wait_ready("c").await;
    let message = &condition(&sbc, "Discovered").unwrap().message;
    assert!(message.starts_with("ClockSkew"), "{message}");
    assert!(message.contains("behind this host"), "{message}");
    let token = &condition(&sbc, "TokenReady").unwrap().message;
    assert!(
        !token.contains("ClockSkew"),
        "the token endpoint's clock agrees: {token}"
    );
}
