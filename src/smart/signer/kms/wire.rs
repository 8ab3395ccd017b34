//! AWS KMS's answers read with plain values: which algorithm a key's spec
//! signs with, KMS's DER ECDSA signature as JOSE's r‖s, and what an error
//! code means (and what to do about it). The SDK makes the calls.

use p384::ecdsa::Signature;

use crate::smart::SigningAlgorithm;
use crate::smart::signer::SignerError;

/// The KMS signing algorithm for a JOSE one.
pub fn kms_algorithm(algorithm: SigningAlgorithm) -> &'static str {
    match algorithm {
        SigningAlgorithm::ES384 => "ECDSA_SHA_384",
        SigningAlgorithm::RS384 => "RSASSA_PKCS1_V1_5_SHA_384",
    }
}

/// What a key's description says it signs: ES384 for an `ECC_NIST_P384`
/// signing key, RS384 for an RSA one that offers PKCS#1 v1.5 with SHA-384.
pub fn algorithm_of(spec: &str, usage: &str, offered: &[&str]) -> Option<SigningAlgorithm> {
    if usage != "SIGN_VERIFY" {
        return None;
    }
    let algorithm = match spec {
        "ECC_NIST_P384" => SigningAlgorithm::ES384,
        "RSA_2048" | "RSA_3072" | "RSA_4096" => SigningAlgorithm::RS384,
        _ => return None,
    };
    offered
        .contains(&kms_algorithm(algorithm))
        .then_some(algorithm)
}

/// KMS's signature as a JWS carries it: ECDSA comes DER-encoded and
/// becomes the fixed-size r‖s (96 bytes for P-384); PKCS#1 v1.5 is the same
/// in both.
pub fn jose_signature(algorithm: SigningAlgorithm, signature: &[u8]) -> Result<Vec<u8>, String> {
    match algorithm {
        SigningAlgorithm::RS384 if signature.is_empty() => Err("the signature is empty".into()),
        SigningAlgorithm::RS384 => Ok(signature.to_vec()),
        SigningAlgorithm::ES384 => Signature::from_der(signature)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| "the ECDSA signature is not DER for P-384".into()),
    }
}

/// A failed call, as the SDK reports it.
#[derive(Debug, Default)]
pub struct Failed<'a> {
    /// What was being done, e.g. "sign with AWS KMS key alias/x".
    pub action: &'a str,
    pub key: &'a str,
    /// The IAM action to grant, e.g. `kms:Sign`.
    pub permission: &'a str,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The service's error code (`AccessDeniedException`, ...).
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The failure's description when no answer came.
    pub detail: &'a str,
    /// No answer came because of the network or a timeout (not because
    /// the request could not be made: no region, no credentials).
    pub network: bool,
}

/// What a failed call means and what to do. KMS answers with JSON error
/// codes; STS, IAM and signature checks with XML, which the SDK may not
/// parse: their codes are then looked for in the body.
pub fn error(f: &Failed<'_>, body: &str) -> SignerError {
    let Some(status) = f.status else {
        return if f.network {
            SignerError::Unreachable(f.detail.to_string())
        } else {
            SignerError::Credential(format!(
                "could not {}: {}; check the AWS region and the credential source (IRSA or Pod Identity role, environment, instance profile)",
                f.action, f.detail
            ))
        };
    };
    let code = f
        .code
        .unwrap_or_else(|| code_in(body))
        .trim_end_matches("Exception");
    let message = f.message.unwrap_or_default();
    match code {
        "AccessDenied" => SignerError::PermissionDenied {
            action: f.action.to_string(),
            grant: format!(
                "allow {} on the key in the operator's IAM policy and in the key's key policy",
                f.permission
            ),
        },
        "NotFound" => SignerError::KeyNotFound {
            key: f.key.to_string(),
            url: "AWS KMS".into(),
            remedy: "create it (a SIGN_VERIFY key of spec ECC_NIST_P384 or RSA_2048/3072/4096) and the alias that names it".into(),
        },
        "SignatureDoesNotMatch" | "InvalidClientTokenId" | "UnrecognizedClient"
        | "ExpiredToken" | "InvalidSignature" | "IncompleteSignature" | "MissingAuthenticationToken" => {
            SignerError::Credential(format!(
                "AWS refused the credentials in use ({code}) to {}: check the credential source (IRSA or Pod Identity role, environment, instance profile) and the clock",
                f.action
            ))
        }
        "Disabled" | "KMSInvalidState" | "InvalidKeyUsage" | "UnsupportedOperation"
        | "KMSInvalidSigningAlgorithm" => SignerError::KeyTypeUnusable {
            key: f.key.to_string(),
            kind: format!("{code}: {}", bounded(message)),
            wanted: "ES384 or RS384".into(),
            remedy: "enable the key, or use a SIGN_VERIFY key of spec ECC_NIST_P384 (ES384) or RSA_2048/3072/4096 (RS384)".into(),
        },
        _ if status >= 500 || status == 429 || code.contains("Throttl") || code == "KeyUnavailable" || code == "DependencyTimeout" || code == "KMSInternal" => {
            SignerError::Unavailable {
                url: "AWS KMS".into(),
                status,
                detail: format!(": {code} {}", bounded(message)),
            }
        }
        _ => SignerError::Refused {
            action: f.action.to_string(),
            status,
            detail: format!(": {code} {}", bounded(message)),
        },
    }
}

