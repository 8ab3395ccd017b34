//! The sandbox authorization server is strict like an EHR: it verifies
//! signatures against registered keys (inline or via jwks_uri), the exact
//! audience and jti replay, and its tokens open its FHIR endpoint.

mod support;

use std::time::Duration;

use smart_backend_operator::sandbox::{Sandbox, SandboxClient, SandboxConfig, router};
use smart_backend_operator::smart::{self, HttpClient, SigningAlgorithm, SigningKey};
use support::fault_server::{Behaviour, FaultServer};
use url::Url;

fn http() -> HttpClient {
    support::local_http()
}

async fn start(clients: Vec<SandboxClient>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::new(
        SandboxConfig {
            base_url: base.clone(),
            token_lifetime: Duration::from_secs(120),
            clients,
        },
        http(),
    );
    tokio::spawn(async move { axum::serve(listener, router(sandbox)).await });
    base
}

async fn exchange(
    base: &str,
    client: &str,
    key: &SigningKey,
    audience: Option<&str>,
) -> Result<smart::AccessToken, smart::TokenError> {
    let config = smart::discovery::discover(&http(), &Url::parse(&format!("{base}/fhir")).unwrap())
        .await
        .unwrap();
    let aud = audience
        .map(str::to_string)
        .unwrap_or_else(|| config.token_endpoint.to_string());
    let assertion = support::assertion(key, client, &aud);
    support::send(
        &http(),
        &config.token_endpoint,
        "system/Patient.rs",
        &assertion,
    )
    .await
}

fn inline(id: &str, key: &SigningKey) -> SandboxClient {
    SandboxClient {
        client_id: id.into(),
        jwks_uri: None,
        jwks: Some(serde_json::to_value(key.public_jwks()).unwrap()),
        scopes: vec!["system/Patient.rs".into()],
    }
}

#[tokio::test]
async fn tokens_from_the_sandbox_open_its_fhir_endpoint() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let base = start(vec![inline("c1", &key)]).await;
    let token = exchange(&base, "c1", &key, None).await.expect("token");
    assert_eq!(token.expires_in, Duration::from_secs(120));
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{base}/fhir/Patient"))
        .bearer_auth(token.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["resourceType"], "Bundle");
    let refused = client
        .get(format!("{base}/fhir/Patient"))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn keys_are_fetched_from_jwks_uri() {
    let key = support::signing_key(SigningAlgorithm::RS384);
    let jwks_host = FaultServer::start().await;
    jwks_host.on(
        "/jwks",
        Behaviour::json(200, serde_json::to_value(key.public_jwks()).unwrap()),
    );
    let client = SandboxClient {
        client_id: "c2".into(),
        jwks_uri: Some(jwks_host.url("/jwks")),
        jwks: None,
        scopes: vec![],
    };
    let base = start(vec![client]).await;
    exchange(&base, "c2", &key, None)
        .await
        .expect("token via jwks_uri");
    assert_eq!(jwks_host.requests("/jwks").len(), 1);
}

#[tokio::test]
async fn wrong_keys_audiences_scopes_and_replays_are_refused() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let base = start(vec![inline("c1", &key)]).await;
    let stranger = support::signing_key(SigningAlgorithm::ES384);
    let err = exchange(&base, "c1", &stranger, None).await.unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_client"));
    let err = exchange(&base, "c1", &key, Some(&base)).await.unwrap_err();
    assert_eq!(
        err.oauth_code(),
        Some("invalid_client"),
        "the audience must be the token endpoint"
    );
    let err = exchange(&base, "nobody", &key, None).await.unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_client"));

    let endpoint = Url::parse(&format!("{base}/token")).unwrap();
    let assertion = support::assertion(&key, "c1", endpoint.as_str());
    let err = support::send(&http(), &endpoint, "system/Observation.rs", &assertion)
        .await
        .unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_scope"));
    let assertion = support::assertion(&key, "c1", endpoint.as_str());
    support::send(&http(), &endpoint, "system/Patient.rs", &assertion)
        .await
        .expect("first use");
    let replay = support::send(&http(), &endpoint, "system/Patient.rs", &assertion)
        .await
        .unwrap_err();
    assert_eq!(
        replay.oauth_code(),
        Some("invalid_client"),
        "a replayed jti is refused"
    );
}
