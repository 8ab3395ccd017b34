//! Checks a SmartBackendClient's spec beyond what the CRD schema can, and
//! turns it into typed values. Pure: no client, no clock.

use std::time::Duration;

use url::Url;

use crate::crd::{GeneratedKeyPolicy, SecretTemplate, SmartBackendClient};
use crate::smart::keys::{DEFAULT_RSA_BITS, RSA_GENERATE_BITS};
use crate::smart::{MetadataSource, SigningAlgorithm};

mod delivery;
mod remote;

/// Where the signing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The operator's own `<name>-signing-key` Secret.
    Generated {
        secret_name: String,
        policy: GeneratedKeyPolicy,
        rsa_bits: usize,
    },
    /// A Secret the user provides, and the next key they publish before
    /// switching to it.
    Referenced {
        secret_name: String,
        key: String,
        next: Option<(String, String)>,
    },
    /// A Vault / OpenBao Transit key, `<namespace>.<key>`.
    Transit { key: String },
    /// AWS KMS keys by their names in the namespace's aliases (the alias
    /// is built with the installation's prefix): the one that signs, and
    /// the next one to publish.
    Kms { key: String, next: Option<String> },
}

/// A spec whose every field has been checked and parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub fhir_base_url: Url,
    pub client_id: String,
    /// Space-joined, as sent.
    pub scope: String,
    /// Where the authorization metadata is read.
    pub metadata: MetadataSource,
    pub token_endpoint: Option<Url>,
    pub audience: Option<String>,
    pub algorithm: Option<SigningAlgorithm>,
    pub kid: Option<String>,
    pub jku: Option<String>,
    pub key: KeySource,
    pub token_secret_name: String,
    pub template: SecretTemplate,
    pub refresh_before: Option<Duration>,
    /// Scheduled rotation of the generated key.
    pub rotate_every: Option<Duration>,
    pub extra_params: Vec<(String, String)>,
    pub ca_bundle: Option<(String, String)>,
    /// Whether the token goes to the Secret.
    pub to_secret: bool,
    /// The service accounts whose pods may mount the token through the CSI
    /// driver (empty: any in the namespace), when it goes there.
    pub to_csi: Option<Vec<String>>,
}

/// A field that cannot work, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field,
        problem: problem.into(),
    }
}

fn url_field(field: &'static str, value: &str, allow_http: bool) -> Result<Url, InvalidSpec> {
    let url = Url::parse(value)
        .map_err(|e| invalid(field, format!("{value:?} is not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(invalid(
                field,
                "plain http is refused: use https (the operator allows http only when started with --insecure-allow-http, for development)",
            ));
        }
        other => return Err(invalid(field, format!("scheme {other:?} is not http(s)"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, "the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            field,
            "remove the user:password@ part; credentials never go in URLs",
        ));
    }
    Ok(url)
}

const RESERVED_PARAMS: [&str; 4] = [
    "grant_type",
    "scope",
    "client_assertion",
    "client_assertion_type",
];

/// What the operator admits beyond the schema, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Plain http URLs (`--insecure-allow-http`).
    pub allow_http: bool,
    /// The shortest `rotation.every`: the JWKS max-age, the rotation margin
    /// and the assertion lifetime. A key then signs at least as long as its
    /// successor waits to be published, and the retiring key (kept for an
    /// assertion lifetime and a max-age) is gone before the next rotation.
    pub rotation_floor: Duration,
    /// Whether the operator is configured to sign with Vault / OpenBao
    /// Transit (`--vault-address`).
    pub vault: bool,
    /// Whether it is configured to sign with AWS KMS (`--aws-kms`).
    pub kms: bool,
    /// Whether it delivers tokens to the CSI driver (`--csi-listen-addr`).
    pub csi: bool,
}

impl Rules {
    /// https only, with the default rotation waits.
    pub fn https_only() -> Self {
        Self {
            allow_http: false,
            rotation_floor: Duration::from_secs(300 + 60 + 240),
            vault: false,
            kms: false,
            csi: false,
        }
    }
}

