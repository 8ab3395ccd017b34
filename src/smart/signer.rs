//! Signing with a key that never leaves a key manager (Vault or OpenBao
//! Transit, AWS KMS), beside keys held in this process: a [`SigningKey`] of any
//! kind has an algorithm, a `kid` and a public JWK to publish, and signs an
//! assertion with [`SigningKey::sign_assertion`]. A remote signature is
//! made over the network, so signing is async and its failures say whether
//! they may pass.

pub mod kms;
pub mod session;
pub mod transit;

use std::sync::Arc;

use super::HttpError;
use super::SigningAlgorithm;
use super::assertion::{self, AssertionError, AssertionParams, ClientAssertion};
use super::keys::{KeyError, PublicParams, SigningKey};

pub use kms::{Kms, KmsSession, KmsSettings};
pub use session::{VaultLogin, VaultSession, VaultSettings};
pub use transit::{Transit, TransitConfig};

/// Where a key manager's key signs.
#[derive(Clone, Debug)]
enum Place {
    /// One version of a Transit key.
    Transit { transit: Arc<Transit>, version: u64 },
    /// A KMS key, by its id (an ARN from AWS), and as the user named it.
    Kms {
        kms: Arc<Kms>,
        key_id: String,
        named: String,
    },
}

/// A key a key manager holds: what it publishes and how it signs.
#[derive(Clone, Debug)]
pub struct RemoteKey {
    place: Place,
    algorithm: SigningAlgorithm,
    kid: String,
    public: PublicParams,
}

impl RemoteKey {
    fn new(place: Place, algorithm: SigningAlgorithm, kid: String, public: PublicParams) -> Self {
        RemoteKey {
            place,
            algorithm,
            kid,
            public,
        }
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public(&self) -> &PublicParams {
        &self.public
    }

    /// The JOSE signature of `input`, made by the key manager.
    pub async fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignerError> {
        match &self.place {
            Place::Transit { transit, version } => {
                transit.sign(*version, self.algorithm, input).await
            }
            Place::Kms { kms, key_id, named } => {
                kms.sign(key_id, named, self.algorithm, input).await
            }
        }
    }
}

impl SigningKey {
    /// A new assertion (fresh `jti`), signed here or by the key manager.
    /// A remote signature takes at most the HTTP client's request timeout.
    pub async fn sign_assertion(
        &self,
        params: &AssertionParams<'_>,
    ) -> Result<ClientAssertion, SignerError> {
        match self.remote_key() {
            None => Ok(assertion::sign(self, params)?),
            Some(key) => {
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
    Unreachable(String),
    #[error("the key manager cannot be called: {0}")]
    Address(#[source] HttpError),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    Credential(String),
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
            SignerError::Unreachable(e.to_string())
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
