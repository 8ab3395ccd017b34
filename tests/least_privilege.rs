//! Least privilege at the operator level: a key Secret is signed with only
//! when its owner opted in with a label, so that whoever may create a
//! SmartBackendClient in a namespace cannot get assertions signed with any
//! key Secret there, including ones they cannot read.

mod support;

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use smart_backend_operator::smart::SigningAlgorithm;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, condition};

#[tokio::test]
async fn a_key_secret_without_the_opt_in_label_is_not_signed_with_until_labelled() {
    let h = Harness::new("optin").await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", Behaviour::token("t", 600, None));
    let key = support::signing_key(SigningAlgorithm::ES384);
    let pem = support::pem(&key).into_bytes();
    let secret = support::key_secret("team-key", pem, false);
    h.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"],
               "signing": {"keySecretRef": {"name": "team-key", "key": "key.pem"}}}),
    )
    .await;
    let sbc = h
        .wait_condition("c", "KeyReady", "False", Some("KeySecretNotOptedIn"))
        .await;
    let message = &condition(&sbc, "KeyReady").unwrap().message;
    assert!(
        message.contains("smartbackend.dev/signing-key=true"),
        "{message}"
    );
    assert!(server.requests("/token").is_empty(), "nothing was signed");

    // The owner opts in; the next (quiet) retry signs with it.
    let label = json!({"metadata": {"labels": {"smartbackend.dev/signing-key": "true"}}});
    h.secrets()
        .patch("team-key", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let sbc = h.wait_ready("c").await;
    assert_eq!(sbc.status.unwrap().kid.as_deref(), Some(key.kid()));
}
