//! Conformance against Keycloak, a second real and independent
//! authorization server (beside oidc-provider): the `token` command and the
//! operator on the control plane, both algorithms, keys registered by JWKS
//! URL and by value, discovery through `issuer` (Keycloak publishes OpenID
//! Connect metadata and no SMART configuration), and a wrong key refused.

mod support;

use serde_json::json;
use smart_backend_operator::smart::{SigningAlgorithm, SigningKey};
use support::fault_server::{Behaviour, FaultServer};
use support::keycloak::{KeyRegistration, Keycloak};
use support::operator::{Harness, condition};

const SCOPES: &[&str] = &["system/Patient.rs", "system/Observation.rs"];

/// Runs `token` by Keycloak's issuer. Async, so that the test's own JWKS
/// host keeps answering Keycloak while the command waits.
async fn run_token_command(
    issuer: &str,
    client_id: &str,
    key: &SigningKey,
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, support::pem(key)).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .args([
            "token",
            "--issuer",
            issuer,
            "--fhir-base-url",
            "http://127.0.0.1:9/fhir",
        ])
        .args([
            "--client-id",
            client_id,
            "--key",
            key_path.to_str().unwrap(),
        ])
        .args([
            "--scope",
            "system/Patient.rs",
            "--insecure-allow-http",
            "--allow-host",
            "127.0.0.1",
        ])
        .args(["--output", "json"])
        .output()
        .await
        .expect("run the token command")
}

#[tokio::test]
async fn the_token_command_gets_tokens_for_both_algorithms_by_jwks_url_and_by_value() {
    let keycloak = Keycloak::connect().await;
    let realm = keycloak.realm("cli", SCOPES).await;
    let jwks_host = FaultServer::start().await;
    for alg in [SigningAlgorithm::ES384, SigningAlgorithm::RS384] {
        let key = support::signing_key(alg);
        let jwks = key.public_jwks().to_json();
        let by_url = format!("url-{alg}").to_lowercase();
        jwks_host.on(
            &format!("/{by_url}"),
            Behaviour::json(200, serde_json::from_str(&jwks).unwrap()),
        );
        let url = KeyRegistration::JwksUrl(jwks_host.url(&format!("/{by_url}")));
        realm
            .client(&by_url, alg, url, &["system/Patient.rs"])
            .await;
        let by_value = format!("value-{alg}").to_lowercase();
        realm
            .client(
                &by_value,
                alg,
                KeyRegistration::Jwks(jwks),
                &["system/Patient.rs"],
            )
            .await;
        for id in [&by_url, &by_value] {
            let output = run_token_command(&realm.issuer, id, &key).await;
            assert!(
                output.status.success(),
                "{id}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(report["algorithm"], alg.as_str(), "{id}");
            assert_eq!(report["kid"], key.kid(), "{id}");
            assert!(
                report["token_endpoint"]
                    .as_str()
                    .unwrap()
                    .starts_with(&realm.issuer),
                "{id}: the token endpoint came from the realm's metadata: {report}"
            );
            let granted = report["scope"].as_str().unwrap_or_default();
            assert!(
                granted.split(' ').any(|s| s == "system/Patient.rs"),
                "{id}: {granted}"
            );
        }
        assert!(
            !jwks_host.requests(&format!("/{by_url}")).is_empty(),
            "Keycloak fetched the JWKS URL"
        );
    }
}

#[tokio::test]
async fn a_key_keycloak_does_not_know_is_refused_with_invalid_client_naming_the_kid() {
    let keycloak = Keycloak::connect().await;
    let realm = keycloak.realm("wrong", SCOPES).await;
    let registered = support::signing_key(SigningAlgorithm::ES384);
    let stranger = support::signing_key(SigningAlgorithm::ES384);
    let jwks = registered.public_jwks().to_json();
    realm
        .client(
            "c",
            SigningAlgorithm::ES384,
            KeyRegistration::Jwks(jwks),
            &["system/Patient.rs"],
        )
        .await;
    let output = run_token_command(&realm.issuer, "c", &stranger).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(
        stderr.contains(stranger.kid()),
        "the message names the kid to register: {stderr}"
    );
}

#[tokio::test]
async fn the_operator_gets_tokens_from_keycloak_through_spec_issuer() {
    let keycloak = Keycloak::connect().await;
    let realm = keycloak.realm("operator", SCOPES).await;
    let h = Harness::new("keycloak").await;
    let spec = |id: &str, alg: Option<&str>| {
        let mut spec = json!({
            "fhirBaseUrl": "http://127.0.0.1:9/fhir", "issuer": realm.issuer,
            "clientId": id, "scopes": ["system/Patient.rs"],
        });
        if let Some(alg) = alg {
            spec["signing"] = json!({"algorithm": alg});
        }
        spec
    };
    // By JWKS URL: Keycloak fetches the operator's hosted JWK Set. RS384 is
    // the first algorithm in Keycloak's list that SMART allows.
    for (id, alg, explicit) in [
        ("url-rs", SigningAlgorithm::RS384, None),
        ("url-es", SigningAlgorithm::ES384, Some("ES384")),
    ] {
        realm
            .client(
                id,
                alg,
                KeyRegistration::JwksUrl(h.jwks_uri(id)),
                &["system/Patient.rs"],
            )
            .await;
        h.apply(id, spec(id, explicit)).await;
    }
    for (id, alg) in [
        ("url-rs", SigningAlgorithm::RS384),
        ("url-es", SigningAlgorithm::ES384),
    ] {
        let sbc = h.wait_ready(id).await;
        let status = sbc.status.as_ref().unwrap();
        assert_eq!(status.algorithm, Some(alg), "{id}");
        assert!(
            status
                .token_endpoint
                .as_deref()
                .unwrap()
                .starts_with(&realm.issuer),
            "{id}"
        );
        let discovered = &condition(&sbc, "Discovered").unwrap().message;
        assert!(discovered.contains("issuer"), "{id}: {discovered}");
        assert!(
            !h.wait_secret(&format!("{id}-token")).await.data.unwrap()["access_token"]
                .0
                .is_empty()
        );
    }

    // By value: the client is applied before Keycloak knows it, waits,
    // and becomes Ready once its public JWK Set is registered.
    h.apply("value", spec("value", Some("ES384"))).await;
    let waiting = h
        .wait_condition("value", "Ready", "False", Some("AwaitingRegistration"))
        .await;
    let jwks = waiting.status.unwrap().public_jwks.unwrap();
    realm
        .client(
            "value",
            SigningAlgorithm::ES384,
            KeyRegistration::Jwks(jwks),
            &["system/Patient.rs"],
        )
        .await;
    // Retries are minutes apart while a client awaits registration; the
    // person who registered it asks for a token at once.
    h.annotate(
        "value",
        "smartbackend.dev/refresh-requested-at",
        "registered",
    )
    .await;
    h.wait_ready("value").await;
}
