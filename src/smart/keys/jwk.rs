//! Public JWKs (RFC 7517/7518) and the RFC 7638 thumbprint used as the
//! default `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One public signing key as a JWK: `kty`, `kid`, `alg`, `use: sig` and the
/// public members of its key type, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub y: Option<String>,
}

/// A JWK Set, the document registered with an EHR (inline or at `jwks_uri`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<PublicJwk>,
}

impl JwkSet {
    /// Compact JSON, as served and stored.
    pub fn to_json(&self) -> String {
        // Serialising plain strings cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"keys":[]}"#))
    }
}

/// The public members that identify a key, base64url without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicParams {
    Rsa {
        n: String,
        e: String,
    },
    Ec {
        crv: &'static str,
        x: String,
        y: String,
    },
}

impl PublicParams {
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        PublicParams::Rsa {
            n: b64(n),
            e: b64(e),
        }
    }

    pub fn p384(x: &[u8], y: &[u8]) -> Self {
        PublicParams::Ec {
            crv: "P-384",
            x: b64(x),
            y: b64(y),
        }
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order,
    /// with no whitespace, base64url-encoded.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicParams::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            PublicParams::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
        };
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    pub fn to_jwk(&self, alg: &str, kid: &str) -> PublicJwk {
        let mut jwk = PublicJwk {
            kty: String::new(),
            kid: kid.to_string(),
            alg: alg.to_string(),
            use_: "sig".to_string(),
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
        };
        match self {
            PublicParams::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                jwk.n = Some(n.clone());
                jwk.e = Some(e.clone());
            }
            PublicParams::Ec { crv, x, y } => {
                jwk.kty = "EC".into();
                jwk.crv = Some((*crv).to_string());
                jwk.x = Some(x.clone());
                jwk.y = Some(y.clone());
            }
        }
        jwk
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of RFC 7638 §3.1 and the thumbprint it states.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let params = PublicParams::Rsa {
            n: n.to_string(),
            e: "AQAB".to_string(),
        };
        assert_eq!(
            params.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn public_jwk_has_only_public_members() {
        let jwk = PublicParams::p384(&[1; 48], &[2; 48]).to_jwk("ES384", "k1");
        let json = serde_json::to_value(&jwk).unwrap();
        let mut fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(fields, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(json["use"], "sig");
    }
}
