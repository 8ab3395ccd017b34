//! Private keys for signing client assertions: generation, parsing of the
//! formats people actually have (PKCS#8, PKCS#1 and SEC1 PEM, private JWKs),
//! PKCS#8 output, and the public JWK Set to register with the EHR.

mod jwk;
mod parse;
mod public;
mod signer;
mod signing;

use std::fmt;

use p384::elliptic_curve::Generate;
use p384::elliptic_curve::sec1::ToSec1Point;
use pkcs8::EncodePrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

pub use jwk::{JwkSet, PublicJwk, PublicParams};
pub use public::read_public_key;
pub(crate) use signer::Signer;
pub use signing::SigningKey;

use super::SigningAlgorithm;

/// RSA moduli below this are refused: NIST and the SMART specification ask
/// for at least 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Larger keys are refused as a guard against absurd inputs.
pub const MAX_RSA_BITS: usize = 8192;
/// The sizes `generate` accepts.
pub const RSA_GENERATE_BITS: [usize; 3] = [2048, 3072, 4096];
pub const DEFAULT_RSA_BITS: usize = 3072;

/// Why a key could not be generated, read or used. Messages describe the key
/// (type, size, curve), never its material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the key is neither PEM nor a JSON Web Key: expected a PEM block (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY) or a private JWK"
    )]
    UnrecognisedFormat,
    #[error(
        "the key material is {0} bytes, more than the 16 KiB any supported key needs: provide only the private key"
    )]
    TooLarge(usize),
    #[error("the PEM block is a {0}, not a private key: provide the private key")]
    NotAPrivateKey(String),
    #[error(
        "the private key is encrypted; provide it unencrypted (keep it in a Kubernetes Secret instead)"
    )]
    Encrypted,
    #[error("the {format} key could not be decoded: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("the key is {0}; only RSA (for RS384) and EC P-384 (for ES384) keys are supported")]
    UnsupportedKeyType(String),
    #[error("the EC key is on {0}; ES384 needs a P-384 (secp384r1) key")]
    UnsupportedCurve(String),
    #[error(
        "the RSA key has {0} bits; at least {MIN_RSA_BITS} are required (generate a 3072-bit key)"
    )]
    RsaTooSmall(usize),
    #[error("the RSA key has {0} bits; at most {MAX_RSA_BITS} are supported")]
    RsaTooLarge(usize),
    #[error("RSA keys can be generated with 2048, 3072 or 4096 bits, not {0}")]
    UnsupportedRsaSize(usize),
    #[error("{algorithm} needs {needed}, but the key is {actual}")]
    AlgorithmMismatch {
        algorithm: SigningAlgorithm,
        needed: &'static str,
        actual: String,
    },
    #[error("the private JWK's alg {jwk_alg:?} does not match the algorithm {algorithm}")]
    JwkAlgorithmMismatch {
        jwk_alg: String,
        algorithm: SigningAlgorithm,
    },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("the key could not be encoded as {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

/// A private key of a type SMART clients sign with.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<rsa::PrivateKey>),
    P384(Box<p384::SecretKey>),
}

impl PrivateKey {
    /// A new key for `algorithm`; `rsa_bits` is used for RS384 only.
    ///
    /// RSA generation takes from tens of milliseconds to seconds: call this
    /// from a blocking thread, never on an async worker.
    pub fn generate(algorithm: SigningAlgorithm, rsa_bits: usize) -> Result<Self, KeyError> {
        let mut rng = rand::rng();
        match algorithm {
            SigningAlgorithm::ES384 => Ok(PrivateKey::P384(Box::new(
                p384::SecretKey::generate_from_rng(&mut rng),
            ))),
            SigningAlgorithm::RS384 => {
                if !RSA_GENERATE_BITS.contains(&rsa_bits) {
                    return Err(KeyError::UnsupportedRsaSize(rsa_bits));
                }
                let key = rsa::PrivateKey::new(&mut rng, rsa_bits)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                Ok(PrivateKey::Rsa(Box::new(key)))
            }
        }
    }

    /// Reads a PEM (PKCS#8, PKCS#1 or SEC1) or a private JWK, whichever
    /// `text` is, and checks that the key is usable.
    pub fn parse(text: &[u8]) -> Result<Self, KeyError> {
        parse::parse_private_key(text)
    }

    /// A short human description: `RSA-3072` or `EC P-384`.
    pub fn describe(&self) -> String {
        match self {
            PrivateKey::Rsa(key) => format!("RSA-{}", key.size() * 8),
            PrivateKey::P384(_) => "EC P-384".to_string(),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self {
            PrivateKey::Rsa(_) => SigningAlgorithm::RS384,
            PrivateKey::P384(_) => SigningAlgorithm::ES384,
        }
    }

    pub fn public_params(&self) -> PublicParams {
        match self {
            PrivateKey::Rsa(key) => PublicParams::rsa(&key.n_bytes(), &key.e_bytes()),
            PrivateKey::P384(key) => {
                let point = key.public_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                // Uncompressed SEC1: 0x04 || x (48 bytes) || y (48 bytes).
                PublicParams::p384(&bytes[1..49], &bytes[49..97])
            }
        }
    }

    /// RFC 7638 thumbprint of the public key: the default `kid`.
    pub fn thumbprint(&self) -> String {
        self.public_params().thumbprint()
    }

    /// PKCS#8 PEM, the form the operator stores generated keys in.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let encoded = match self {
            PrivateKey::Rsa(key) => key.to_pkcs8_pem(pkcs8::LineEnding::LF),
            PrivateKey::P384(key) => key.to_pkcs8_pem(pkcs8::LineEnding::LF),
        };
        encoded
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Encode {
                format: "PKCS#8 PEM",
                reason: e.to_string(),
            })
    }

    /// Binds the key to an algorithm and a `kid`, ready to sign. `algorithm`
    /// defaults to the key's own; `kid` to the RFC 7638 thumbprint.
    pub fn into_signing_key(
        self,
        algorithm: Option<SigningAlgorithm>,
        kid: Option<String>,
    ) -> Result<SigningKey, KeyError> {
        let algorithm = algorithm.unwrap_or_else(|| self.algorithm());
        if algorithm != self.algorithm() {
            return Err(KeyError::AlgorithmMismatch {
                algorithm,
                needed: match algorithm {
                    SigningAlgorithm::RS384 => "an RSA key",
                    SigningAlgorithm::ES384 => "an EC P-384 key",
                },
                actual: format!("{} key", self.describe()),
            });
        }
        let signer = match &self {
            PrivateKey::Rsa(key) => {
                let der = key.to_pkcs1_der().map_err(|e| KeyError::Encode {
                    format: "PKCS#1 DER",
                    reason: e.to_string(),
                })?;
                Signer::rs384(der.as_bytes())?
            }
            PrivateKey::P384(key) => {
                let der = key.to_pkcs8_der().map_err(|e| KeyError::Encode {
                    format: "PKCS#8 DER",
                    reason: e.to_string(),
                })?;
                Signer::es384(der.as_bytes())?
            }
        };
        // The public half is derived once here (for P-384 a scalar
        // multiplication, the costliest step of binding a key).
        let public = self.public_params();
        let kid = kid.unwrap_or_else(|| public.thumbprint());
        Ok(SigningKey::held(self, signer, algorithm, kid, public))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({}, thumbprint {})",
            self.describe(),
            self.thumbprint()
        )
    }
}

#[cfg(test)]
mod tests;