/// The longest `rotation.every`: ten years.
pub const MAX_ROTATION_EVERY: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Validates `sbc` (named `name`) under the operator's rules.
pub fn validate(
    sbc: &SmartBackendClient,
    name: &str,
    rules: Rules,
) -> Result<ValidSpec, InvalidSpec> {
    let allow_http = rules.allow_http;
    let spec = &sbc.spec;
    let fhir_base_url = url_field("fhirBaseUrl", &spec.fhir_base_url, allow_http)?;
    if spec.client_id.trim().is_empty() {
        return Err(invalid("clientId", "must not be empty"));
    }
    let scopes: Vec<&str> = spec
        .scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        return Err(invalid(
            "scopes",
            "name at least one scope, e.g. system/Patient.rs",
        ));
    }
    if let Some(bad) = scopes.iter().find(|s| s.contains(char::is_whitespace)) {
        return Err(invalid(
            "scopes",
            format!("{bad:?} contains whitespace: list each scope separately"),
        ));
    }
    let token_endpoint = spec
        .token_endpoint
        .as_deref()
        .map(|u| url_field("tokenEndpoint", u, allow_http))
        .transpose()?;
    let metadata = match spec.issuer.as_deref() {
        Some(issuer) => MetadataSource::Issuer(url_field("issuer", issuer, allow_http)?),
        None => MetadataSource::Smart(fhir_base_url.clone()),
    };
    let jku = spec
        .signing
        .jku
        .as_deref()
        .map(|u| url_field("signing.jku", u, allow_http))
        .transpose()?;
    let refresh_before = spec
        .token
        .refresh_before
        .as_deref()
        .map(|d| {
            humantime::parse_duration(d).map_err(|e| {
                invalid(
                    "token.refreshBefore",
                    format!("{d:?} is not a duration like 90s, 5m or 1h ({e})"),
                )
            })
        })
        .transpose()?;
    let rsa_bits = spec
        .signing
        .rsa_key_size
        .map(|b| b as usize)
        .unwrap_or(DEFAULT_RSA_BITS);
    if !RSA_GENERATE_BITS.contains(&rsa_bits) {
        return Err(invalid("signing.rsaKeySize", "must be 2048, 3072 or 4096"));
    }
    let key = match (&spec.signing.vault_transit, &spec.signing.key_secret_ref) {
        (Some(transit), _) => remote::transit_key(sbc, transit, &rules)?,
        (None, _) if let Some(kms) = &spec.signing.aws_kms => remote::kms_key(sbc, kms, &rules)?,
        (None, Some(r)) => KeySource::Referenced {
            secret_name: r.name.clone(),
            key: r.key.clone(),
            next: match &spec.signing.next_key_secret_ref {
                Some(n) if n == r => {
                    return Err(invalid(
                        "signing.nextKeySecretRef",
                        "names the same key as keySecretRef: point it at the new key's Secret",
                    ));
                }
                next => next.as_ref().map(|n| (n.name.clone(), n.key.clone())),
            },
        },
        (None, None) => KeySource::Generated {
            secret_name: SmartBackendClient::key_secret_default_name(name),
            policy: spec.signing.generated_key_policy.unwrap_or_default(),
            rsa_bits,
        },
    };
    let rotate_every = rotation(sbc, rules.rotation_floor)?;
    if spec.signing.next_key_secret_ref.is_some() && spec.signing.key_secret_ref.is_none() {
        return Err(invalid(
            "signing.nextKeySecretRef",
            "is for keys you provide (with keySecretRef); a generated key rotates with signing.rotation.every or the smartbackend.dev/rotate-key annotation",
        ));
    }
    let token_secret_name = sbc.token_secret_name(name);
    if let KeySource::Referenced { secret_name, .. } | KeySource::Generated { secret_name, .. } =
        &key
        && *secret_name == token_secret_name
    {
        return Err(invalid(
            "token.secretName",
            "must differ from the key Secret's name",
        ));
    }
    let mut extra_params = Vec::new();
    for (k, v) in spec.token.extra_params.iter().flatten() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            return Err(invalid(
                "token.extraParams",
                format!("{k} is set by the operator and cannot be overridden"),
            ));
        }
        extra_params.push((k.clone(), v.clone()));
    }
    let template = spec.token.secret_template.clone().unwrap_or_default();
    if let Some(reserved) = template
        .labels
        .keys()
        .chain(template.annotations.keys())
        .find(|k| reserved_key(k))
    {
        return Err(invalid(
            "token.secretTemplate",
            format!(
                "{reserved} is set by the operator and cannot be overridden (keys under smartbackend.dev/, the managed-by label and the reloader annotation are reserved)"
            ),
        ));
    }
    let (to_secret, to_csi) = delivery::delivery(sbc, &rules)?;
    Ok(ValidSpec {
        fhir_base_url,
        metadata,
        client_id: spec.client_id.trim().to_string(),
        scope: scopes.join(" "),
        token_endpoint,
        audience: spec.audience.clone(),
        algorithm: spec.signing.algorithm,
        kid: spec.signing.kid.clone(),
        jku: jku.map(|u| u.to_string()),
        key,
        token_secret_name,
        template,
        refresh_before,
        rotate_every,
        extra_params,
        ca_bundle: spec
            .tls
            .as_ref()
            .and_then(|t| t.ca_bundle_secret_ref.as_ref())
            .map(|r| (r.name.clone(), r.key.clone())),
        to_secret,
        to_csi,
    })
}

