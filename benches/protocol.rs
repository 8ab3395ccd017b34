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

criterion_group!(benches, signing, key_generation, parsing);
criterion_main!(benches);
