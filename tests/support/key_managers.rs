//! What the key-manager tests (Transit, KMS) share: a server that knows
//! clients by the JWK Sets the `jwks` command printed, the rotation states
//! a status shows, and the check that no Secret holds key material.

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use smart_backend_operator::crd::SmartBackendClient;

use super::oidc::{Client, OidcServer, Registration};
use super::operator::Harness;

pub const SCOPE: &str = "system/Patient.rs";

/// oidc-provider with each `(client id, JWK Set)` registered inline.
pub fn server_knowing(clients: &[(&str, &Value)]) -> OidcServer {
    let clients: Vec<Client<'_>> = clients
        .iter()
        .map(|(id, set)| Client {
            id,
            scope: SCOPE,
            key: None,
            registration: Registration::InlineJwks((*set).clone()),
        })
        .collect();
    OidcServer::start(&clients, &[SCOPE], 300)
}

/// oidc-provider with the client `id` registered at the operator's JWKS URL.
pub fn server_fetching(h: &Harness, id: &str) -> OidcServer {
    let client = Client {
        id,
        scope: SCOPE,
        key: None,
        registration: Registration::JwksUriAt(h.jwks_uri(id)),
    };
    OidcServer::start(&[client], &[SCOPE], 300)
}

/// No Secret in the namespace holds a private key, in any form.
pub async fn no_key_material(h: &Harness) {
    let secrets = h.secrets().list(&Default::default()).await.unwrap();
    for secret in secrets.items {
        for (name, value) in secret.data.unwrap_or_default() {
            let text = String::from_utf8_lossy(&value.0);
            assert!(
                !text.contains("PRIVATE KEY") && !text.contains("\"d\""),
                "Secret {:?} key {name} holds key material",
                secret.metadata.name
            );
        }
    }
}

pub fn token_of(secret: &Secret) -> String {
    Harness::value(secret, "access_token")
}

/// The states the status shows, by kid.
pub fn states(sbc: &SmartBackendClient) -> Vec<(String, String)> {
    let keys = sbc
        .status
        .as_ref()
        .map(|s| s.keys.clone())
        .unwrap_or_default();
    keys.iter()
        .map(|k| (k.kid.clone(), format!("{:?}", k.state)))
        .collect()
}

/// The public JWK Sets of an ES384 and an RS384 key, with no private part.
pub fn assert_public_sets(ec: &Value, rsa: &Value) {
    assert_eq!(ec["keys"][0]["alg"], "ES384");
    assert_eq!(ec["keys"][0]["crv"], "P-384");
    assert_eq!(rsa["keys"][0]["alg"], "RS384");
    assert!(ec["keys"][0].get("d").is_none() && rsa["keys"][0].get("d").is_none());
}

/// Waits until `billing` shows a key Next beside the signing one; its kid.
pub async fn wait_next_published(h: &Harness) -> String {
    let sbcs = h.sbcs();
    let published = super::cluster::wait_for(
        "the next key published beside the signing one",
        std::time::Duration::from_secs(60),
        || async { sbcs.get("billing").await.ok() },
        |sbc| states(sbc).iter().any(|(_, s)| s == "Next"),
    )
    .await;
    states(&published)
        .into_iter()
        .find(|(_, s)| s == "Next")
        .expect("a Next key")
        .0
}

/// Waits until the key `kid` signs for `billing` (after the JWKS max-age,
/// the margin and a trial), with the KeyRotated event and the old key
/// Retiring.
pub async fn wait_promoted(h: &Harness, kid: &str) {
    let sbcs = h.sbcs();
    let switched = super::cluster::wait_for(
        "the next key signing",
        std::time::Duration::from_secs(120),
        || async { sbcs.get("billing").await.ok() },
        |sbc| sbc.status.as_ref().and_then(|s| s.kid.as_deref()) == Some(kid),
    )
    .await;
    h.wait_event("billing", "KeyRotated").await;
    assert!(
        states(&switched).iter().any(|(_, s)| s == "Retiring"),
        "{:?}",
        states(&switched)
    );
}

/// Waits until `name`'s `condition` is False for `reason`; its message.
pub async fn failed_with(h: &Harness, name: &str, condition: &str, reason: &str) -> String {
    let sbc = h
        .wait_condition(name, condition, "False", Some(reason))
        .await;
    super::operator::condition(&sbc, condition)
        .expect("the condition")
        .message
        .clone()
}
