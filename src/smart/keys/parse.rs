//! Reading private keys from PEM (PKCS#8, PKCS#1, SEC1) and private JWKs,
//! with errors that say which kind of key was found when it is the wrong one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p384::elliptic_curve::sec1::ToSec1Point;
use pkcs8::der::Decode;
use pkcs8::{DecodePrivateKey, ObjectIdentifier};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PrivateKey as RsaPrivateKey};
use serde::Deserialize;

use super::{KeyError, MAX_RSA_BITS, MIN_RSA_BITS, PrivateKey};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Human names for curves people commonly hold keys on.
fn curve_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "P-256".into(),
        "1.3.132.0.34" => "P-384".into(),
        "1.3.132.0.35" => "P-521".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        other => format!("the curve with OID {other}"),
    }
}

/// The most key material read: a 4096-bit RSA key in a private JWK is
/// about 3.3 KiB, in PEM about 3.2 KiB.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

pub(super) fn parse_private_key(input: &[u8]) -> Result<PrivateKey, KeyError> {
    if input.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLarge(input.len()));
    }
    let text = std::str::from_utf8(input).map_err(|_| KeyError::UnrecognisedFormat)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return parse_jwk(trimmed);
    }
    if trimmed.starts_with("-----BEGIN ") {
        return parse_pem(trimmed);
    }
    Err(KeyError::UnrecognisedFormat)
}

fn malformed(format: &'static str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Malformed {
        format,
        reason: e.to_string(),
    }
}

fn parse_pem(text: &str) -> Result<PrivateKey, KeyError> {
    let (label, doc) =
        pkcs8::der::SecretDocument::from_pem(text).map_err(|e| malformed("PEM", e))?;
    let der = doc.as_bytes();
    match label {
        "PRIVATE KEY" => parse_pkcs8(der),
        "RSA PRIVATE KEY" => {
            let key = RsaPrivateKey::from_pkcs1_der(der).map_err(|e| malformed("PKCS#1", e))?;
            checked_rsa(key)
        }
        "EC PRIVATE KEY" => {
            let sec1 = sec1::EcPrivateKey::from_der(der).map_err(|e| malformed("SEC1", e))?;
            let curve = sec1.parameters.and_then(|p| p.named_curve());
            match curve {
                Some(oid) if oid == SECP384R1 => {}
                Some(oid) => return Err(KeyError::UnsupportedCurve(curve_name(&oid))),
                None => return Err(malformed("SEC1", "the key does not name its curve")),
            }
            let key = p384::SecretKey::from_sec1_der(der).map_err(|e| malformed("SEC1", e))?;
            Ok(PrivateKey::P384(Box::new(key)))
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(KeyError::NotAPrivateKey("public key".into())),
        "CERTIFICATE" => Err(KeyError::NotAPrivateKey("certificate".into())),
        "OPENSSH PRIVATE KEY" => Err(KeyError::UnsupportedKeyType(
            "an OpenSSH private key (convert it to PKCS#8 with ssh-keygen -p -m PKCS8)".into(),
        )),
        other => Err(KeyError::NotAPrivateKey(format!(
            "PEM block labelled {other:?}"
        ))),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<PrivateKey, KeyError> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| malformed("PKCS#8", e))?;
    let oid = info.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        let key = RsaPrivateKey::from_pkcs8_der(der).map_err(|e| malformed("PKCS#8 RSA", e))?;
        checked_rsa(key)
    } else if oid == EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|e| malformed("PKCS#8 EC", e))?;
        if curve != SECP384R1 {
            return Err(KeyError::UnsupportedCurve(curve_name(&curve)));
        }
        let key = p384::SecretKey::from_pkcs8_der(der).map_err(|e| malformed("PKCS#8 EC", e))?;
        Ok(PrivateKey::P384(Box::new(key)))
    } else if oid == ED25519 {
        Err(KeyError::UnsupportedKeyType("an Ed25519 key".into()))
    } else if oid == RSASSA_PSS {
        Err(KeyError::UnsupportedKeyType(
            "an RSASSA-PSS-only key (RS384 needs a plain rsaEncryption key)".into(),
        ))
    } else {
        Err(KeyError::UnsupportedKeyType(format!(
            "a key with algorithm OID {oid}"
        )))
    }
}

