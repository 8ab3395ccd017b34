//! Property tests (the fuzzing that runs in CI) for everything that parses
//! input from outside: SMART metadata, token responses, OAuth error bodies,
//! and private keys in PEM and JWK form. They must never panic, and what
//! they repeat from the input must stay bounded. Run longer by hand with
//! `PROPTEST_CASES=100000 cargo test --test fuzz_parsers`.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use smart_backend_operator::smart::http::HttpResponse;
use smart_backend_operator::smart::{PrivateKey, SmartConfiguration};

fn response(status: u16, body: Vec<u8>, retry_after: Option<String>) -> HttpResponse {
    HttpResponse {
        status,
        content_type: Some("application/json".into()),
        retry_after,
        location: None,
        date: None,
        body,
    }
}

/// JSON values shaped like the documents these parsers see.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("token_endpoint".to_string()),
                    Just("access_token".to_string()),
                    Just("token_type".to_string()),
                    Just("expires_in".to_string()),
                    Just("error".to_string()),
                    Just("error_description".to_string()),
                    Just("token_endpoint_auth_signing_alg_values_supported".to_string()),
                    Just("scopes_supported".to_string()),
                    ".{0,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn metadata_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SmartConfiguration::parse(&bytes);
    }

    #[test]
    fn structured_metadata_parses_or_errors_cleanly(doc in json_value()) {
        if let Ok(config) = SmartConfiguration::parse(doc.to_string().as_bytes()) {
            prop_assert!(config.token_endpoint.has_host());
            let _ = config.choose_algorithm(None, None);
            let _ = config.warnings(&["system/Patient.rs".into()], None);
        }
    }

    #[test]
    fn token_responses_never_panic_and_quote_little(
        status in prop_oneof![Just(200u16), Just(400), Just(401), Just(429), Just(503), 100u16..600],
        doc in json_value(),
        retry_after in proptest::option::of(".{0,30}"),
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let result = smart_backend_operator::smart::token::parse_token_response(
            &response(status, doc.to_string().into_bytes(), retry_after), now, now);
        if let Err(error) = result {
            let _ = error.class();
            prop_assert!(error.to_string().chars().count() < 1024, "{}", error);
        }
    }

    #[test]
    fn oauth_error_text_is_bounded(description in ".{0,5000}", uri in ".{0,5000}") {
        let body = serde_json::json!({"error": "invalid_client", "error_description": description, "error_uri": uri});
        let error = smart_backend_operator::smart::token::parse_token_response(
            &response(401, body.to_string().into_bytes(), None), SystemTime::now(), SystemTime::now()).unwrap_err();
        prop_assert!(error.to_string().chars().count() <= 2 * 301 + 100);
    }

    #[test]
    fn key_parsing_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = PrivateKey::parse(&bytes);
    }

    #[test]
    fn key_parsing_never_panics_on_damaged_pem(index in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096) {
        for name in ["p384-pkcs8.pem", "p384-sec1.pem", "rsa2048-pkcs1.pem"] {
            let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
            let mut pem = std::fs::read(path).unwrap();
            let i = index % pem.len();
            pem[i] = byte;
            pem.truncate(cut.max(1).min(pem.len()));
            let _ = PrivateKey::parse(&pem);
        }
    }

    #[test]
    fn key_parsing_never_panics_on_jwk_like_json(doc in json_value(), kty in prop_oneof![Just("RSA"), Just("EC"), Just("OKP")]) {
        let mut doc = doc;
        if let Some(map) = doc.as_object_mut() {
            map.insert("kty".into(), kty.into());
            map.insert("crv".into(), "P-384".into());
        }
        let _ = PrivateKey::parse(doc.to_string().as_bytes());
    }
}
