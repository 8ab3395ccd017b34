//! What the scenarios share: the resource, the operator's key Secret, the
//! requests of a first token.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

pub(super) const TOKEN: &str = "billing-token";
pub(super) const KEY: &str = "billing-signing-key";

pub(super) fn spec(token_endpoint: &url::Url) -> Value {
    json!({
        "fhirBaseUrl": "http://127.0.0.1:9/fhir",
        "tokenEndpoint": token_endpoint.as_str(),
        "clientId": "billing-service",
        "scopes": ["system/Patient.rs"],
        "signing": {"algorithm": "ES384"}
    })
}

/// The resource as the API server holds it, for answers to status writes.
pub(super) fn resource(endpoint: &url::Url) -> Value {
    serde_json::to_value(client(spec(endpoint))).unwrap()
}

/// The first token written: the token Secret applied, the status applied,
/// `TokenIssued` published.
pub(super) fn first_token_written(endpoint: &url::Url) -> [Expect; 3] {
    [
        Expect::written("PATCH", secret_path(TOKEN), json!({})),
        Expect::written("PATCH", status_path(), resource(endpoint)),
        Expect::written("POST", events_path(), json!({})),
    ]
}

pub(super) fn requests(seen: &Seen) -> Vec<String> {
    seen.calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

/// The key Secret as the operator generates it for this client, and its kid.
pub(super) fn key_secret() -> (Value, String) {
    let (secret, kid, _) = key_secret_rotating(false);
    (secret, kid)
}

/// As [`key_secret`]; with `next`, a next key published an hour ago (its
/// trial is due), whose kid comes third.
pub(super) fn key_secret_rotating(next: bool) -> (Value, String, String) {
    use crate::controller::decide::key_ring::Ring;
    use crate::smart::{PrivateKey, SigningAlgorithm};
    let private = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
    let pem = private.to_pkcs8_pem().unwrap();
    let signing = private.into_signing_key(None, None).unwrap();
    let mut secret = crate::controller::decide::secret_data::build_key_secret(
        crate::controller::decide::secret_data::KeySecretInput {
            name: KEY,
            namespace: NS,
            client_name: NAME,
            client_uid: UID,
            owner: None,
            private_pem: &pem,
            public_jwks: &signing.public_jwks().to_json(),
            algorithm: SigningAlgorithm::ES384,
            kid: signing.kid(),
        },
    );
    let now = std::time::SystemTime::now();
    let mut ring = Ring::single(&signing, now - Duration::from_secs(7200));
    let mut next_kid = String::new();
    if next {
        let private = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
        let pem = private.to_pkcs8_pem().unwrap().into_bytes();
        let next = private.into_signing_key(None, None).unwrap();
        next_kid = next.kid().to_string();
        let published = now - Duration::from_secs(3600);
        ring = ring.with_next(next.public_jwk(), pem, SigningAlgorithm::ES384, published);
    }
    ring.store(&mut secret, None);
    secret.metadata.resource_version = Some("7".into());
    let kid = signing.kid().to_string();
    (serde_json::to_value(secret).unwrap(), kid, next_kid)
}

/// The key Secret a promotion left: the new key signs, the old one
/// retires with its private key kept. Returns it with the kids of the new
/// key and of the retiring one.
pub(super) fn key_secret_promoted() -> (Value, String, String) {
    use crate::controller::decide::key_ring::Ring;
    use crate::smart::{PrivateKey, SigningAlgorithm};
    let generate = || {
        let private = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
        let pem = private.to_pkcs8_pem().unwrap();
        (private.into_signing_key(None, None).unwrap(), pem)
    };
    let ((old, old_pem), (new, new_pem)) = (generate(), generate());
    let mut secret = crate::controller::decide::secret_data::build_key_secret(
        crate::controller::decide::secret_data::KeySecretInput {
            name: KEY,
            namespace: NS,
            client_name: NAME,
            client_uid: UID,
            owner: None,
            private_pem: &old_pem,
            public_jwks: &old.public_jwks().to_json(),
            algorithm: SigningAlgorithm::ES384,
            kid: old.kid(),
        },
    );
    let now = std::time::SystemTime::now();
    let (promoted, pem) = Ring::single(&old, now - Duration::from_secs(7200))
        .with_next(
            new.public_jwk(),
            new_pem.into_bytes(),
            SigningAlgorithm::ES384,
            now - Duration::from_secs(3600),
        )
        .promoted(now - Duration::from_secs(60), old_pem.into_bytes())
        .unwrap();
    promoted.store(&mut secret, Some(&pem));
    secret.metadata.resource_version = Some("7".into());
    let kids = (new.kid().to_string(), old.kid().to_string());
    (serde_json::to_value(secret).unwrap(), kids.0, kids.1)
}

/// The status a replica wrote earlier, listing these keys (so that every
/// replica serves them).
pub(super) fn listing(
    keys: &[(&str, crate::crd::KeyState)],
) -> crate::crd::SmartBackendClientStatus {
    let since = crate::controller::decide::secret_data::rfc3339(
        std::time::SystemTime::now() - Duration::from_secs(3600),
    );
    crate::crd::SmartBackendClientStatus {
        keys: keys
            .iter()
            .map(|(kid, state)| crate::crd::KeyStatus {
                kid: kid.to_string(),
                algorithm: crate::smart::SigningAlgorithm::ES384,
                state: *state,
                since: since.clone(),
            })
            .collect(),
        ..Default::default()
    }
}
