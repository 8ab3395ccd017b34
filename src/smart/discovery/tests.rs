use super::*;

fn config(json: serde_json::Value) -> SmartConfiguration {
    SmartConfiguration::parse(json.to_string().as_bytes()).unwrap()
}

fn full() -> serde_json::Value {
    serde_json::json!({
        "token_endpoint": "https://ehr.example/oauth2/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.read", "system/Patient.rs"],
        "capabilities": ["client-confidential-asymmetric"]
    })
}

#[test]
fn well_known_url_keeps_the_base_path_with_or_without_trailing_slash() {
    for base in [
        "https://ehr.example/fhir/r4",
        "https://ehr.example/fhir/r4/",
    ] {
        let url = well_known_url(&Url::parse(base).unwrap());
        assert_eq!(
            url.as_str(),
            "https://ehr.example/fhir/r4/.well-known/smart-configuration"
        );
    }
    let root = well_known_url(&Url::parse("https://ehr.example").unwrap());
    assert_eq!(
        root.as_str(),
        "https://ehr.example/.well-known/smart-configuration"
    );
}

#[test]
fn the_first_supported_algorithm_in_server_order_is_chosen() {
    let mut doc = full();
    doc["token_endpoint_auth_signing_alg_values_supported"] =
        serde_json::json!(["RS256", "ES384", "RS384"]);
    let choice = config(doc).choose_algorithm(None, None).unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::ES384);
    assert_eq!(choice.source, AlgorithmSource::ServerMetadata);
}

#[test]
fn an_explicit_algorithm_overrides_the_server_order_with_a_warning_if_unlisted() {
    let mut doc = full();
    doc["token_endpoint_auth_signing_alg_values_supported"] = serde_json::json!(["ES384"]);
    let cfg = config(doc);
    let choice = cfg
        .choose_algorithm(Some(SigningAlgorithm::RS384), None)
        .unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::RS384);
    assert!(
        cfg.warnings(&[], Some(choice))
            .contains(&DiscoveryWarning::AlgorithmNotAdvertised(
                SigningAlgorithm::RS384
            ))
    );
}

#[test]
fn no_algorithm_list_means_rs384_and_a_warning() {
    let mut doc = full();
    doc.as_object_mut()
        .unwrap()
        .remove("token_endpoint_auth_signing_alg_values_supported");
    let cfg = config(doc);
    let choice = cfg.choose_algorithm(None, None).unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::RS384);
    assert_eq!(
        cfg.warnings(&[], Some(choice)),
        vec![DiscoveryWarning::NoAlgorithmList]
    );
}

#[test]
fn with_no_algorithm_list_a_key_in_hand_decides() {
    let mut doc = full();
    doc.as_object_mut()
        .unwrap()
        .remove("token_endpoint_auth_signing_alg_values_supported");
    let cfg = config(doc);
    for key in [SigningAlgorithm::ES384, SigningAlgorithm::RS384] {
        let choice = cfg.choose_algorithm(None, Some(key)).unwrap();
        assert_eq!(choice.algorithm, key);
        assert_eq!(choice.source, AlgorithmSource::KeyType);
    }
    let message = DiscoveryWarning::NoAlgorithmList.to_string();
    assert!(!message.contains("must accept"), "{message}");
}

#[test]
fn a_listed_key_algorithm_wins_over_the_servers_first_choice() {
    let mut doc = full();
    doc["token_endpoint_auth_signing_alg_values_supported"] = serde_json::json!(["RS384", "ES384"]);
    let cfg = config(doc);
    let choice = cfg
        .choose_algorithm(None, Some(SigningAlgorithm::ES384))
        .unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::ES384);
    let choice = cfg.choose_algorithm(None, None).unwrap();
    assert_eq!(choice.algorithm, SigningAlgorithm::RS384);
}

#[test]
fn a_list_without_supported_algorithms_is_an_error_naming_the_offer() {
    let mut doc = full();
    doc["token_endpoint_auth_signing_alg_values_supported"] = serde_json::json!(["RS256", "ES256"]);
    let err = config(doc).choose_algorithm(None, None).unwrap_err();
    assert!(err.to_string().contains("RS256, ES256"), "{err}");
}

#[test]
fn complete_metadata_gives_no_warnings() {
    let cfg = config(full());
    let choice = cfg.choose_algorithm(None, None).ok();
    let scopes = vec![
        "system/Observation.read".to_string(),
        "system/Patient.rs".to_string(),
    ];
    assert_eq!(cfg.warnings(&scopes, choice), vec![]);
}

#[test]
fn imperfect_metadata_gives_warnings_not_errors() {
    let cfg = config(serde_json::json!({
        "token_endpoint": "https://ehr.example/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": "RS384 ES384",
        "grant_types_supported": ["authorization_code"],
        "scopes_supported": ["patient/*.read"],
        "capabilities": 7
    }));
    let warnings = cfg.warnings(
        &["system/Patient.read".into()],
        cfg.choose_algorithm(None, None).ok(),
    );
    assert_eq!(
        warnings,
        vec![
            DiscoveryWarning::MissingPrivateKeyJwt,
            DiscoveryWarning::MissingAsymmetricCapability,
            DiscoveryWarning::MissingClientCredentials,
            DiscoveryWarning::ScopeNotAdvertised("system/Patient.read".into()),
        ]
    );
}

#[test]
fn token_endpoint_must_be_present_and_absolute() {
    let missing = SmartConfiguration::parse(br#"{"issuer":"x"}"#).unwrap_err();
    assert!(matches!(missing, DiscoveryError::NoTokenEndpoint));
    let relative = SmartConfiguration::parse(br#"{"token_endpoint":"/oauth/token"}"#).unwrap_err();
    assert!(
        matches!(relative, DiscoveryError::BadTokenEndpoint { .. }),
        "{relative}"
    );
    let not_string = SmartConfiguration::parse(br#"{"token_endpoint":42}"#).unwrap_err();
    assert!(matches!(not_string, DiscoveryError::NoTokenEndpoint));
}

#[test]
fn documents_that_are_not_json_objects_are_refused() {
    for body in [
        &b"<html>oops</html>"[..],
        b"[1,2]",
        b"",
        b"{\"token_endpoint\":",
    ] {
        let err = SmartConfiguration::parse(body).unwrap_err();
        assert!(matches!(err, DiscoveryError::NotJson { .. }), "{err}");
    }
}

#[test]
fn long_lists_and_long_entries_are_bounded() {
    let mut doc = full();
    let many: Vec<String> = (0..10_000).map(|i| format!("s{i}")).collect();
    doc["scopes_supported"] = serde_json::json!(many);
    doc["grant_types_supported"] =
        serde_json::json!(["client_credentials", "x".repeat(MAX_ITEM_CHARS + 1)]);
    let cfg = config(doc);
    assert_eq!(cfg.scopes_supported.as_ref().unwrap().len(), MAX_LIST_ITEMS);
    assert_eq!(cfg.grant_types_supported.unwrap(), ["client_credentials"]);
}
