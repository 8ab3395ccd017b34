//! JWT client assertions (RFC 7523, SMART "Client Authentication:
//! Asymmetric"): the signed proof of identity sent with each token request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::{SecretString, SigningAlgorithm, SigningKey};

/// SMART caps an assertion's lifetime at five minutes.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// Four minutes leaves room for clock skew below the cap.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(240);
/// `iat` is set this far before the signing time, so that a server whose
/// clock is a little behind does not see an assertion from the future.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error(
        "assertion lifetime {0:?} (exp - iat, backdating included) exceeds the 300 s that SMART allows"
    )]
    LifetimeTooLong(Duration),
    #[error("the clock is before 1970")]
    Clock,
    #[error("signing the client assertion with {alg} failed: {reason}")]
    Sign { alg: &'static str, reason: String },
}

/// What goes into one assertion besides the key.
#[derive(Clone, Debug)]
pub struct AssertionParams<'a> {
    pub client_id: &'a str,
    /// The token endpoint URL unless the server asks for another audience.
    pub audience: &'a str,
    pub jku: Option<&'a str>,
    pub issued_at: SystemTime,
    /// `exp` is `issued_at + lifetime`.
    pub lifetime: Duration,
    /// `iat` is `issued_at - backdate`; `exp - iat` stays at most 300 s.
    pub backdate: Duration,
}

impl<'a> AssertionParams<'a> {
    pub fn new(client_id: &'a str, audience: &'a str) -> Self {
        Self {
            client_id,
            audience,
            jku: None,
            issued_at: SystemTime::now(),
            lifetime: DEFAULT_LIFETIME,
            backdate: DEFAULT_BACKDATE,
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
}

/// A signed assertion. The JWT is a bearer credential for five minutes, so
/// it is held as a [`SecretString`]; `jti` is safe to log.
#[derive(Clone, Debug)]
pub struct ClientAssertion {
    pub jwt: SecretString,
    pub jti: String,
    pub expires_at: SystemTime,
}

/// An assertion before its signature: the JWS signing input,
/// base64url(header) "." base64url(claims), to be signed by a key held here
/// or by a key manager.
pub struct Unsigned {
    jwt: String,
    jti: String,
    expires_at: SystemTime,
}

impl Unsigned {
    /// The bytes the JWS signature covers.
    pub fn signing_input(&self) -> &[u8] {
        self.jwt.as_bytes()
    }

    /// The compact JWS: the input, ".", and the signature in base64url. The
    /// signature is JOSE's (r‖s for ECDSA).
    pub fn finish(mut self, signature: &[u8]) -> ClientAssertion {
        self.jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut self.jwt);
        ClientAssertion {
            jwt: SecretString::new(self.jwt),
            jti: self.jti,
            expires_at: self.expires_at,
        }
    }
}

/// The header and claims of a new assertion with a fresh UUID v4 `jti`;
/// prepare one per token request, retries included, because servers reject
/// a replayed `jti`.
pub fn prepare(
    algorithm: SigningAlgorithm,
    kid: &str,
    params: &AssertionParams<'_>,
) -> Result<Unsigned, AssertionError> {
    let span = params.lifetime.saturating_add(params.backdate);
    if span > MAX_LIFETIME {
        return Err(AssertionError::LifetimeTooLong(span));
    }
    let now = params
        .issued_at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AssertionError::Clock)?
        .as_secs();
    let iat = now.saturating_sub(params.backdate.as_secs());
    let exp = now + params.lifetime.as_secs();
    let jti = uuid::Uuid::new_v4().to_string();
    let claims = Claims {
        iss: params.client_id,
        sub: params.client_id,
        aud: params.audience,
        iat,
        exp,
        jti: &jti,
    };
    let mut header = jsonwebtoken::Header::new(algorithm.jws());
    header.typ = Some("JWT".to_string());
    header.kid = Some(kid.to_string());
    header.jku = params.jku.map(str::to_string);
    let failed = |reason: String| AssertionError::Sign {
        alg: algorithm.as_str(),
        reason,
    };
    let header = serde_json::to_vec(&header).map_err(|e| failed(e.to_string()))?;
    let claims = serde_json::to_vec(&claims).map_err(|e| failed(e.to_string()))?;
    let mut jwt = String::with_capacity(1024);
    URL_SAFE_NO_PAD.encode_string(header, &mut jwt);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
    Ok(Unsigned {
        jwt,
        jti,
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
    })
}

