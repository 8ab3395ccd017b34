//! The operator signs with keys that stay in AWS KMS (moto, SigV4 and IAM
//! checked), found by their aliases under the namespace, with credentials
//! from the standard chain (the environment here). A real OAuth server
//! (oidc-provider) verifies every assertion at the operator's JWKS URL. A
//! next key (`awsKms.nextKey`) is published first and signs after the wait
//! and a trial, through an operator restart, with no refused request; a
//! missing `kms:Sign` and a missing alias keep the token and say what to
//! do; no Secret holds key material.
//!
//! The credentials are the process's environment, so each scenario here
//! is one test of its own binary's (the failures use a user with fewer
//! rights, and run in one test after the rotation).

mod support;

use std::time::Duration;

use serde_json::json;
use smart_backend_operator::controller::Settings;
use smart_backend_operator::crd::REFRESH_REQUESTED_ANNOTATION;
use smart_backend_operator::smart::signer::KmsSettings;
use support::cluster::wait_for;
use support::key_managers::{
    SCOPE, no_key_material, server_fetching, token_of, wait_next_published, wait_promoted,
};
use support::moto::Moto;
use support::oidc::OidcServer;
use support::operator::{Harness, condition};

fn kms_settings(moto: &Moto) -> impl FnOnce(&mut Settings) + use<> {
    let endpoint = moto.endpoint.parse().unwrap();
    move |settings: &mut Settings| {
        settings.kms = Some(KmsSettings {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            alias_prefix: "smartbackend".into(),
        });
        // oidc-provider keeps a fetched JWK Set for at least 60 s whatever
        // the max-age says (tests/rotation.rs): the operator must wait that.
        settings.rotation.jwks_max_age = Duration::from_secs(60);
        settings.rotation.margin = Duration::from_secs(2);
    }
}

fn spec(server: &OidcServer, kms: serde_json::Value) -> serde_json::Value {
    json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "billing", "scopes": [SCOPE],
           "signing": {"awsKms": kms}})
}

#[tokio::test]
async fn an_operator_signs_in_kms_and_rotates_to_the_next_key_with_no_refusal() {
    let moto = Moto::start();
    moto.operator_user("kms:GetPublicKey,kms:Sign");
    let mut h = Harness::with("kms-op", kms_settings(&moto)).await;
    let ns = h.ns.name.clone();
    let alias = |name: &str| format!("alias/smartbackend/{ns}/{name}");
    moto.create_key("ECC_NIST_P384", &alias("billing"));
    let server = server_fetching(&h, "billing");
    h.apply("billing", spec(&server, json!({"key": "billing"})))
        .await;
    let sbc = h.wait_ready("billing").await;
    assert_eq!(sbc.status.as_ref().unwrap().key_secret_name, None);
    let key_condition = condition(&sbc, "KeyReady")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        key_condition.contains(&format!("in AWS KMS key {}", alias("billing"))),
        "{key_condition}"
    );
    assert!(!token_of(&h.wait_secret("billing-token").await).is_empty());
    no_key_material(&h).await;

    // A new key, named as next: published first ...
    moto.create_key("RSA_3072", &alias("billing-2"));
    h.apply(
        "billing",
        spec(&server, json!({"key": "billing", "nextKey": "billing-2"})),
    )
    .await;
    let next_kid = wait_next_published(&h).await;
    // ... through an operator restart (its state is the status) ...
    let mut settings = support::operator::test_settings(&ns);
    kms_settings(&moto)(&mut settings);
    h.restart_in_place(settings).await;
    // ... and after the JWKS max-age (60 s here) and the margin, a token
    // request tries it, and the token it brings makes it the signing one.
    wait_promoted(&h, &next_kid).await;
    // The spec then names the new key alone: it goes on signing.
    h.apply("billing", spec(&server, json!({"key": "billing-2"})))
        .await;
    let before = token_of(&h.secret("billing-token").await.unwrap());
    h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "next-signs")
        .await;
    let secrets = h.secrets();
    wait_for(
        "a token signed by the new key",
        Duration::from_secs(60),
        || async { secrets.get_opt("billing-token").await.ok().flatten() },
        |s| token_of(s) != before,
    )
    .await;
    let now = h.sbcs().get("billing").await.unwrap();
    assert_eq!(now.status.and_then(|s| s.kid), Some(next_kid));
    let (requests, issued) = server.stats().await;
    assert!(requests >= 3, "{requests}");
    assert_eq!(requests, issued, "no request was refused");
    no_key_material(&h).await;
}
