//! Where an assertion's signature comes from: a private key held in this
//! process (from a Secret or a file), or a key that never leaves a key
//! manager (Vault or OpenBao Transit). Every signer has an algorithm, a
//! `kid` and a public JWK to publish; a remote one signs over the network,
//! so signing is async and its failures say whether they may pass.

pub mod transit;

use std::time::SystemTime;

use super::assertion::{self, AssertionError, AssertionParams, ClientAssertion};
use super::keys::{KeyError, PublicJwk, SigningKey};
use super::{HttpError, SigningAlgorithm};

pub use transit::{Transit, TransitAuth, TransitConfig, TransitKey};

/// A key that signs client assertions.
#[derive(Clone, Debug)]
pub enum AssertionSigner {
    /// A private key held in memory.
    Local(SigningKey),
    /// One version of a Vault or OpenBao Transit key.
    Transit(TransitKey),
}

impl AssertionSigner {
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self {
            AssertionSigner::Local(key) => key.algorithm(),
            AssertionSigner::Transit(key) => key.algorithm(),
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            AssertionSigner::Local(key) => key.kid(),
            AssertionSigner::Transit(key) => key.kid(),
        }
    }

    pub fn public_jwk(&self) -> PublicJwk {
        match self {
            AssertionSigner::Local(key) => key.public_jwk(),
            AssertionSigner::Transit(key) => key.public_jwk(),
        }
    }

    /// A new assertion (fresh `jti`), signed here or by the key manager.
    pub async fn sign(&self, params: &AssertionParams<'_>) -> Result<ClientAssertion, SignerError> {
        match self {
            AssertionSigner::Local(key) => Ok(assertion::sign(key, params)?),
            AssertionSigner::Transit(key) => {
                let unsigned = assertion::prepare(key.algorithm(), key.kid(), params)?;
                let signature = key.sign(unsigned.signing_input()).await?;
                Ok(unsigned.finish(&signature))
            }
        }
    }
}

/// Why a key manager did not sign or did not show its key. Each names what
/// to do; none carries a credential, an assertion or key material.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error(
        "the key manager could not be reached: {0}; the current token is kept and signing is retried"
    )]
    Unreachable(#[source] HttpError),
    #[error("the key manager cannot be called: {0}")]
    Address(#[source] HttpError),
    #[error("{0}")]
    InvalidName(String),
    #[error(
        "the key manager at {url} is unavailable (HTTP {status}{detail}): it may be sealed, in standby or overloaded; the current token is kept and signing is retried"
    )]
    Unavailable {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the key manager refused to {action} (permission denied): {grant}")]
    PermissionDenied { action: String, grant: String },
    #[error("the key manager has no key {key} at {url}; {remedy}")]
    KeyNotFound {
        key: String,
        url: String,
        remedy: String,
    },
    #[error("the key {key} is of type {kind}, which cannot sign {wanted}; {remedy}")]
    KeyTypeUnusable {
        key: String,
        kind: String,
        wanted: String,
        remedy: String,
    },
    #[error("the key manager refused to {action}: HTTP {status}{detail}")]
    Refused {
        action: String,
        status: u16,
        detail: String,
    },
    #[error("the key manager's answer to {action} could not be read: {reason}")]
    Malformed { action: String, reason: String },
    #[error("the key manager's credential has expired at {0:?} and could not be renewed")]
    CredentialExpired(SystemTime),
    #[error(transparent)]
    Assertion(#[from] AssertionError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl SignerError {
    /// A failed HTTP exchange: network trouble may pass; a URL that breaks
    /// the rules (plain http, a refused destination, a bad CA bundle) will
    /// not.
    pub fn http(e: HttpError) -> Self {
        if e.is_transient() {
            SignerError::Unreachable(e)
        } else {
            SignerError::Address(e)
        }
    }

    /// Trouble that may pass on its own: retried with backoff, the current
    /// token kept. Everything else needs a person.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SignerError::Unreachable(_) | SignerError::Unavailable { .. }
        )
    }
}