/// Signs a new assertion with a key held in this process (parsed once, see
/// keys::Signer); a key manager's key signs with
/// [`SigningKey::sign_assertion`](crate::smart::SigningKey::sign_assertion).
pub fn sign(
    key: &SigningKey,
    params: &AssertionParams<'_>,
) -> Result<ClientAssertion, AssertionError> {
    let failed = |reason: String| AssertionError::Sign {
        alg: key.algorithm().as_str(),
        reason,
    };
    let signer = key.held_signer().ok_or_else(|| {
        failed("the key is held by a key manager: sign with SigningKey::sign_assertion".into())
    })?;
    let unsigned = prepare(key.algorithm(), key.kid(), params)?;
    let signature = signer.sign(unsigned.signing_input()).map_err(failed)?;
    Ok(unsigned.finish(&signature))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p384::ecdsa::signature::Verifier;
    use serde_json::Value;

    use super::*;
    use crate::smart::PrivateKey;

    fn split(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).unwrap();
        (
            serde_json::from_slice(&decode(parts[0])).unwrap(),
            serde_json::from_slice(&decode(parts[1])).unwrap(),
            decode(parts[2]),
            format!("{}.{}", parts[0], parts[1]),
        )
    }

    fn params() -> AssertionParams<'static> {
        let mut p = AssertionParams::new("client-1", "https://ehr.example/token");
        p.jku = Some("https://ops.example/jwks/ns/c");
        p
    }

    #[test]
    fn es384_assertion_has_the_smart_header_and_claims_and_a_jose_signature() {
        let key = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
        let PrivateKey::P384(secret) = key.clone() else {
            unreachable!()
        };
        let key = key.into_signing_key(None, Some("kid-1".into())).unwrap();
        let assertion = sign(&key, &params()).unwrap();
        let (header, claims, signature, signed) = split(assertion.jwt.expose());
        assert_eq!(header["alg"], "ES384");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "kid-1");
        assert_eq!(header["jku"], "https://ops.example/jwks/ns/c");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://ehr.example/token");
        assert_eq!(claims["jti"], assertion.jti.as_str());
        let iat = claims["iat"].as_u64().unwrap();
        // Backdated by 5 s, expiring 240 s after signing.
        assert_eq!(claims["exp"].as_u64().unwrap() - iat, 245);
        // JOSE form is r || s, 96 bytes; DER would be 102-104 and start 0x30.
        assert_eq!(signature.len(), 96);
        let verifying = p384::ecdsa::VerifyingKey::from(secret.public_key());
        let sig = p384::ecdsa::Signature::from_slice(&signature).unwrap();
        verifying.verify(signed.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn rs384_assertion_verifies_with_the_rsa_crate() {
        let key = PrivateKey::parse(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/keys/rsa2048-pkcs1.pem"
            ))
            .unwrap(),
        )
        .unwrap();
        let PrivateKey::Rsa(rsa_key) = key.clone() else {
            unreachable!()
        };
        let key = key.into_signing_key(None, None).unwrap();
        let assertion = sign(&key, &params()).unwrap();
        let (header, _, signature, signed) = split(assertion.jwt.expose());
        assert_eq!(header["alg"], "RS384");
        let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(rsa_key.to_public_key());
        let sig = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        verifying.verify(signed.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn one_shot_signatures_verify_like_the_fast_ones() {
        let rsa_pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/rsa2048-pkcs1.pem"
        ))
        .unwrap();
        let rsa_key = PrivateKey::parse(&rsa_pem).unwrap();
        let PrivateKey::Rsa(rsa_private) = rsa_key.clone() else {
            unreachable!()
        };
        let key = rsa_key
            .into_signing_key(None, None)
            .unwrap()
            .for_one_signature();
        let (_, _, signature, signed) = split(sign(&key, &params()).unwrap().jwt.expose());
        let verifying =
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(rsa_private.to_public_key());
        let sig = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        verifying.verify(signed.as_bytes(), &sig).unwrap();

        let ec_key = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
        let PrivateKey::P384(secret) = ec_key.clone() else {
            unreachable!()
        };
        let key = ec_key
            .into_signing_key(None, None)
            .unwrap()
            .for_one_signature();
        let (header, _, signature, signed) = split(sign(&key, &params()).unwrap().jwt.expose());
        assert_eq!(header["alg"], "ES384");
        assert_eq!(signature.len(), 96, "JOSE r||s, not DER");
        let verifying = p384::ecdsa::VerifyingKey::from(secret.public_key());
        let sig = p384::ecdsa::Signature::from_slice(&signature).unwrap();
        verifying.verify(signed.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn every_assertion_gets_a_new_jti() {
        let key = PrivateKey::generate(SigningAlgorithm::ES384, 0)
            .unwrap()
            .into_signing_key(None, None)
            .unwrap();
        let a = sign(&key, &params()).unwrap();
        let b = sign(&key, &params()).unwrap();
        assert_ne!(a.jti, b.jti);
        assert_eq!(uuid::Uuid::parse_str(&a.jti).unwrap().get_version_num(), 4);
    }

    #[test]
    fn lifetimes_over_five_minutes_are_refused() {
        let key = PrivateKey::generate(SigningAlgorithm::ES384, 0)
            .unwrap()
            .into_signing_key(None, None)
            .unwrap();
        let mut p = params();
        p.lifetime = Duration::from_secs(301);
        assert!(matches!(
            sign(&key, &p),
            Err(AssertionError::LifetimeTooLong(_))
        ));
        // Backdating counts: exp - iat may not pass 300 s either.
        p.lifetime = Duration::from_secs(296);
        assert!(matches!(
            sign(&key, &p),
            Err(AssertionError::LifetimeTooLong(_))
        ));
        p.lifetime = Duration::from_secs(295);
        assert!(sign(&key, &p).is_ok());
    }

    #[test]
    fn debug_of_an_assertion_hides_the_jwt() {
        let key = PrivateKey::generate(SigningAlgorithm::ES384, 0)
            .unwrap()
            .into_signing_key(None, None)
            .unwrap();
        let assertion = sign(&key, &params()).unwrap();
        let shown = format!("{assertion:?}");
        assert!(!shown.contains(assertion.jwt.expose()), "{shown}");
        assert!(shown.contains(&assertion.jti));
    }
}