/// The `<Code>` of an XML error body, or "".
fn code_in(body: &str) -> &str {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|c| c.len() <= 64)
        .unwrap_or_default()
}

/// A service message kept to one line of a condition.
fn bounded(message: &str) -> String {
    message.chars().take(200).collect()
}

/// Alias names: `alias/` and then letters, digits, `/`, `_` and `-`.
pub fn check_alias(alias: &str) -> Result<(), String> {
    let name = alias
        .strip_prefix("alias/")
        .ok_or_else(|| format!("the AWS KMS alias {alias:?} must start with alias/"))?;
    let fine = !name.is_empty()
        && alias.len() <= 256
        && !name.starts_with("aws/")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "the AWS KMS alias {alias:?} is not valid: at most 256 characters of letters, digits, '/', '_' and '-', not under alias/aws/"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::Signer as _;

    #[test]
    fn key_specs_map_onto_the_two_algorithms() {
        let es = ["ECDSA_SHA_384"];
        let rs = ["RSASSA_PSS_SHA_384", "RSASSA_PKCS1_V1_5_SHA_384"];
        assert_eq!(
            algorithm_of("ECC_NIST_P384", "SIGN_VERIFY", &es),
            Some(SigningAlgorithm::ES384)
        );
        assert_eq!(
            algorithm_of("RSA_3072", "SIGN_VERIFY", &rs),
            Some(SigningAlgorithm::RS384)
        );
        assert_eq!(
            algorithm_of("ECC_NIST_P256", "SIGN_VERIFY", &["ECDSA_SHA_256"]),
            None
        );
        assert_eq!(algorithm_of("RSA_3072", "ENCRYPT_DECRYPT", &rs), None);
        assert_eq!(
            algorithm_of("RSA_3072", "SIGN_VERIFY", &["RSASSA_PSS_SHA_384"]),
            None
        );
        assert_eq!(
            algorithm_of("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", &[]),
            None
        );
    }

    #[test]
    fn a_der_ecdsa_signature_becomes_r_and_s() {
        let key = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        let signature: Signature = key.sign(b"input");
        let der = signature.to_der();
        let jose = jose_signature(SigningAlgorithm::ES384, der.as_bytes()).unwrap();
        assert_eq!(jose.len(), 96);
        assert_eq!(jose, signature.to_bytes().to_vec());
        assert!(jose_signature(SigningAlgorithm::ES384, &jose).is_err());
        assert!(jose_signature(SigningAlgorithm::RS384, &[]).is_err());
        assert_eq!(
            jose_signature(SigningAlgorithm::RS384, &[1, 2]).unwrap(),
            [1, 2]
        );
    }

    fn failed(status: Option<u16>, code: Option<&'static str>) -> Failed<'static> {
        Failed {
            action: "sign with AWS KMS key alias/team/app",
            key: "alias/team/app",
            permission: "kms:Sign",
            status,
            code,
            message: Some("the message"),
            detail: "connection refused",
            network: true,
        }
    }

    #[test]
    fn each_error_says_what_to_do() {
        let e = error(&failed(Some(400), Some("AccessDeniedException")), "");
        assert!(matches!(e, SignerError::PermissionDenied { .. }));
        assert!(e.to_string().contains("kms:Sign"), "{e}");
        // XML from the signature check, which the JSON protocol cannot read.
        let xml = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code></Error></Errors></ErrorResponse>";
        assert!(matches!(
            error(&failed(Some(403), None), xml),
            SignerError::PermissionDenied { .. }
        ));
        let xml = xml.replace("AccessDenied", "SignatureDoesNotMatch");
        let e = error(&failed(Some(403), None), &xml);
        assert!(matches!(e, SignerError::Credential(_)), "{e}");
        let e = error(&failed(Some(400), Some("NotFoundException")), "");
        assert!(e.to_string().contains("create it"), "{e}");
        let e = error(&failed(Some(400), Some("DisabledException")), "");
        assert!(matches!(e, SignerError::KeyTypeUnusable { .. }), "{e}");
        for (status, code) in [
            (500, "KMSInternalException"),
            (400, "ThrottlingException"),
            (503, "x"),
        ] {
            let e = error(&failed(Some(status), Some(code)), "");
            assert!(e.is_transient(), "{e}");
        }
        assert!(error(&failed(None, None), "").is_transient());
        let no_credentials = Failed {
            network: false,
            ..failed(None, None)
        };
        let e = error(&no_credentials, "");
        assert!(
            matches!(e, SignerError::Credential(_)) && !e.is_transient(),
            "{e}"
        );
        let e = error(&failed(Some(400), Some("ValidationException")), "");
        assert!(
            matches!(e, SignerError::Refused { .. }) && !e.is_transient(),
            "{e}"
        );
    }

    #[test]
    fn aliases_are_checked() {
        assert!(check_alias("alias/smartbackend/team/app").is_ok());
        for bad in [
            "smartbackend/x",
            "alias/",
            "alias/aws/x",
            "alias/a b",
            "alias/a.b",
        ] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
        assert!(check_alias(&format!("alias/{}", "a".repeat(251))).is_err());
    }
}
