//! What goes to and comes from Vault / OpenBao Transit, as pure functions
//! of plain values: the paths, the sign request, the key's description,
//! the signature, the login answer and the errors. The HTTP calls are in
//! the parent module.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::smart::SigningAlgorithm;
use crate::smart::http::bounded_text;
use crate::smart::signer::SignerError;

/// The most of a key manager's error text put in a message.
const MAX_DETAIL: usize = 300;
/// A name in a Transit path (mount segment, key, role): what Vault itself
/// allows in practice, and nothing that changes the path.
const MAX_NAME: usize = 128;

/// Checks a mount path (`transit`, `teams/a/transit`) or a key or role
/// name: segments of letters, digits, `-`, `_` and `.`, never `.` or `..`.
pub fn check_path(what: &str, value: &str, slashes: bool) -> Result<(), String> {
    let segments: Vec<&str> = if slashes {
        value.trim_matches('/').split('/').collect()
    } else {
        vec![value]
    };
    let good = |s: &&str| {
        !s.is_empty()
            && s.len() <= MAX_NAME
            && *s != "."
            && *s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if segments.iter().all(good) {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} is not a valid Transit name: use letters, digits, '-', '_' and '.'{}",
            if slashes {
                ", segments separated by '/'"
            } else {
                ""
            }
        ))
    }
}

/// The algorithm a Transit key type signs with here, if any.
pub fn algorithm_of(kind: &str) -> Option<SigningAlgorithm> {
    match kind {
        "ecdsa-p384" => Some(SigningAlgorithm::ES384),
        "rsa-2048" | "rsa-3072" | "rsa-4096" => Some(SigningAlgorithm::RS384),
        _ => None,
    }
}

/// What the operator needs of `GET /v1/{mount}/keys/{key}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub kind: String,
    pub latest_version: u64,
    /// The public key (PEM) of every version still available.
    pub public_keys: BTreeMap<u64, String>,
    pub supports_signing: bool,
}

#[derive(Deserialize)]
struct KeyAnswer {
    data: KeyData,
}

#[derive(Deserialize)]
struct KeyData {
    #[serde(rename = "type")]
    kind: String,
    latest_version: u64,
    #[serde(default)]
    supports_signing: bool,
    #[serde(default)]
    keys: BTreeMap<String, Value>,
}

pub fn key_info(body: &[u8]) -> Result<KeyInfo, String> {
    let answer: KeyAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut public_keys = BTreeMap::new();
    for (version, entry) in answer.data.keys {
        let version: u64 = version
            .parse()
            .map_err(|_| format!("key version {version:?} is not a number"))?;
        // Symmetric keys list a creation time here, not a public key.
        if let Some(pem) = entry.get("public_key").and_then(Value::as_str) {
            public_keys.insert(version, pem.to_string());
        }
    }
    Ok(KeyInfo {
        kind: answer.data.kind,
        latest_version: answer.data.latest_version,
        public_keys,
        supports_signing: answer.data.supports_signing,
    })
}

/// The body of `POST /v1/{mount}/sign/{key}/sha2-384`: JOSE's signature
/// encoding (`jws`: r‖s for ECDSA, base64url) and, for RSA, PKCS#1 v1.5
/// (Transit's default is PSS, which RS384 is not).
pub fn sign_request(algorithm: SigningAlgorithm, version: u64, input: &[u8]) -> Value {
    let mut body = json!({
        "input": STANDARD.encode(input),
        "key_version": version,
        "marshaling_algorithm": "jws",
    });
    if algorithm == SigningAlgorithm::RS384 {
        body["signature_algorithm"] = json!("pkcs1v15");
    }
    body
}

/// The signature bytes from a sign answer, `vault:v{version}:{base64url}`,
/// checked to come from the version asked for.
pub fn signature(body: &[u8], version: u64) -> Result<Vec<u8>, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let text = answer
        .pointer("/data/signature")
        .and_then(Value::as_str)
        .ok_or("no data.signature in the answer")?;
    let prefix = format!("vault:v{version}:");
    let encoded = text.strip_prefix(&prefix).ok_or_else(|| {
        format!("the signature is not of version {version} (it does not start with {prefix:?})")
    })?;
    URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| format!("the signature is not base64url: {e}"))
}

/// A token from a login answer, and how long it lives (0: no expiry).
pub fn login(body: &[u8]) -> Result<(String, Duration), String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let token = answer
        .pointer("/auth/client_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no auth.client_token in the answer")?;
    let lease = answer
        .pointer("/auth/lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok((token.to_string(), Duration::from_secs(lease)))
}

/// Vault's `{"errors": [...]}`, joined and bounded, as ": ..." (or empty).
fn detail(body: &[u8]) -> String {
    let errors: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let joined = errors.join("; ");
    if joined.is_empty() {
        String::new()
    } else {
        format!(": {}", bounded_text(&joined, MAX_DETAIL))
    }
}

/// One call to Transit, for the words of its errors.
pub struct Call<'a> {
    /// What was being done, e.g. "sign with transit key billing".
    pub action: String,
    pub url: &'a str,
    /// What to grant when it is refused, e.g. the Vault policy that allows
    /// it (`path "transit/sign/billing/sha2-384" { capabilities = ["update"] }`).
    pub grant: String,
    /// Set for calls about one key.
    pub key: Option<&'a str>,
}

/// The error for a non-2xx answer.
pub fn error(call: &Call<'_>, status: u16, body: &[u8]) -> SignerError {
    let detail = detail(body);
    let no_such_key = detail.contains("no such key")
        || detail.contains("not found")
        || (status == 404 && detail.is_empty());
    match (status, call.key) {
        (403, _) => SignerError::PermissionDenied {
            action: call.action.clone(),
            grant: call.grant.clone(),
        },
        (400 | 404, Some(key)) if no_such_key => SignerError::KeyNotFound {
            key: key.to_string(),
            url: call.url.to_string(),
            remedy: "create it (`bao write -f transit/keys/NAME type=ecdsa-p384`) or fix the key name and mount".into(),
        },
        (429 | 500.., _) => SignerError::Unavailable {
            url: call.url.to_string(),
            status,
            detail,
        },
        _ => SignerError::Refused {
            action: call.action.clone(),
            status,
            detail,
        },
    }
}

#[cfg(test)]
mod tests;
