//! A key bound to its algorithm and `kid`, ready to sign assertions: held
//! in this process, or held by a key manager that signs on request. Both
//! publish the same kind of public JWK; only where the signature is made
//! differs.

use std::fmt;
use std::sync::Arc;

use super::{JwkSet, PrivateKey, PublicJwk, PublicParams, Signer};
use crate::smart::SigningAlgorithm;
use crate::smart::signer::RemoteKey;

/// Where the private half is.
#[derive(Clone)]
enum Material {
    /// In memory, parsed once for signing.
    Held { key: PrivateKey, signer: Signer },
    /// In a key manager (one version of a Transit key, or a KMS key).
    Remote(RemoteKey),
}

/// A key bound to its algorithm and `kid`, ready to sign assertions.
#[derive(Clone)]
pub struct SigningKey {
    material: Material,
    algorithm: SigningAlgorithm,
    kid: String,
    public: PublicParams,
}

impl SigningKey {
    pub(super) fn held(
        key: PrivateKey,
        signer: Signer,
        algorithm: SigningAlgorithm,
        kid: String,
        public: PublicParams,
    ) -> Self {
        SigningKey {
            material: Material::Held { key, signer },
            algorithm,
            kid,
            public,
        }
    }

    /// A key manager's key: it signs there.
    pub fn remote(key: RemoteKey) -> Self {
        SigningKey {
            algorithm: key.algorithm(),
            kid: key.kid().to_string(),
            public: key.public().clone(),
            material: Material::Remote(key),
        }
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key, when this process holds it (never for a key
    /// manager's key).
    pub fn private_key(&self) -> Option<&PrivateKey> {
        match &self.material {
            Material::Held { key, .. } => Some(key),
            Material::Remote(_) => None,
        }
    }

    /// The signer of a key held here.
    pub(crate) fn held_signer(&self) -> Option<&Signer> {
        match &self.material {
            Material::Held { signer, .. } => Some(signer),
            Material::Remote(_) => None,
        }
    }

    /// The key manager's key, for a key that signs there.
    pub(crate) fn remote_key(&self) -> Option<&RemoteKey> {
        match &self.material {
            Material::Remote(key) => Some(key),
            Material::Held { .. } => None,
        }
    }

    pub fn public_jwk(&self) -> PublicJwk {
        self.public.to_jwk(self.algorithm.as_str(), &self.kid)
    }

    /// The same key, signing without aws-lc: for a process that signs one
    /// assertion and exits (the `token` command), where aws-lc's one-time
    /// random-generator seeding would cost more than the signature. A key
    /// manager's key is returned as it is.
    pub fn for_one_signature(mut self) -> Self {
        if let Material::Held { key, signer } = &mut self.material {
            *signer = Signer::OneShot(Arc::new(key.clone()));
        }
        self
    }

    /// The JWK Set to register with the EHR, holding this key alone.
    pub fn public_jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.public_jwk()],
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("SigningKey");
        out.field("algorithm", &self.algorithm)
            .field("kid", &self.kid);
        match &self.material {
            Material::Held { key, .. } => out.field("key", key),
            Material::Remote(key) => out.field("remote", key),
        };
        out.finish()
    }
}
