use serde_json::json;

use super::*;

#[test]
fn names_that_would_change_the_path_are_refused() {
    assert!(check_path("mount", "transit", true).is_ok());
    assert!(check_path("mount", "teams/a-1/transit_2", true).is_ok());
    assert!(check_path("key", "billing.v2", false).is_ok());
    for bad in ["", "..", "a/../b", "a b", "key?x=1", "k%2F", "ключ"] {
        assert!(check_path("mount", bad, true).is_err(), "{bad:?}");
    }
    assert!(check_path("key", "a/b", false).is_err());
    assert!(check_path("key", &"k".repeat(129), false).is_err());
}

#[test]
fn key_types_map_to_the_algorithms_that_can_use_them() {
    assert_eq!(algorithm_of("ecdsa-p384"), Some(SigningAlgorithm::ES384));
    for rsa in ["rsa-2048", "rsa-3072", "rsa-4096"] {
        assert_eq!(algorithm_of(rsa), Some(SigningAlgorithm::RS384));
    }
    for other in ["ecdsa-p256", "ed25519", "aes256-gcm96", "hmac", ""] {
        assert_eq!(algorithm_of(other), None, "{other}");
    }
}

#[test]
fn a_key_answer_gives_the_public_key_of_each_version() {
    let body = json!({"data": {
        "type": "ecdsa-p384", "latest_version": 2, "supports_signing": true,
        "keys": {
            "1": {"name": "P-384", "public_key": "PEM1"},
            "2": {"name": "P-384", "public_key": "PEM2"}
        }
    }});
    let info = key_info(body.to_string().as_bytes()).unwrap();
    assert_eq!(info.kind, "ecdsa-p384");
    assert_eq!(info.latest_version, 2);
    assert!(info.supports_signing);
    assert_eq!(info.public_keys.get(&2).map(String::as_str), Some("PEM2"));
    assert_eq!(info.public_keys.len(), 2);

    // A symmetric key lists creation times, not public keys.
    let aes = json!({"data": {"type": "aes256-gcm96", "latest_version": 1,
        "keys": {"1": 1733600000}}});
    let info = key_info(aes.to_string().as_bytes()).unwrap();
    assert!(info.public_keys.is_empty());
    assert!(!info.supports_signing);
    assert!(key_info(b"{}").is_err());
}

#[test]
fn sign_requests_ask_for_jose_encoding_and_pkcs1_for_rsa() {
    let es = sign_request(SigningAlgorithm::ES384, 3, b"a.b");
    assert_eq!(es["input"], "YS5i");
    assert_eq!(es["key_version"], 3);
    assert_eq!(es["marshaling_algorithm"], "jws");
    assert!(es.get("signature_algorithm").is_none());
    let rs = sign_request(SigningAlgorithm::RS384, 1, b"a.b");
    assert_eq!(rs["signature_algorithm"], "pkcs1v15");
    assert_eq!(rs["marshaling_algorithm"], "jws");
}

#[test]
fn a_signature_must_come_from_the_version_asked_for() {
    let body = |s: &str| json!({"data": {"signature": s, "key_version": 2}}).to_string();
    assert_eq!(
        signature(body("vault:v2:AQID").as_bytes(), 2).unwrap(),
        [1, 2, 3]
    );
    // Padding and the standard alphabet's cousins are tolerated only as
    // base64url allows.
    assert_eq!(
        signature(body("vault:v2:AQI=").as_bytes(), 2).unwrap(),
        [1, 2]
    );
    assert!(signature(body("vault:v1:AQID").as_bytes(), 2).is_err());
    assert!(signature(body("vault:v2:A+/=").as_bytes(), 2).is_err());
    assert!(signature(b"{\"data\":{}}", 2).is_err());
}

#[test]
fn a_login_answer_gives_a_token_and_its_lease() {
    let body = json!({"auth": {"client_token": "s.abc", "lease_duration": 3600}});
    let (token, lease) = login(body.to_string().as_bytes()).unwrap();
    assert_eq!(token, "s.abc");
    assert_eq!(lease, Duration::from_secs(3600));
    assert!(login(br#"{"auth":{"client_token":""}}"#).is_err());
    assert!(login(br#"{"errors":["permission denied"]}"#).is_err());
}

fn call(key: Option<&'static str>) -> Call<'static> {
    Call {
        action: "sign with Transit key billing at transit".into(),
        url: "http://127.0.0.1:8200/v1/transit/sign/billing/sha2-384",
        grant: r#"path "transit/sign/billing/sha2-384" { capabilities = ["update"] }"#.into(),
        key,
    }
}

#[test]
fn errors_say_what_to_grant_create_or_wait_for() {
    let denied = error(
        &call(Some("billing")),
        403,
        br#"{"errors":["permission denied"]}"#,
    );
    let text = denied.to_string();
    assert!(
        matches!(denied, SignerError::PermissionDenied { .. }),
        "{text}"
    );
    assert!(
        text.contains(r#"path "transit/sign/billing/sha2-384""#),
        "{text}"
    );
    assert!(!denied.is_transient());

    let missing = error(
        &call(Some("billing")),
        400,
        br#"{"errors":["signing key not found"]}"#,
    );
    assert!(
        matches!(missing, SignerError::KeyNotFound { .. }),
        "{missing}"
    );
    let missing = error(&call(Some("billing")), 404, br#"{"errors":[]}"#);
    assert!(
        matches!(missing, SignerError::KeyNotFound { .. }),
        "{missing}"
    );

    let sealed = error(
        &call(Some("billing")),
        503,
        br#"{"errors":["Vault is sealed"]}"#,
    );
    assert!(sealed.is_transient());
    assert!(sealed.to_string().contains("Vault is sealed"), "{sealed}");

    let other = error(&call(None), 400, br#"{"errors":["invalid role name"]}"#);
    assert!(
        matches!(other, SignerError::Refused { status: 400, .. }),
        "{other}"
    );
    assert!(!other.is_transient());
}

#[test]
fn a_long_error_text_is_cut() {
    let long = json!({"errors": ["x".repeat(10_000)]}).to_string();
    let text = error(&call(None), 400, long.as_bytes()).to_string();
    assert!(text.len() < 1_000, "{}", text.len());
}
