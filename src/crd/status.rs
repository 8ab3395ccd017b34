//! What the operator writes under `status`: the conditions, the token's
//! times, the keys and a rotation's progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::smart::SigningAlgorithm;

/// Where a key is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published in the JWKS, not signing yet.
    Next,
    /// Signing.
    Active,
    /// Published, no longer signing: assertions it signed may still be
    /// checked. A generated key's private key is kept until it is dropped,
    /// so that the operator can fall back to it if the server refuses the
    /// key that replaced it.
    Retiring,
}

/// One published key of the client.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// The key's id, as the JWKS and the assertions' header carry it.
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// Next (published, not signing yet), Active (signing) or Retiring
    /// (published until nothing it signed is valid).
    pub state: KeyState,
    /// When the key entered its state (RFC 3339).
    pub since: String,
}

/// Progress of a key rotation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationStatus {
    /// The last rotate-key annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// Trials of the next key in a row that brought no token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_trials: u32,
    /// When the next key is tried again after a failed trial (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_trial_time: Option<String>,
    /// The next key, and when a status carrying it (which every replica
    /// serves the JWKS from) was first written: its wait before a trial
    /// counts from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key_served: Option<ServedKey>,
}

/// A key, and since when every replica serves it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServedKey {
    pub kid: String,
    /// RFC 3339.
    pub since: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the operator observed and did. Written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmartBackendClientStatus {
    /// Ready, Discovered, KeyReady and TokenReady, each with a reason and a
    /// message that says what to do when it is False.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where assertions are sent: spec.tokenEndpoint, or the one the
    /// server's metadata names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The algorithm the client's key signs with (RS384 or ES384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SigningAlgorithm>,
    /// The kid of the key that signs assertions now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The Secret holding the signing key (generated, or
    /// spec.signing.keySecretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_name: Option<String>,
    /// The Secret workloads mount for the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    /// The scopes the server granted with the current token, as it said
    /// them (absent when it did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_scopes: Option<String>,
    /// When the current token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    /// When the current token was obtained (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<String>,
    /// When the current token is planned to be replaced (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<String>,
    /// After a failure: when the operator tries again (RFC 3339). Absent
    /// while nothing fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// Failures in a row since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The public JWK Set to register with the EHR (inline), also served at
    /// the operator's /jwks/{namespace}/{name} for jwks_uri registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwks: Option<String>,
    /// The public URL of this client's JWK Set, for jwks_uri registration;
    /// set when the operator runs with --jwks-public-url (the chart sets it
    /// from its Ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The last refresh-requested-at annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_refresh_request: Option<String>,
    /// The last regenerate-key annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_key_regeneration: Option<String>,
    /// The client's published keys: the one signing (Active), and during a
    /// rotation the next one and the retiring one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    /// Where a generated key's rotation stands: the request last acted on,
    /// and the refused trials of the next key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotationStatus>,
}
