//! Discovery beyond SMART: a FHIR server behind a general OAuth server that
//! publishes RFC 8414 or OpenID Connect metadata (Keycloak's shape: the
//! issuer has a path, and the algorithm list starts with ones this client
//! does not produce). Protocol level and operator level, against the fault
//! server and the real control plane.

mod support;

use serde_json::json;
use smart_backend_operator::smart::discovery::AlgorithmSource;
use smart_backend_operator::smart::{DiscoveryError, MetadataSource, SigningAlgorithm};
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, condition};
use url::Url;

const REALM: &str = "/realms/fhir";

/// Keycloak lists its algorithms in this order.
fn metadata(server: &FaultServer, issuer: &str) -> serde_json::Value {
    json!({
        "issuer": issuer,
        "token_endpoint": server.url(&format!("{REALM}/protocol/openid-connect/token")),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported":
            ["PS384", "RS384", "EdDSA", "ES384", "HS256", "RS256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
    })
}

fn issuer(server: &FaultServer) -> MetadataSource {
    MetadataSource::Issuer(Url::parse(&server.url(REALM)).unwrap())
}

#[tokio::test]
async fn rfc8414_metadata_is_read_first_and_its_first_supported_algorithm_chosen() {
    let server = FaultServer::start().await;
    let doc = metadata(&server, &server.url(REALM));
    server.on(
        &format!("/.well-known/oauth-authorization-server{REALM}"),
        Behaviour::json(200, doc),
    );
    let config = issuer(&server).fetch(&support::local_http()).await.unwrap();
    assert!(
        config
            .token_endpoint
            .path()
            .ends_with("/openid-connect/token")
    );
    let choice = config.choose_algorithm(None, None).unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::RS384);
    assert_eq!(choice.source, AlgorithmSource::ServerMetadata);
    assert_eq!(
        server
            .requests(&format!("{REALM}/.well-known/openid-configuration"))
            .len(),
        0
    );
}

#[tokio::test]
async fn openid_connect_metadata_is_the_fallback_and_another_issuer_is_refused() {
    let server = FaultServer::start().await;
    let openid = format!("{REALM}/.well-known/openid-configuration");
    server.on(
        &openid,
        Behaviour::json(200, metadata(&server, &server.url(REALM))),
    );
    let config = issuer(&server).fetch(&support::local_http()).await.unwrap();
    assert_eq!(
        server
            .requests(&format!("/.well-known/oauth-authorization-server{REALM}"))
            .len(),
        1,
        "RFC 8414 was tried first"
    );
    assert_eq!(config.issuer.as_deref(), Some(server.url(REALM).as_str()));

    server.on(
        &openid,
        Behaviour::json(200, metadata(&server, "https://elsewhere.example/")),
    );
    let error = issuer(&server)
        .fetch(&support::local_http())
        .await
        .unwrap_err();
    assert!(
        matches!(error, DiscoveryError::IssuerMismatch { .. }),
        "{error}"
    );

    server.on(&openid, Behaviour::json(404, json!({})));
    let error = issuer(&server)
        .fetch(&support::local_http())
        .await
        .unwrap_err();
    assert!(
        matches!(error, DiscoveryError::NoIssuerMetadata { .. }),
        "{error}"
    );
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("oauth-authorization-server") && text.contains("openid-configuration"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unavailable_rfc8414_endpoint_is_an_outage_not_a_fallback() {
    let server = FaultServer::start().await;
    server.on(
        &format!("/.well-known/oauth-authorization-server{REALM}"),
        Behaviour::html(503),
    );
    let error = issuer(&server)
        .fetch(&support::local_http())
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(
        server
            .requests(&format!("{REALM}/.well-known/openid-configuration"))
            .len(),
        0
    );
}

#[tokio::test]
async fn the_operator_finds_the_token_endpoint_and_algorithm_from_spec_issuer() {
    let h = Harness::new("issuer").await;
    let server = FaultServer::start().await;
    server.on(
        &format!("{REALM}/.well-known/openid-configuration"),
        Behaviour::json(200, metadata(&server, &server.url(REALM))),
    );
    let token_path = format!("{REALM}/protocol/openid-connect/token");
    server.on(
        &token_path,
        Behaviour::json(
            200,
            json!({"access_token": "kc", "token_type": "Bearer", "expires_in": 300, "scope": "system/Patient.rs"}),
        ),
    );
    h.apply(
        "c",
        json!({
            "fhirBaseUrl": server.url("/fhir"),
            "issuer": server.url(REALM),
            "clientId": "c",
            "scopes": ["system/Patient.rs"],
        }),
    )
    .await;
    let sbc = h.wait_ready("c").await;
    let status = sbc.status.as_ref().unwrap();
    assert_eq!(status.algorithm, Some(SigningAlgorithm::RS384));
    assert_eq!(
        status.token_endpoint.as_deref(),
        Some(server.url(&token_path).as_str())
    );
    let discovered = &condition(&sbc, "Discovered").unwrap().message;
    assert!(
        discovered.contains("the metadata of issuer"),
        "{discovered}"
    );
    assert_eq!(
        server
            .requests("/fhir/.well-known/smart-configuration")
            .len(),
        0,
        "no SMART discovery"
    );
    assert_eq!(server.requests(&token_path).len(), 1);
    assert_eq!(
        Harness::value(&h.wait_secret("c-token").await, "access_token"),
        "kc"
    );
}
