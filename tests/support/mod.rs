//! Shared test support: the real OAuth server (oidc-provider), the
//! in-process fault server, and helpers. Each test binary uses part of it.
#![allow(dead_code)]

pub mod api_proxy;
pub mod bao;
pub mod cluster;
pub mod csi;
pub mod fault_server;
pub mod helm;
pub mod key_managers;
pub mod keycloak;
pub mod moto;
pub mod node;
pub mod oidc;
pub mod operator;
pub mod process;
pub mod victims;

use smart_backend_operator::smart::{PrivateKey, SigningAlgorithm, SigningKey};

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The PKCS#8 PEM of a key held in memory, as a key Secret or file holds it.
pub fn pem(key: &SigningKey) -> String {
    key.private_key()
        .expect("a key held in memory")
        .to_pkcs8_pem()
        .expect("PKCS#8 PEM")
}

/// A fresh key for `alg` (2048-bit for RSA, to keep tests quick).
pub fn signing_key(alg: SigningAlgorithm) -> SigningKey {
    PrivateKey::generate(alg, 2048)
        .and_then(|k| k.into_signing_key(Some(alg), None))
        .expect("key generation")
}

/// A Secret holding a private key under `key.pem`, labelled as a signing
/// key the operator may use when `opted_in` (the label a key owner sets).
pub fn key_secret(name: &str, pem: Vec<u8>, opted_in: bool) -> k8s_openapi::api::core::v1::Secret {
    let labels = opted_in.then(|| {
        [(
            "smartbackend.dev/signing-key".to_string(),
            "true".to_string(),
        )]
        .into()
    });
    k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels,
            ..Default::default()
        },
        data: Some([("key.pem".to_string(), k8s_openapi::ByteString(pem))].into()),
        ..Default::default()
    }
}

/// The tests' servers run on loopback, which the operator refuses unless
/// the allow-list names it: exactly what a developer does.
pub fn loopback_destinations() -> smart_backend_operator::smart::DestinationPolicy {
    smart_backend_operator::smart::DestinationPolicy {
        allow_hosts: vec!["127.0.0.1".into()],
        block_private: false,
    }
}

/// An HTTP client for the tests' loopback servers: plain http allowed and
/// loopback named in the allow-list, as a developer would run it.
pub fn local_http() -> smart_backend_operator::smart::HttpClient {
    local_http_with(smart_backend_operator::smart::HttpPolicy::default())
}

/// As [`local_http`], starting from `policy` (timeouts etc.).
pub fn local_http_with(
    policy: smart_backend_operator::smart::HttpPolicy,
) -> smart_backend_operator::smart::HttpClient {
    smart_backend_operator::smart::HttpClient::new(smart_backend_operator::smart::HttpPolicy {
        allow_http: true,
        destinations: loopback_destinations(),
        ..policy
    })
    .expect("HTTP client")
}

/// A fresh client assertion from `key` for `client_id`, addressed to `audience`.
pub fn assertion(
    key: &SigningKey,
    client_id: &str,
    audience: &str,
) -> smart_backend_operator::smart::ClientAssertion {
    smart_backend_operator::smart::assertion::sign(
        key,
        &smart_backend_operator::smart::AssertionParams::new(client_id, audience),
    )
    .expect("sign an assertion")
}

/// One token request for `scope` carrying `assertion`.
pub async fn send(
    http: &smart_backend_operator::smart::HttpClient,
    endpoint: &url::Url,
    scope: &str,
    assertion: &smart_backend_operator::smart::ClientAssertion,
) -> Result<smart_backend_operator::smart::AccessToken, smart_backend_operator::smart::TokenError> {
    let request = smart_backend_operator::smart::TokenRequest {
        token_endpoint: endpoint,
        scope,
        assertion,
        extra_params: &[],
    };
    smart_backend_operator::smart::token::request_token(http, &request).await
}

/// True under CI, where a missing dependency must fail a test, not skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
