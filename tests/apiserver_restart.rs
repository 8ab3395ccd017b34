//! The API server goes away mid-run and comes back: the operator's watches
//! resume and the refresh that fell due is not lost. Its own test binary,
//! because stopping the API server would disturb tests running beside it.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use smart_backend_operator::controller::decide::secret_data::parse_rfc3339;
use support::cluster::{repo_root, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::operator::Harness;

fn control_plane(command: &str) {
    let status = Command::new(repo_root().join("tests/cluster/control-plane"))
        .arg(command)
        .status()
        .expect("run tests/cluster/control-plane");
    assert!(status.success(), "control-plane {command} failed");
}

fn token(value: &str) -> Behaviour {
    Behaviour::token(value, 60, None)
}

#[tokio::test]
async fn watches_resume_after_an_api_server_restart_and_no_refresh_is_lost() {
    let h = Harness::new("apiserver-restart").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("before"));
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"],
               "token": {"refreshBefore": "30s"}}),
    )
    .await;
    h.wait_ready("c").await;
    let first = h.secret("c-token").await.unwrap();
    let expires = parse_rfc3339(&Harness::value(&first, "expires_at")).unwrap();
    server.on("/token", token("after"));

    // Down for six seconds (plus the API server's start-up), well before
    // the refresh falls due thirty seconds after issue.
    control_plane("stop-apiserver");
    tokio::time::sleep(Duration::from_secs(6)).await;
    control_plane("start-apiserver");

    let renewed = wait_for(
        "the refresh that fell due after the restart",
        Duration::from_secs(90),
        || async { h.secrets().get_opt("c-token").await.ok().flatten() },
        |s| Harness::value(s, "access_token") == "after",
    )
    .await;
    let issued =
        renewed.metadata.annotations.as_ref().unwrap()["smartbackend.dev/issued-at"].clone();
    assert!(
        parse_rfc3339(&issued).unwrap() < expires,
        "the new token was obtained before the old one expired (issued {issued}, old expiry {})",
        Harness::value(&first, "expires_at")
    );
    assert!(parse_rfc3339(&Harness::value(&renewed, "expires_at")).unwrap() > expires);
    h.wait_ready("c").await;
}
