//! The `SmartBackendClient` custom resource. Doc comments on fields become
//! the schema descriptions `kubectl explain` shows, so they are written for
//! the people who fill them in.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::smart::SigningAlgorithm;

mod status;
pub use status::{KeyRotationStatus, KeyState, KeyStatus, ServedKey, SmartBackendClientStatus};

pub const GROUP: &str = "smartbackend.dev";
pub const FIELD_MANAGER: &str = "smart-backend-operator";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "smart-backend-operator";
/// On every Secret the operator writes: `<client name>`, to map Secret
/// events back to the client that owns them.
pub const CLIENT_ANNOTATION: &str = "smartbackend.dev/client";
/// Annotation on the resource: a new value refreshes the token at once.
pub const REFRESH_REQUESTED_ANNOTATION: &str = "smartbackend.dev/refresh-requested-at";
/// Annotation on the resource: a new value allows generating a new key
/// when the published one is gone.
/// A Secret named by `spec.signing.keySecretRef` must carry this label with
/// the value "true" before the operator signs with it: whoever may create a
/// SmartBackendClient must not get assertions signed with any key Secret in
/// the namespace, only with those a Secret owner opted in.
pub const SIGNING_KEY_LABEL: &str = "smartbackend.dev/signing-key";
/// Tells restart-on-change tools (Reloader) to leave workloads alone when
/// the token Secret changes.
pub const RELOADER_IGNORE: &str = "reloader.stakater.com/ignore";
pub const REGENERATE_KEY_ANNOTATION: &str = "smartbackend.dev/regenerate-key";
/// Annotation on the resource: a new value starts a rotation of the
/// generated key (a new key is published, tried, then signs).
pub const ROTATE_KEY_ANNOTATION: &str = "smartbackend.dev/rotate-key";
/// On a generated key Secret: the uid of the resource it was made for. A
/// retained key signs for that resource only, not for a new one that
/// happens to get the same name.
pub const CLIENT_UID_ANNOTATION: &str = "smartbackend.dev/client-uid";
/// Annotation on the resource: the name of a retained generated key Secret
/// made for an earlier resource of this name, which this one may sign with.
pub const ADOPT_KEY_ANNOTATION: &str = "smartbackend.dev/adopt-key";

/// A workload's identity at a SMART on FHIR authorization server. The
/// operator keeps a valid access token for it in a Secret that pods mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smartbackend.dev",
    version = "v1alpha1",
    kind = "SmartBackendClient",
    namespaced,
    shortname = "sbc",
    category = "smart",
    status = "SmartBackendClientStatus"
)]
#[kube(
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[kube(
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[kube(printcolumn = r#"{"name":"Algorithm","type":"string","jsonPath":".status.algorithm"}"#)]
#[kube(printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.tokenExpiresAt"}"#)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct SmartBackendClientSpec {
    /// FHIR base URL of the server, e.g. https://ehr.example.org/fhir/r4.
    /// Discovery reads {fhirBaseUrl}/.well-known/smart-configuration. Must be
    /// https (plain http only when the operator runs with --insecure-allow-http).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    pub fhir_base_url: String,

    /// The client id the authorization server registered for this workload.
    #[schemars(length(min = 1, max = 512))]
    pub client_id: String,

    /// Scopes to request, each passed through unchanged: SMART v1
    /// (system/Patient.read) and v2 (system/Patient.rs) syntax both work.
    #[schemars(
        length(min = 1, max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[!#-\[\]-~]+$"))
    )]
    pub scopes: Vec<String>,

    /// OAuth issuer whose metadata names the token endpoint and the signing
    /// algorithms, for servers behind a general OAuth server (Keycloak, Okta,
    /// Entra ID, Ping) that publish no smart-configuration. Read from
    /// {issuer-host}/.well-known/oauth-authorization-server{issuer-path}
    /// (RFC 8414), else {issuer}/.well-known/openid-configuration; the
    /// document must name this issuer. Replaces SMART discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    pub issuer: Option<String>,

    /// Token endpoint URL. Set it to skip discovery of the endpoint (some
    /// servers publish no smart-configuration, or a tenant-specific URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    pub token_endpoint: Option<String>,

    /// Audience (aud) of the client assertion. Default: the token endpoint
    /// URL, as SMART requires; set it only if the server documents another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub audience: Option<String>,

    /// How client assertions are signed, and with which key.
    #[serde(default)]
    #[x_kube(validation = Rule::new(
        "!(has(self.vaultTransit) || has(self.awsKms)) || !(has(self.keySecretRef) || has(self.nextKeySecretRef) || has(self.rsaKeySize) || has(self.generatedKeyPolicy) || has(self.rotation) || has(self.kid))"
    ).message("vaultTransit and awsKms name a key that stays in the key manager: they cannot be combined with keySecretRef, nextKeySecretRef, rsaKeySize, generatedKeyPolicy, rotation (rotate in the key manager) or kid (each key has its own)"))]
    #[x_kube(validation = Rule::new("!(has(self.vaultTransit) && has(self.awsKms))")
        .message("name one key manager: vaultTransit or awsKms"))]
    pub signing: SigningSpec,

    /// The Secret the access token is written to.
    #[serde(default)]
    pub token: TokenSpec,

    /// TLS settings for talking to the authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Stop refreshing. Whatever exists (key, token Secret) is kept.
    #[serde(default)]
    pub suspend: bool,
}

