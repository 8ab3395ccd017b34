//! Public keys held elsewhere: a key manager (Vault or OpenBao Transit, a
//! cloud KMS) hands out only the public half, as a SubjectPublicKeyInfo
//! (PEM or DER). This reads it into the JWK members to publish, with the
//! same rules as a private key: RSA of 2048 to 8192 bits, EC on P-384.

use p384::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

use super::{KeyError, MAX_RSA_BITS, MIN_RSA_BITS, PublicParams};
use crate::smart::SigningAlgorithm;

/// A SubjectPublicKeyInfo is a few hundred bytes; more is not a key.
const MAX_PUBLIC_KEY_BYTES: usize = 8 * 1024;

/// The algorithm a public key signs with and its JWK members, from a PEM
/// `PUBLIC KEY` block or its DER.
pub fn read_public_key(encoded: &[u8]) -> Result<(SigningAlgorithm, PublicParams), KeyError> {
    if encoded.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(KeyError::TooLarge(encoded.len()));
    }
    let pem = std::str::from_utf8(encoded)
        .ok()
        .filter(|text| text.contains("-----BEGIN"));
    let p384 = match pem {
        Some(text) => p384::PublicKey::from_public_key_pem(text),
        None => p384::PublicKey::from_public_key_der(encoded),
    };
    if let Ok(key) = p384 {
        use p384::elliptic_curve::sec1::ToSec1Point;
        let point = key.to_sec1_point(false);
        let bytes = point.as_bytes();
        return Ok((
            SigningAlgorithm::ES384,
            PublicParams::p384(&bytes[1..49], &bytes[49..97]),
        ));
    }
    let rsa = match pem {
        Some(text) => rsa::PublicKey::from_public_key_pem(text),
        None => rsa::PublicKey::from_public_key_der(encoded),
    };
    match rsa {
        Ok(key) => {
            let bits = key.n().bit_width() as usize;
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooSmall(bits));
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError::RsaTooLarge(bits));
            }
            Ok((
                SigningAlgorithm::RS384,
                PublicParams::rsa(&key.n_bytes(), &key.e_bytes()),
            ))
        }
        Err(_) => Err(KeyError::UnsupportedKeyType(
            "not an RSA or EC P-384 public key (SubjectPublicKeyInfo)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use pkcs8::EncodePublicKey;

    use super::*;
    use crate::smart::PrivateKey;

    #[test]
    fn both_key_types_read_as_their_private_keys_publish_them() {
        for algorithm in [SigningAlgorithm::ES384, SigningAlgorithm::RS384] {
            let key = PrivateKey::generate(algorithm, 2048).unwrap();
            let pem = match &key {
                PrivateKey::P384(secret) => secret
                    .public_key()
                    .to_public_key_pem(pkcs8::LineEnding::LF)
                    .unwrap(),
                PrivateKey::Rsa(private) => private
                    .as_ref()
                    .to_public_key()
                    .to_public_key_pem(pkcs8::LineEnding::LF)
                    .unwrap(),
            };
            let (read_algorithm, params) = read_public_key(pem.as_bytes()).unwrap();
            assert_eq!(read_algorithm, algorithm);
            assert_eq!(params, key.public_params());
        }
    }

    #[test]
    fn other_curves_small_keys_and_noise_are_refused() {
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyX/4QwEuW4YvkO6AI6OqKFUi6Yj1\nV0/yPyP24JgDSgGNKUQwKyLZG6RRvCVQMBEJAWmY11IYjD131A5IxbXeTg==\n-----END PUBLIC KEY-----\n";
        let rsa_1024 = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDML1uN7wL0oCzB3LpQ9jsMtakU\nAdHFXXw68bvAhwo9mD39wDJX8Oc5nBCQlGVnvnxI0BIhVl2g+cvnZKVq0Lo+v4sF\njMzxv8Ku2ZkP+vcglMToNFm7d1lIuYQFu9S+LYmpXXdYlVc2D2PQfKPR295j4PCS\nQrb6YN7eo4JREiUD4QIDAQAB\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            read_public_key(rsa_1024.as_bytes()),
            Err(KeyError::RsaTooSmall(1024))
        ));
        assert!(matches!(
            read_public_key(p256.as_bytes()),
            Err(KeyError::UnsupportedKeyType(_))
        ));
        assert!(matches!(
            read_public_key(b"not a key"),
            Err(KeyError::UnsupportedKeyType(_))
        ));
        assert!(matches!(
            read_public_key(&[b'a'; 9000]),
            Err(KeyError::TooLarge(9000))
        ));
    }
}
