//! The Secrets the operator writes: what they contain (built purely from
//! inputs) and how an existing one is read back. Only fields this operator
//! owns are ever set, so server-side apply never takes over others' fields.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::controller::decide::validate::ValidSpec;
use crate::crd::{CLIENT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::smart::{AccessToken, SigningAlgorithm};

pub const EXPIRES_AT_ANNOTATION: &str = "smartbackend.dev/expires-at";
pub const ISSUED_AT_ANNOTATION: &str = "smartbackend.dev/issued-at";
/// Hash of everything that shapes a token (client id, scopes, endpoint…):
/// when it changes, the token is replaced at once.
pub const INPUTS_ANNOTATION: &str = "smartbackend.dev/token-inputs";
pub const ALGORITHM_ANNOTATION: &str = "smartbackend.dev/algorithm";
pub const KID_ANNOTATION: &str = "smartbackend.dev/kid";
pub use crate::crd::RELOADER_IGNORE;

pub const PRIVATE_KEY_FILE: &str = "private-key.pem";
pub const PUBLIC_JWKS_FILE: &str = "public-jwks.json";

/// RFC 3339 to the second, rounded down so that an expiry is never
/// overstated.
pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::try_from(t)
        .and_then(|t| Timestamp::from_second(t.as_second()))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// RFC 3339 to the second, rounded up: for retry times, which must never
/// come earlier than scheduled.
pub fn rfc3339_ceil(t: SystemTime) -> String {
    rfc3339(ceil_second(t))
}

/// `t` rounded up to the second, so that a wait written with it never
/// comes short.
pub fn ceil_second(t: SystemTime) -> SystemTime {
    whole_second(crate::checked_time::after(t, Duration::from_millis(999)))
}

/// `t` rounded down to the second, as the Secret's annotations hold it. A
/// fresh token's times are cut to this before anything is computed from
/// them, so a later reconcile that reads them back computes the same.
pub fn whole_second(t: SystemTime) -> SystemTime {
    let seconds = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(seconds)
}

pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    s.parse::<Timestamp>().ok().map(SystemTime::from)
}

/// Whether a Secret carries our managed-by label.
pub fn is_managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY_VALUE)
}

/// Whether `secret` was written by this operator for the resource `owner_uid`.
pub fn is_owned_by(secret: &Secret, owner_uid: &str) -> bool {
    is_managed(secret)
        && secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner_uid)
}

