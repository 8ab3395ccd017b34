use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn private_jwk_json(key: &PrivateKey) -> String {
    use base64::Engine;
    use rsa::traits::PrivateKeyParts;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    match key {
        PrivateKey::Rsa(k) => {
            let primes = k.primes();
            serde_json::json!({
                "kty": "RSA",
                "n": b64(&k.n_bytes()),
                "e": b64(&k.e_bytes()),
                "d": b64(&k.d().to_be_bytes_trimmed_vartime()),
                "p": b64(&primes[0].to_be_bytes_trimmed_vartime()),
                "q": b64(&primes[1].to_be_bytes_trimmed_vartime()),
            })
            .to_string()
        }
        PrivateKey::P384(k) => {
            let PublicParams::Ec { x, y, .. } = key.public_params() else {
                unreachable!()
            };
            serde_json::json!({"kty": "EC", "crv": "P-384", "x": x, "y": y, "d": b64(&k.to_bytes())})
                .to_string()
        }
    }
}

#[test]
fn generated_p384_key_round_trips_through_pkcs8_pem() {
    let key = PrivateKey::generate(SigningAlgorithm::ES384, DEFAULT_RSA_BITS).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = PrivateKey::parse(pem.as_bytes()).unwrap();
    assert_eq!(again.thumbprint(), key.thumbprint());
    assert_eq!(again.algorithm(), SigningAlgorithm::ES384);
}

#[test]
fn generated_rsa_key_has_the_requested_size_and_round_trips() {
    let key = PrivateKey::generate(SigningAlgorithm::RS384, 2048).unwrap();
    assert_eq!(key.describe(), "RSA-2048");
    let again = PrivateKey::parse(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    assert_eq!(again.thumbprint(), key.thumbprint());
}

#[test]
fn rsa_generation_refuses_sizes_outside_the_allowed_set() {
    let err = PrivateKey::generate(SigningAlgorithm::RS384, 1024).unwrap_err();
    assert!(matches!(err, KeyError::UnsupportedRsaSize(1024)), "{err}");
}

#[test]
fn pkcs1_and_sec1_pem_are_read() {
    let rsa = PrivateKey::parse(&fixture("rsa2048-pkcs1.pem")).unwrap();
    assert_eq!(rsa.describe(), "RSA-2048");
    let sec1 = PrivateKey::parse(&fixture("p384-sec1.pem")).unwrap();
    let pkcs8 = PrivateKey::parse(&fixture("p384-pkcs8.pem")).unwrap();
    assert_eq!(sec1.thumbprint(), pkcs8.thumbprint());
}

#[test]
fn private_jwks_are_read_for_both_key_types() {
    for key in [
        PrivateKey::parse(&fixture("p384-pkcs8.pem")).unwrap(),
        PrivateKey::parse(&fixture("rsa2048-pkcs1.pem")).unwrap(),
    ] {
        let jwk = private_jwk_json(&key);
        let parsed = PrivateKey::parse(jwk.as_bytes()).unwrap();
        assert_eq!(parsed.thumbprint(), key.thumbprint());
        let set = format!(r#"{{"keys":[{jwk}]}}"#);
        assert_eq!(
            PrivateKey::parse(set.as_bytes()).unwrap().thumbprint(),
            key.thumbprint()
        );
    }
}

#[test]
fn public_jwk_is_refused_as_a_private_key() {
    let key = PrivateKey::parse(&fixture("p384-pkcs8.pem")).unwrap();
    let public = serde_json::to_string(&key.public_params().to_jwk("ES384", "k")).unwrap();
    let err = PrivateKey::parse(public.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("public JWK"), "{err}");
}

#[test]
fn p256_keys_are_refused_naming_the_curve() {
    for name in ["p256-pkcs8.pem", "p256-sec1.pem"] {
        let err = PrivateKey::parse(&fixture(name)).unwrap_err();
        assert!(
            matches!(err, KeyError::UnsupportedCurve(ref c) if c == "P-256"),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("P-384"), "{err}");
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    let err = PrivateKey::parse(&fixture("rsa1024-pkcs1.pem")).unwrap_err();
    assert!(matches!(err, KeyError::RsaTooSmall(1024)), "{err}");
}

#[test]
fn unsupported_and_non_private_inputs_say_what_they_are() {
    let cases = [
        ("ed25519.pem", "Ed25519"),
        ("rsa2048-encrypted.pem", "encrypted"),
        ("rsa2048-public.pem", "public key"),
    ];
    for (name, expected) in cases {
        let err = PrivateKey::parse(&fixture(name)).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn garbage_is_refused_with_a_format_error() {
    for garbage in [
        &b"hello"[..],
        b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        b"{\"kty\":\"EC\"",
        b"{\"kty\":\"EC\",\"crv\":\"P-384\",\"d\":\"AAAA\"}",
        b"\xff\xfe",
    ] {
        assert!(PrivateKey::parse(garbage).is_err());
    }
}

#[test]
fn an_rsa_key_offered_for_es384_is_refused() {
    let key = PrivateKey::parse(&fixture("rsa2048-pkcs1.pem")).unwrap();
    let err = key
        .into_signing_key(Some(SigningAlgorithm::ES384), None)
        .unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmMismatch { .. }), "{err}");
    assert!(err.to_string().contains("P-384"), "{err}");
}

#[test]
fn default_kid_is_the_thumbprint_and_jwks_is_public_only() {
    let key = PrivateKey::parse(&fixture("rsa2048-pkcs1.pem")).unwrap();
    let thumbprint = key.thumbprint();
    let signing = key.into_signing_key(None, None).unwrap();
    assert_eq!(signing.kid(), thumbprint);
    let jwks = serde_json::to_value(signing.public_jwks()).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS384");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("d").is_none() && jwk.get("p").is_none());
}

#[test]
fn debug_output_shows_a_fingerprint_not_key_material() {
    let key = PrivateKey::parse(&fixture("p384-pkcs8.pem")).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let signing = key
        .clone()
        .into_signing_key(None, Some("k1".into()))
        .unwrap();
    for shown in [format!("{key:?}"), format!("{signing:?}")] {
        assert!(shown.contains(&key.thumbprint()), "{shown}");
        assert!(!shown.contains(&body[..16]), "{shown}");
    }
}

#[test]
fn oversized_key_material_is_refused_before_parsing() {
    let pem = String::from_utf8(fixture("rsa2048-pkcs1.pem")).unwrap();
    let padded = format!("{pem}{}", "\n".repeat(parse::MAX_KEY_BYTES));
    let err = PrivateKey::parse(padded.as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::TooLarge(_)), "{err}");
    assert!(PrivateKey::parse(pem.as_bytes()).is_ok());
    // The largest supported key, as a private JWK, fits.
    let big = PrivateKey::generate(SigningAlgorithm::RS384, 4096).unwrap();
    assert!(private_jwk_json(&big).len() < parse::MAX_KEY_BYTES);
}