/// An absolute http(s) URL with a host and no user:password@ part.
const URL_RULE: &str =
    "self.matches('^https?://[^/?#@ ]+([/?#][^ ]*)?$') && !self.matches('^https?://[^/?#]*@')";
const URL_MESSAGE: &str = "must be an absolute http(s) URL with a host and without user:password@";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// RS384 or ES384. Default: the first of these two that the server lists
    /// in token_endpoint_auth_signing_alg_values_supported, in the server's
    /// order (RS384 if the server lists none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SigningAlgorithm>,

    /// A Secret in this namespace that holds the private key (PKCS#8, PKCS#1
    /// or SEC1 PEM, or a private JWK). Default: the operator generates a key
    /// into the Secret <name>-signing-key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,

    /// With keySecretRef: your next key, in another Secret with the same
    /// label. It is published beside the current key (state Next) and never
    /// signs; once KeyReady says it is safe, point keySecretRef at it and
    /// remove this field. The old key then stays published (Retiring) until
    /// nothing it signed is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key_secret_ref: Option<SecretKeyRef>,

    /// Sign in Vault or OpenBao Transit instead: the private key never
    /// leaves the key manager and no Secret holds it. The operator's
    /// installation names the server and how it logs in (chart values
    /// vault.*); this names the key. Instead of keySecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_transit: Option<VaultTransitSpec>,

    /// Sign in AWS KMS instead: the private key never leaves KMS and no
    /// Secret holds it. The installation names the region, the endpoint and
    /// the credentials (chart values aws.*); this names the key by its
    /// alias. Instead of keySecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsSpec>,

    /// Key id in the assertion header and the published JWKS. Default: the
    /// RFC 7638 thumbprint of the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub kid: Option<String>,

    /// Size of generated RSA keys: 2048, 3072 (default) or 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [2048, 3072, 4096]))]
    pub rsa_key_size: Option<u32>,

    /// A shared JWK Set (a name) this client's public keys also go into,
    /// served at the operator's /jwks/{namespace}/sets/{name}: for EHRs that
    /// register one JWKS URL per application for all its clients. Every
    /// client in the namespace that names the set contributes its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub jwks_set: Option<String>,

    /// URL of this client's JWK Set, sent as jku in the assertion header
    /// (some servers use it to find the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    pub jku: Option<String>,

    /// What happens to a generated key Secret when this resource is deleted:
    /// Retain (default; its public key is registered with the EHR) or Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_key_policy: Option<GeneratedKeyPolicy>,

    /// Scheduled rotation of the generated key. A rotation can also be
    /// asked for with the annotation smartbackend.dev/rotate-key=<new value>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultTransitSpec {
    /// The key's name after the namespace: the operator signs with the
    /// Transit key <namespace>.<key>, so that no namespace can sign with
    /// another's key. Its type decides the algorithm: ecdsa-p384 signs
    /// ES384, rsa-2048/3072/4096 sign RS384. A new key version (bao write
    /// -f transit/keys/<namespace>.<key>/rotate) is published first and
    /// signs once every server can have seen it.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    )]
    pub key: String,
}

