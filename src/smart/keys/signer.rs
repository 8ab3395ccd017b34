//! Signatures with a key parsed once into aws-lc. jsonwebtoken parses the
//! key again for every signature; holding the parsed key signs an ES384
//! assertion in about 60 % of the time and an RS384-3072 one in about half
//! (BENCHMARKS.md, `sign_backend`).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA384, RsaKeyPair,
};

use super::KeyError;

/// A parsed private key that signs JWS input: RS384 (RSASSA-PKCS1-v1_5 with
/// SHA-384) or ES384 (ECDSA P-384 with SHA-384, r‖s as JOSE wants it).
#[derive(Clone)]
pub(crate) enum Signer {
    Rs384(Arc<RsaKeyPair>),
    Es384(Arc<EcdsaKeyPair>),
    /// RustCrypto, deterministic (RFC 6979 for ECDSA; PKCS#1 v1.5 needs no
    /// randomness): slower per signature, but it needs no process-wide
    /// random generator. aws-lc seeds its generator from CPU jitter on first
    /// use, about 25 ms, most of a one-shot `token` command's time.
    OneShot(Arc<super::PrivateKey>),
}

impl Signer {
    /// From an RSA private key in PKCS#1 DER.
    pub fn rs384(pkcs1_der: &[u8]) -> Result<Self, KeyError> {
        RsaKeyPair::from_der(pkcs1_der)
            .map(|key| Signer::Rs384(Arc::new(key)))
            .map_err(|e| KeyError::Encode {
                format: "an aws-lc RSA key",
                reason: e.to_string(),
            })
    }

    /// From a P-384 private key in PKCS#8 DER.
    pub fn es384(pkcs8_der: &[u8]) -> Result<Self, KeyError> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8_der)
            .map(|key| Signer::Es384(Arc::new(key)))
            .map_err(|e| KeyError::Encode {
                format: "an aws-lc P-384 key",
                reason: e.to_string(),
            })
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        if let Signer::OneShot(key) = self {
            return sign_portably(key, message);
        }
        let rng = SystemRandom::new();
        match self {
            Signer::Es384(key) => key
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|e| e.to_string()),
            Signer::Rs384(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA384, &rng, message, &mut signature)
                    .map_err(|e| e.to_string())?;
                Ok(signature)
            }
            Signer::OneShot(key) => sign_portably(key, message),
        }
    }
}

fn sign_portably(key: &super::PrivateKey, message: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::signature::Signer as _;
    match key {
        super::PrivateKey::P384(secret) => {
            let signing = p384::ecdsa::SigningKey::from(secret.as_ref());
            let signature: p384::ecdsa::Signature =
                signing.try_sign(message).map_err(|e| e.to_string())?;
            Ok(signature.to_bytes().to_vec())
        }
        super::PrivateKey::Rsa(private) => {
            let signing = rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(private.as_ref().clone());
            let signature = signing.try_sign(message).map_err(|e| e.to_string())?;
            Ok(rsa::signature::SignatureEncoding::to_vec(&signature))
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signer::Rs384(_) => "Signer(RS384)",
            Signer::Es384(_) => "Signer(ES384)",
            Signer::OneShot(_) => "Signer(one-shot)",
        })
    }
}
