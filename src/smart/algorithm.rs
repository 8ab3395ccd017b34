//! The JWS algorithms SMART Backend Services clients sign with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The client-assertion signing algorithms the SMART specification requires
/// servers to support, and the only ones this client produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-384 (an RSA key of at least 2048 bits).
    RS384,
    /// ECDSA on P-384 with SHA-384.
    ES384,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 2] = [SigningAlgorithm::RS384, SigningAlgorithm::ES384];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS384 => "RS384",
            SigningAlgorithm::ES384 => "ES384",
        }
    }

    /// The algorithm as `jsonwebtoken` names it.
    pub(crate) fn jws(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            SigningAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given was not RS384 or ES384.
#[derive(Debug, thiserror::Error)]
#[error("unsupported signing algorithm {0:?}: use RS384 or ES384")]
pub struct UnsupportedAlgorithm(pub String);

impl FromStr for SigningAlgorithm {
    type Err = UnsupportedAlgorithm;

    /// Exact JWA names only: `rs384` is not a JWA algorithm name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS384" => Ok(SigningAlgorithm::RS384),
            "ES384" => Ok(SigningAlgorithm::ES384),
            other => Err(UnsupportedAlgorithm(other.to_string())),
        }
    }
}
