//! Micro-benchmarks of the protocol core: assertion signing, key
//! generation, and parsing of discovery documents and token responses.
//! `make bench` runs them and writes the figures to BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use smart_backend_operator::smart::http::HttpResponse;
use smart_backend_operator::smart::{
    AssertionParams, PrivateKey, SigningAlgorithm, SmartConfiguration, assertion,
};

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign_assertion");
    for (name, alg, bits) in [
        ("ES384", SigningAlgorithm::ES384, 0),
        ("RS384-2048", SigningAlgorithm::RS384, 2048),
        ("RS384-3072", SigningAlgorithm::RS384, 3072),
    ] {
        let key = PrivateKey::generate(alg, bits)
            .unwrap()
            .into_signing_key(None, None)
            .unwrap();
        let params = AssertionParams::new("bench-client", "https://ehr.example.org/oauth2/token");
        group.bench_function(name, |b| {
            b.iter(|| assertion::sign(black_box(&key), black_box(&params)).unwrap())
        });
    }
    group.finish();
}

fn key_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate_key");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, alg, bits) in [
        ("P-384", SigningAlgorithm::ES384, 0),
        ("RSA-2048", SigningAlgorithm::RS384, 2048),
        ("RSA-3072", SigningAlgorithm::RS384, 3072),
        ("RSA-4096", SigningAlgorithm::RS384, 4096),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| PrivateKey::generate(alg, bits).unwrap())
        });
    }
    // What a new ES384 client costs before its first token: the scalar, the
    // public point and the thumbprint that becomes the kid.
    group.bench_function("P-384+public-key+kid", |b| {
        b.iter(|| {
            PrivateKey::generate(SigningAlgorithm::ES384, 0)
                .unwrap()
                .thumbprint()
        })
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let metadata = serde_json::json!({
        "issuer": "https://ehr.example.org",
        "token_endpoint": "https://ehr.example.org/oauth2/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "scopes_supported": ["system/*.rs", "system/*.read", "patient/*.rs", "openid", "fhirUser"],
        "capabilities": ["client-confidential-asymmetric", "launch-ehr", "sso-openid-connect"]
    })
    .to_string();
    c.bench_function("parse_discovery", |b| {
        b.iter(|| SmartConfiguration::parse(black_box(metadata.as_bytes())).unwrap())
    });
    let body = serde_json::json!({
        "access_token": "x".repeat(900), "token_type": "Bearer", "expires_in": 300, "scope": "system/Patient.rs system/Observation.rs"
    })
    .to_string()
    .into_bytes();
    let response = HttpResponse {
        status: 200,
        content_type: Some("application/json".into()),
        retry_after: None,
        location: None,
        date: None,
        body,
    };
    let now = SystemTime::now();
    c.bench_function("parse_token_response", |b| {
        b.iter(|| {
            smart_backend_operator::smart::token::parse_token_response(
                black_box(&response),
                now,
                now,
            )
            .unwrap()
        })
    });
}

/// The DER inside a PEM block.
fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The signature alone over one assertion's signing input, by backend:
/// jsonwebtoken with aws-lc (what `assertion::sign` uses; it parses the key
/// for every signature), aws-lc with a key parsed once, and the pure-Rust
/// p384 and rsa crates with a key parsed once.
fn signing_backends(c: &mut Criterion) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    use p384::ecdsa::signature::Signer;
    use p384::pkcs8::DecodePrivateKey;

    let message = b"eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoIn0.eyJpc3MiOiJiZW5jaC1jbGllbnQiLCJzdWIiOiJiZW5jaC1jbGllbnQiLCJhdWQiOiJodHRwczovL2Voci5leGFtcGxlLm9yZy9vYXV0aDIvdG9rZW4iLCJqdGkiOiI5ZjFkYjQ5Yi0xMmM3LTQ3YjQtYjFlMi1hMzA4NWRlNTI1NmIiLCJpYXQiOjE4MDAwMDAwMDAsImV4cCI6MTgwMDAwMDI0MH0";
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("sign_backend");

    let ec = PrivateKey::generate(SigningAlgorithm::ES384, 0).unwrap();
    let ec_pem = ec.to_pkcs8_pem().unwrap();
    let ec_der = pem_to_der(&ec_pem);
    let jwt_key = jsonwebtoken::EncodingKey::from_ec_der(&ec_der);
    group.bench_function("ES384/jsonwebtoken-aws-lc", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::sign(black_box(message), &jwt_key, jsonwebtoken::Algorithm::ES384)
                .unwrap()
        })
    });
    let aws_key =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &ec_der).unwrap();
    let _ = aws_key.public_key();
    group.bench_function("ES384/aws-lc-parsed-once", |b| {
        b.iter(|| aws_key.sign(&rng, black_box(message)).unwrap())
    });
    let rc_key = p384::ecdsa::SigningKey::from_pkcs8_pem(&ec_pem).unwrap();
    group.bench_function("ES384/p384-parsed-once", |b| {
        b.iter(|| -> p384::ecdsa::Signature { rc_key.sign(black_box(message)) })
    });

    let rsa_key = PrivateKey::generate(SigningAlgorithm::RS384, 3072).unwrap();
    let rsa_pem = rsa_key.to_pkcs8_pem().unwrap();
    let rsa_der = pem_to_der(&rsa_pem);
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        rsa::PrivateKey::from_pkcs8_pem(&rsa_pem)
            .unwrap()
            .to_pkcs1_der()
            .unwrap()
    };
    let jwt_key = jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes());
    group.bench_function("RS384-3072/jsonwebtoken-aws-lc", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::sign(black_box(message), &jwt_key, jsonwebtoken::Algorithm::RS384)
                .unwrap()
        })
    });
    let aws_key = RsaKeyPair::from_pkcs8(&rsa_der).unwrap();
    let mut out = vec![0u8; aws_key.public_modulus_len()];
    group.bench_function("RS384-3072/aws-lc-parsed-once", |b| {
        b.iter(|| {
            aws_key
                .sign(
                    &signature::RSA_PKCS1_SHA384,
                    &rng,
                    black_box(message),
                    &mut out,
                )
                .unwrap()
        })
    });
    let rc_key = rsa::pkcs1v15::SigningKey::<sha2::Sha384>::from_pkcs8_pem(&rsa_pem).unwrap();
    group.bench_function("RS384-3072/rsa-parsed-once", |b| {
        b.iter(|| -> rsa::pkcs1v15::Signature { rc_key.sign(black_box(message)) })
    });
    group.finish();
}

criterion_group!(benches, signing, signing_backends, key_generation, parsing);
criterion_main!(benches);