fn checked_rsa(key: RsaPrivateKey) -> Result<PrivateKey, KeyError> {
    let bits = key.n().bit_width() as usize;
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLarge(bits));
    }
    Ok(PrivateKey::Rsa(Box::new(key)))
}

/// The members of a private JWK that matter here; others are ignored.
#[derive(Deserialize)]
struct PrivateJwk {
    kty: Option<String>,
    crv: Option<String>,
    d: Option<String>,
    n: Option<String>,
    e: Option<String>,
    p: Option<String>,
    q: Option<String>,
    x: Option<String>,
    y: Option<String>,
    keys: Option<Vec<serde_json::Value>>,
}

fn parse_jwk(text: &str) -> Result<PrivateKey, KeyError> {
    let mut jwk: PrivateJwk = serde_json::from_str(text).map_err(|e| malformed("JWK", e))?;
    // A JWK Set holding exactly one key is accepted as that key.
    if let Some(keys) = jwk.keys.take() {
        let [only] = keys.as_slice() else {
            return Err(malformed(
                "JWK",
                format!(
                    "a JWK Set must hold exactly one key here, not {}",
                    keys.len()
                ),
            ));
        };
        jwk = serde_json::from_value(only.clone()).map_err(|e| malformed("JWK", e))?;
    }
    let field = |name: &'static str, value: &Option<String>| -> Result<Vec<u8>, KeyError> {
        let value = value
            .as_deref()
            .ok_or_else(|| malformed("JWK", format!("member {name:?} is missing")))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| malformed("JWK", format!("member {name:?} is not base64url")))
    };
    if jwk.d.is_none() {
        return Err(KeyError::NotAPrivateKey("public JWK (no \"d\")".into()));
    }
    match jwk.kty.as_deref() {
        Some("RSA") => {
            let uint = |name, value: &Option<String>| {
                field(name, value).map(|bytes| BoxedUint::from_be_slice_vartime(&bytes))
            };
            let key = RsaPrivateKey::from_components(
                uint("n", &jwk.n)?,
                uint("e", &jwk.e)?,
                uint("d", &jwk.d)?,
                vec![uint("p", &jwk.p)?, uint("q", &jwk.q)?],
            )
            .map_err(|e| malformed("JWK RSA", e))?;
            checked_rsa(key)
        }
        Some("EC") => {
            match jwk.crv.as_deref() {
                Some("P-384") => {}
                Some(other) => return Err(KeyError::UnsupportedCurve(other.to_string())),
                None => return Err(malformed("JWK", "member \"crv\" is missing")),
            }
            let key = p384::SecretKey::from_slice(&field("d", &jwk.d)?)
                .map_err(|_| malformed("JWK EC", "\"d\" is not a valid P-384 scalar"))?;
            // A JWK whose public members belong to another key is a mistake
            // that would only surface as invalid_client at the EHR.
            let point = key.public_key().to_sec1_point(false);
            let expected = point.as_bytes();
            if jwk.x.is_some() && field("x", &jwk.x)? != expected[1..49] {
                return Err(malformed("JWK EC", "\"x\" does not belong to \"d\""));
            }
            if jwk.y.is_some() && field("y", &jwk.y)? != expected[49..97] {
                return Err(malformed("JWK EC", "\"y\" does not belong to \"d\""));
            }
            Ok(PrivateKey::P384(Box::new(key)))
        }
        Some(other) => Err(KeyError::UnsupportedKeyType(format!(
            "a JWK of kty {other:?}"
        ))),
        None => Err(malformed("JWK", "member \"kty\" is missing")),
    }
}
