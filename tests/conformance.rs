//! Conformance of the client side against a real, independent authorization
//! server: oidc-provider configured for SMART Backend Services
//! (client_credentials, private_key_jwt only, RS384 and ES384, exact
//! audience, jti replay detection).

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::json;
use smart_backend_operator::smart::{
    self, AssertionParams, ErrorClass, HttpClient, SigningAlgorithm, SigningKey, TokenError,
    TokenRequest,
};
use support::oidc::{Client, OidcServer, Registration};
use url::Url;

const SCOPES: &[&str] = &[
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Patient.read",
];

fn http() -> HttpClient {
    support::local_http()
}

/// Discovery, algorithm choice, signing and exchange, as the operator does them.
async fn obtain(
    server: &OidcServer,
    client_id: &str,
    key: &SigningKey,
    scope: &str,
    adjust: impl FnOnce(&mut AssertionParams<'_>),
) -> Result<smart::AccessToken, TokenError> {
    let http = http();
    let config = smart::discovery::discover(&http, &Url::parse(&server.fhir_base_url).unwrap())
        .await
        .expect("discovery");
    let audience = config.token_endpoint.to_string();
    let mut params = AssertionParams::new(client_id, &audience);
    adjust(&mut params);
    let assertion = smart::assertion::sign(key, &params).expect("sign");
    smart::token::request_token(
        &http,
        &TokenRequest {
            token_endpoint: &config.token_endpoint,
            scope,
            assertion: &assertion,
            extra_params: &[],
        },
    )
    .await
}

/// A server with one client, c1, allowed system/Patient.rs, whose public
/// key is registered inline.
fn inline_c1(key: &SigningKey) -> OidcServer {
    OidcServer::start(
        &[Client {
            id: "c1",
            scope: "system/Patient.rs",
            key: Some(key),
            registration: Registration::Inline,
        }],
        SCOPES,
        300,
    )
}

fn both_algorithms_both_registrations() -> Vec<(String, SigningKey, Registration)> {
    let mut out = Vec::new();
    for alg in SigningAlgorithm::ALL {
        for (name, registration) in [
            ("inline", Registration::Inline),
            ("uri", Registration::JwksUri),
        ] {
            out.push((
                format!("{alg}-{name}"),
                support::signing_key(alg),
                registration,
            ));
        }
    }
    out
}

fn register<'a>(
    clients: &'a [(String, SigningKey, Registration)],
    scope: &'a str,
) -> Vec<Client<'a>> {
    clients
        .iter()
        .map(|(id, key, registration)| Client {
            id,
            scope,
            key: Some(key),
            registration: registration.clone(),
        })
        .collect()
}

#[tokio::test]
async fn both_algorithms_get_tokens_with_inline_and_hosted_jwks() {
    let clients = both_algorithms_both_registrations();
    let server = OidcServer::start(
        &register(&clients, "system/Patient.rs system/Observation.rs"),
        SCOPES,
        120,
    );
    for (id, key, _) in &clients {
        let before = SystemTime::now();
        let token = obtain(
            &server,
            id,
            key,
            "system/Patient.rs system/Observation.rs",
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(token.expires_in, Duration::from_secs(120), "{id}");
        assert!(
            token.expires_at >= before + Duration::from_secs(119),
            "{id}"
        );
        assert_eq!(
            token.scope.as_deref(),
            Some("system/Patient.rs system/Observation.rs"),
            "{id}"
        );
        assert!(!token.access_token.is_empty());
    }
    assert_eq!(server.stats().await, (4, 4));
}

fn run_token_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
        .arg("token")
        .args(args)
        .args(["--allow-host", "127.0.0.1"])
        .output()
        .expect("run the token command")
}

