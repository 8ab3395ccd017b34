//! `--selector` (the chart's `watch.selector`): an operator handles only the
//! SmartBackendClients whose labels match, so that two operators can share
//! a cluster; a selector the API server refuses stops it at start.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::TestNamespace;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, install_crd, start_operator, test_settings};

const SHARD: &str = "tests.smartbackend.dev/shard";

#[tokio::test]
async fn an_operator_handles_only_the_clients_its_selector_matches() {
    let h = Harness::with("selector", |s| s.selector = Some(format!("{SHARD}=a"))).await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", Behaviour::token("t", 600, None));
    let spec = |id: &str| json!({"fhirBaseUrl": server.url("/fhir"), "clientId": id, "scopes": ["system/Patient.rs"]});

    h.apply_labelled("other", json!({SHARD: "b"}), spec("other"))
        .await;
    h.apply("unlabelled", spec("unlabelled")).await;
    h.apply_labelled("mine", json!({SHARD: "a"}), spec("mine"))
        .await;
    h.wait_ready("mine").await;
    assert!(h.secret("mine-token").await.is_some());

    // The matching client was handled; give the others as long again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["other", "unlabelled"] {
        let sbc = h.sbcs().get(name).await.expect("client");
        assert!(sbc.status.is_none(), "{name} was handled: {:?}", sbc.status);
        assert!(h.secret(&format!("{name}-token")).await.is_none());
        assert!(h.secret(&format!("{name}-signing-key")).await.is_none());
    }

    // Labelled later, it is picked up by the running watch.
    h.apply_labelled("other", json!({SHARD: "a"}), spec("other"))
        .await;
    h.wait_ready("other").await;
}

#[tokio::test]
async fn a_selector_the_api_server_refuses_stops_the_operator_at_start() {
    let ns = TestNamespace::new("selector-bad").await;
    install_crd(&ns.client).await;
    let mut settings = test_settings(&ns.name);
    settings.selector = Some("tier in (a".into());
    let started = start_operator(ns.client.clone(), settings).await;
    let error = started
        .err()
        .expect("the operator refuses to start")
        .to_string();
    assert!(
        error.contains("--selector \"tier in (a\" is not a label selector"),
        "{error}"
    );
}