/// A name within the namespace's KMS aliases.
const KMS_NAME: &str = r"^[A-Za-z0-9_-]+$";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsKmsSpec {
    /// The key's alias after the namespace: the operator signs with the key
    /// the alias alias/<prefix>/<namespace>/<key> names (the prefix is the
    /// installation's, smartbackend unless set), so that no namespace can
    /// sign with another's key. Its spec decides the algorithm:
    /// ECC_NIST_P384 signs ES384, RSA_2048/3072/4096 sign RS384.
    #[schemars(length(min = 1, max = 64), regex(pattern = KMS_NAME))]
    pub key: String,

    /// To rotate: the alias (after the namespace) of the new key. It is
    /// published first and, once every server can have seen it, tried; it
    /// signs from the first token it brings, and the old key stays
    /// published until nothing it signed is valid. Then set key to it and
    /// remove this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = KMS_NAME))]
    pub next_key: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// Rotate the generated key this long after it started signing, e.g.
    /// 720h. The new key is published first and used only once the server
    /// accepts it; the old one stays published until nothing it signed is
    /// still valid. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('87600h')").message("must be a duration from 1s to 87600h (ten years), e.g. 720h"))]
    pub every: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GeneratedKeyPolicy {
    #[default]
    Retain,
    Delete,
}

/// A key in a Secret of the resource's own namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as this resource).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// Name of the token Secret. Default: <name>-token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// Extra labels and annotations for the token Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Refresh when this much lifetime is left, e.g. 2m. Default: half the
    /// token's lifetime, but at least 150s when the lifetime allows (a
    /// mounted Secret reaches pods up to about two minutes after a write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8784h')").message("must be a duration of at most 8784h (a year), e.g. 2m"))]
    pub refresh_before: Option<String>,

    /// Extra form parameters for the token request, for servers that want
    /// them (e.g. resource). The SMART parameters cannot be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "!self.exists(k, k in ['grant_type', 'scope', 'client_assertion', 'client_assertion_type'])"
    ).message("must not set grant_type, scope, client_assertion or client_assertion_type"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 128)").message("each parameter name is at most 128 characters"))]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 2048}))]
    pub extra_params: Option<BTreeMap<String, String>>,

    /// Where the token goes: `Secret` (the token Secret; the default),
    /// `CSI` (only into the memory of pods that mount it with the
    /// smartbackend.dev CSI driver: no Secret, nothing in etcd) or
    /// `SecretAndCSI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<TokenDelivery>,

    /// CSI delivery only: the service accounts whose pods may mount the
    /// token. Default: any pod in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )
    )]
    pub consumers: Option<Vec<String>>,
}

/// Where a token is delivered.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenDelivery {
    /// The token Secret, which pods mount or read.
    #[default]
    Secret,
    /// The CSI driver's volumes only: the token is never written to the API.
    #[serde(rename = "CSI")]
    Csi,
    /// Both.
    #[serde(rename = "SecretAndCSI")]
    SecretAndCsi,
}

impl TokenDelivery {
    pub fn secret(self) -> bool {
        matches!(self, Self::Secret | Self::SecretAndCsi)
    }

    pub fn csi(self) -> bool {
        matches!(self, Self::Csi | Self::SecretAndCsi)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SecretTemplate {
    /// Labels for the token Secret (at most 32; values of Kubernetes'
    /// label size).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("each label key is at most 317 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the token Secret (at most 32, each value at most
    /// 4096 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("each annotation key is at most 317 characters"))]
    pub annotations: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret key (same namespace) holding PEM CA certificates to trust
    /// for the authorization server, for private CAs. Default: system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
}

impl SmartBackendClient {
    pub fn key_secret_default_name(name: &str) -> String {
        format!("{name}-signing-key")
    }

    pub fn token_secret_name(&self, name: &str) -> String {
        self.spec
            .token
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{name}-token"))
    }
}

/// The CRD as YAML, as `smart-backend-operator crd` prints it and
/// `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&SmartBackendClient::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_yaml_matches_the_code() {
        let committed = include_str!("../crds/smartbackendclients.smartbackend.dev.yaml");
        assert_eq!(
            committed,
            crd_yaml().unwrap(),
            "crds/ is out of date: run `cargo run -- crd > crds/smartbackendclients.smartbackend.dev.yaml`"
        );
    }
}