/// SMART lets a server publish no algorithm list; then the key in hand
/// decides (an EC P-384 key signs with ES384), in the command as in the
/// operator.
#[tokio::test]
async fn token_command_lets_the_key_decide_when_the_server_lists_no_algorithms() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let server = OidcServer::start_with(
        &[Client {
            id: "ec",
            scope: "system/Patient.rs",
            key: Some(&key),
            registration: Registration::Inline,
        }],
        SCOPES,
        300,
        json!("omit"),
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("ec.pem");
    std::fs::write(&key_path, support::pem(&key)).unwrap();
    let output = run_token_command(&[
        "--fhir-base-url",
        &server.fhir_base_url,
        "--client-id",
        "ec",
        "--key",
        key_path.to_str().unwrap(),
        "--scope",
        "system/Patient.rs",
        "--insecure-allow-http",
        "--output",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["algorithm"], "ES384");
    assert_eq!(
        report["algorithm_source"],
        "the key's type (server lists none)"
    );
    assert_eq!(server.stats().await, (1, 1));
}

#[tokio::test]
async fn token_command_works_for_both_algorithms_and_registrations() {
    let clients = both_algorithms_both_registrations();
    let server = OidcServer::start(&register(&clients, "system/Patient.rs"), SCOPES, 300);
    let dir = tempfile::tempdir().unwrap();
    for (id, key, _) in &clients {
        let key_path = dir.path().join(format!("{id}.pem"));
        let pem = support::pem(key);
        std::fs::write(&key_path, &pem).unwrap();
        let key_path = key_path.to_str().unwrap();
        let base = [
            "--fhir-base-url",
            &server.fhir_base_url,
            "--client-id",
            id,
            "--key",
            key_path,
            "--scope",
            "system/Patient.rs",
            "--insecure-allow-http",
            "--output",
            "json",
        ];
        let output = run_token_command(&base);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["algorithm"], key.algorithm().as_str());
        assert_eq!(report["kid"], key.kid());
        assert_eq!(report["scope"], "system/Patient.rs");
        assert!(
            report.get("access_token").is_none(),
            "the token is printed only with --show-token"
        );
        let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!stdout.contains(&pem_body[..24]));

        let shown = run_token_command(&[&base[..], &["--show-token"]].concat());
        let report: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        assert!(
            report["access_token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
    }
}

#[tokio::test]
async fn an_unregistered_kid_is_refused_with_invalid_client() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let server = inline_c1(&key);
    let stranger = support::signing_key(SigningAlgorithm::ES384);
    let err = obtain(&server, "c1", &stranger, "system/Patient.rs", |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_client"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);

    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("stranger.pem");
    std::fs::write(&key_path, support::pem(&stranger)).unwrap();
    let output = run_token_command(&[
        "--fhir-base-url",
        &server.fhir_base_url,
        "--client-id",
        "c1",
        "--key",
        key_path.to_str().unwrap(),
        "--scope",
        "system/Patient.rs",
        "--insecure-allow-http",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid_client") && stderr.contains(stranger.kid()),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_scope_the_client_may_not_have_is_refused_with_invalid_scope() {
    let key = support::signing_key(SigningAlgorithm::RS384);
    let server = inline_c1(&key);
    let err = obtain(&server, "c1", &key, "system/Observation.rs", |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_scope"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn expired_and_misaddressed_assertions_are_refused() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let server = inline_c1(&key);
    let expired = obtain(&server, "c1", &key, "system/Patient.rs", |p| {
        p.issued_at = SystemTime::now() - Duration::from_secs(600);
    })
    .await
    .unwrap_err();
    assert_eq!(expired.oauth_code(), Some("invalid_client"), "{expired}");

    let issuer = server.issuer.clone();
    let http = http();
    let endpoint = Url::parse(&server.token_endpoint()).unwrap();
    let assertion = support::assertion(&key, "c1", &issuer);
    let wrong_audience = support::send(&http, &endpoint, "system/Patient.rs", &assertion)
        .await
        .unwrap_err();
    assert_eq!(
        wrong_audience.oauth_code(),
        Some("invalid_client"),
        "{wrong_audience}"
    );
    // And nothing was issued for either.
    assert_eq!(server.stats().await.1, 0);
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_and_a_fresh_one_works() {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let server = inline_c1(&key);
    let http = http();
    let endpoint = Url::parse(&server.token_endpoint()).unwrap();
    let assertion = support::assertion(&key, "c1", endpoint.as_str());
    support::send(&http, &endpoint, "system/Patient.rs", &assertion)
        .await
        .expect("first use");
    let replay = support::send(&http, &endpoint, "system/Patient.rs", &assertion)
        .await
        .unwrap_err();
    assert_eq!(replay.oauth_code(), Some("invalid_client"), "{replay}");
    // A retry signs a new assertion (new jti) and succeeds.
    obtain(&server, "c1", &key, "system/Patient.rs", |_| {})
        .await
        .expect("fresh assertion");
}

#[tokio::test]
async fn algorithm_choice_follows_the_servers_metadata() {
    let rsa = support::signing_key(SigningAlgorithm::RS384);
    let clients = [Client {
        id: "c1",
        scope: "system/Patient.rs",
        key: Some(&rsa),
        registration: Registration::Inline,
    }];
    let http = http();

    // No list published: RS384, which works, with a warning.
    let server = OidcServer::start_with(&clients, SCOPES, 300, json!("omit"));
    let base = Url::parse(&server.fhir_base_url).unwrap();
    let config = smart::discovery::discover(&http, &base).await.unwrap();
    let choice = config.choose_algorithm(None, None).unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::RS384);
    assert_eq!(
        config.warnings(&[], Some(choice)),
        vec![smart::DiscoveryWarning::NoAlgorithmList]
    );
    obtain(&server, "c1", &rsa, "system/Patient.rs", |_| {})
        .await
        .expect("RS384 token");
    drop(server);

    // An empty list: nothing can work, and the error says so.
    let server = OidcServer::start_with(&clients, SCOPES, 300, json!([]));
    let base = Url::parse(&server.fhir_base_url).unwrap();
    let config = smart::discovery::discover(&http, &base).await.unwrap();
    let error = config.choose_algorithm(None, None).unwrap_err();
    assert!(error.to_string().contains("an empty list"), "{error}");
    drop(server);

    let server = OidcServer::start_with(&clients, SCOPES, 300, json!(["RS256", "PS384"]));
    let base = Url::parse(&server.fhir_base_url).unwrap();
    let config = smart::discovery::discover(&http, &base).await.unwrap();
    let error = config.choose_algorithm(None, None).unwrap_err();
    assert!(error.to_string().contains("RS256, PS384"), "{error}");

    let server = OidcServer::start_with(&clients, SCOPES, 300, json!(["RS256", "RS384", "ES384"]));
    let base = Url::parse(&server.fhir_base_url).unwrap();
    let config = smart::discovery::discover(&http, &base).await.unwrap();
    assert_eq!(
        config.choose_algorithm(None, None).unwrap().algorithm,
        SigningAlgorithm::RS384
    );
    obtain(&server, "c1", &rsa, "system/Patient.rs", |_| {})
        .await
        .expect("RS384 token");
}