pub fn token_inputs_hash(spec: &ValidSpec, token_endpoint: &str, kid: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        spec.client_id.as_str(),
        spec.scope.as_str(),
        token_endpoint,
        spec.audience.as_deref().unwrap_or(""),
        kid,
        spec.fhir_base_url.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in &spec.extra_params {
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base_meta(name: &str, namespace: &str, client: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY_VALUE.to_string(),
        )])),
        annotations: Some(BTreeMap::from([(
            CLIENT_ANNOTATION.to_string(),
            client.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The token Secret's name, the operator's labels and annotations, and the
/// template's (the operator's own labels win over the template's).
fn token_meta(spec: &ValidSpec, namespace: &str, client: &str) -> ObjectMeta {
    let mut meta = base_meta(&spec.token_secret_name, namespace, client);
    let labels = meta.labels.get_or_insert_default();
    for (k, v) in &spec.template.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let annotations = meta.annotations.get_or_insert_default();
    for (k, v) in &spec.template.annotations {
        annotations.insert(k.clone(), v.clone());
    }
    meta
}

/// The token Secret for a freshly issued token.
pub struct TokenSecretInput<'a> {
    pub spec: &'a ValidSpec,
    pub namespace: &'a str,
    pub client_name: &'a str,
    pub owner: OwnerReference,
    pub token: &'a AccessToken,
    pub issued_at: SystemTime,
    pub inputs_hash: &'a str,
}

pub fn build_token_secret(input: &TokenSecretInput<'_>) -> Secret {
    let spec = input.spec;
    let mut meta = token_meta(spec, input.namespace, input.client_name);
    let annotations = meta.annotations.get_or_insert_default();
    let expires_at = rfc3339(input.token.expires_at);
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), expires_at.clone());
    annotations.insert(ISSUED_AT_ANNOTATION.into(), rfc3339(input.issued_at));
    annotations.insert(INPUTS_ANNOTATION.into(), input.inputs_hash.to_string());
    annotations.insert(RELOADER_IGNORE.into(), "true".into());
    meta.owner_references = Some(vec![input.owner.clone()]);
    // The same keys as a CSI volume's files.
    let data = crate::token_delivery::wire::token_files(
        input.token.access_token.expose(),
        &expires_at,
        spec.fhir_base_url.as_str(),
        input.token.scope.as_deref(),
    )
    .into_iter()
    .map(|(name, value)| (name.to_string(), ByteString(value.into_bytes())))
    .collect::<BTreeMap<_, _>>();
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What an existing token Secret says about its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub inputs_hash: String,
    pub scope: Option<String>,
}

pub fn read_token_secret(secret: &Secret) -> Option<StoredToken> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let data = secret.data.as_ref()?;
    if data.get("access_token").is_none_or(|t| t.0.is_empty()) {
        return None;
    }
    let expires_at = parse_rfc3339(annotations.get(EXPIRES_AT_ANNOTATION)?)?;
    let issued_at = annotations
        .get(ISSUED_AT_ANNOTATION)
        .and_then(|s| parse_rfc3339(s))
        .unwrap_or(
            expires_at
                - Duration::from_secs(300)
                    .min(expires_at.duration_since(UNIX_EPOCH).unwrap_or_default()),
        );
    Some(StoredToken {
        issued_at,
        expires_at,
        inputs_hash: annotations
            .get(INPUTS_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        scope: data
            .get("scope")
            .map(|s| String::from_utf8_lossy(&s.0).into_owned()),
    })
}

/// The token Secret as the operator last applied it, with the template as
/// it is now: exactly the fields this operator owns (its labels and
/// annotations, the template's, the owner, the data), so that applying it
/// repairs a drifted template without taking over anyone else's labels or
/// annotations. The token itself is unchanged.
pub fn repaired_token_secret(
    existing: &Secret,
    spec: &ValidSpec,
    namespace: &str,
    client_name: &str,
) -> Secret {
    let mut meta = token_meta(spec, namespace, client_name);
    let annotations = meta.annotations.get_or_insert_default();
    let had = existing.metadata.annotations.as_ref();
    for key in [
        EXPIRES_AT_ANNOTATION,
        ISSUED_AT_ANNOTATION,
        INPUTS_ANNOTATION,
        RELOADER_IGNORE,
    ] {
        if let Some(value) = had.and_then(|a| a.get(key)) {
            annotations.insert(key.to_string(), value.clone());
        }
    }
    meta.owner_references = existing.metadata.owner_references.clone();
    Secret {
        metadata: meta,
        type_: existing.type_.clone(),
        data: existing.data.clone(),
        ..Secret::default()
    }
}

/// The Secret's owner references with this client's set to `owner` (or
/// removed when `None`), and everyone else's kept.
pub fn owners_with(
    secret: &Secret,
    uid: &str,
    owner: Option<OwnerReference>,
) -> Vec<OwnerReference> {
    let others = secret.metadata.owner_references.iter().flatten();
    let mut owners: Vec<OwnerReference> = others.filter(|r| r.uid != uid).cloned().collect();
    owners.extend(owner);
    owners
}

/// Labels and annotations the template asks for that the Secret lacks.
pub fn template_drifted(secret: &Secret, spec: &ValidSpec) -> bool {
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    spec.template
        .labels
        .iter()
        .any(|(k, v)| labels.get(k) != Some(v))
        || spec
            .template
            .annotations
            .iter()
            .any(|(k, v)| annotations.get(k) != Some(v))
}

/// What goes into a generated signing key Secret.
pub struct KeySecretInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub client_name: &'a str,
    /// The uid of the resource the key is made for.
    pub client_uid: &'a str,
    /// Set only under generatedKeyPolicy: Delete.
    pub owner: Option<OwnerReference>,
    pub private_pem: &'a str,
    pub public_jwks: &'a str,
    pub algorithm: SigningAlgorithm,
    pub kid: &'a str,
}

/// A generated signing key Secret.
pub fn build_key_secret(input: KeySecretInput<'_>) -> Secret {
    let KeySecretInput {
        name,
        namespace,
        client_name,
        client_uid,
        owner,
        private_pem,
        public_jwks,
        algorithm,
        kid,
    } = input;
    let mut meta = base_meta(name, namespace, client_name);
    let annotations = meta.annotations.get_or_insert_default();
    annotations.insert(ALGORITHM_ANNOTATION.into(), algorithm.as_str().into());
    annotations.insert(KID_ANNOTATION.into(), kid.into());
    annotations.insert(crate::crd::CLIENT_UID_ANNOTATION.into(), client_uid.into());
    annotations.insert(RELOADER_IGNORE.into(), "true".into());
    meta.owner_references = owner.map(|o| vec![o]);
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                PRIVATE_KEY_FILE.to_string(),
                ByteString(private_pem.as_bytes().to_vec()),
            ),
            (
                PUBLIC_JWKS_FILE.to_string(),
                ByteString(public_jwks.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests;