/// `spec.signing.rotation.every`, and whether rotation can work for the
/// key as configured (it needs a generated key and a kid per key). The
/// rotate-key annotation is checked where it is acted on: an annotation
/// never stops refreshes.
fn rotation(sbc: &SmartBackendClient, floor: Duration) -> Result<Option<Duration>, InvalidSpec> {
    let signing = &sbc.spec.signing;
    let every = signing.rotation.as_ref().and_then(|r| r.every.as_deref());
    let Some(every) = every else { return Ok(None) };
    if signing.key_secret_ref.is_some() {
        return Err(invalid(
            "signing.rotation",
            "the operator rotates only keys it generates; with keySecretRef, rotate by publishing the next key first (see the README's key rotation section), and remove spec.signing.rotation",
        ));
    }
    if signing.kid.is_some() {
        return Err(invalid(
            "signing.kid",
            "a rotation publishes two keys at once, which need different kids: remove spec.signing.kid (each key then gets its RFC 7638 thumbprint), or stop rotating",
        ));
    }
    let parsed = humantime::parse_duration(every).map_err(|e| {
        invalid(
            "signing.rotation.every",
            format!("{every:?} is not a duration like 720h ({e})"),
        )
    })?;
    if parsed < floor {
        return Err(invalid(
            "signing.rotation.every",
            format!(
                "{every:?} is shorter than this operator allows ({}s: the JWKS max-age, the rotation margin and the assertion lifetime); rotate every {}s or more",
                floor.as_secs(),
                floor.as_secs()
            ),
        ));
    }
    if parsed > MAX_ROTATION_EVERY {
        return Err(invalid(
            "signing.rotation.every",
            format!(
                "{every:?} is longer than ten years (87600h): rotate at least that often, or remove spec.signing.rotation"
            ),
        ));
    }
    Ok(Some(parsed))
}

/// Labels and annotations the operator writes on its Secrets and relies on.
fn reserved_key(key: &str) -> bool {
    key.starts_with("smartbackend.dev/")
        || key == crate::crd::MANAGED_BY_LABEL
        || key == crate::crd::RELOADER_IGNORE
}

#[cfg(test)]
pub(crate) mod tests;
