use super::*;
use crate::controller::decide::validate::{Rules, validate};
use crate::crd::{SmartBackendClient, SmartBackendClientSpec};
use crate::smart::SecretString;

fn spec() -> ValidSpec {
    let spec: SmartBackendClientSpec = serde_json::from_value(serde_json::json!({
        "fhirBaseUrl": "https://ehr.example/fhir",
        "clientId": "c1",
        "scopes": ["system/Patient.rs"],
        "token": {"secretTemplate": {"labels": {"team": "billing"}, "annotations": {"note": "x"}}}
    }))
    .unwrap();
    validate(
        &SmartBackendClient::new("billing", spec),
        "billing",
        Rules::https_only(),
    )
    .unwrap()
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "smartbackend.dev/v1alpha1".into(),
        kind: "SmartBackendClient".into(),
        name: "billing".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A five-minute token issued at `issued`.
fn token(issued: SystemTime, scope: Option<&str>) -> AccessToken {
    AccessToken {
        access_token: SecretString::new("tok"),
        token_type: "Bearer".into(),
        expires_in: Duration::from_secs(300),
        expires_in_defaulted: false,
        expires_at: issued + Duration::from_secs(300),
        scope: scope.map(str::to_string),
    }
}

/// The token Secret as the operator writes it for `token`.
fn written(spec: &ValidSpec, token: &AccessToken, issued: SystemTime) -> Secret {
    build_token_secret(&TokenSecretInput {
        spec,
        namespace: "ns",
        client_name: "billing",
        owner: owner(),
        token,
        issued_at: issued,
        inputs_hash: "abc",
    })
}

#[test]
fn token_secret_has_every_documented_key_and_round_trips() {
    let spec = spec();
    let issued = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = token(issued, Some("system/Patient.rs"));
    let secret = written(&spec, &token, issued);
    let data = secret.data.as_ref().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "authorization",
            "expires_at",
            "fhir_base_url",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(data["authorization"].0, b"Bearer tok");
    let annotations = secret.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[RELOADER_IGNORE], "true");
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["team"], "billing");
    assert!(is_owned_by(&secret, "uid-1"));
    assert!(!is_owned_by(&secret, "uid-2"));
    assert!(!template_drifted(&secret, &spec));
    let stored = read_token_secret(&secret).unwrap();
    assert_eq!(stored.expires_at, token.expires_at);
    assert_eq!(stored.issued_at, issued);
    assert_eq!(stored.inputs_hash, "abc");
    assert_eq!(stored.scope.as_deref(), Some("system/Patient.rs"));

    let unstated = AccessToken {
        scope: None,
        ..token
    };
    let secret = build_token_secret(&TokenSecretInput {
        spec: &spec,
        namespace: "ns",
        client_name: "billing",
        owner: owner(),
        token: &unstated,
        issued_at: issued,
        inputs_hash: "abc",
    });
    assert!(
        !secret.data.as_ref().unwrap().contains_key("scope"),
        "no invented scope"
    );
    assert_eq!(read_token_secret(&secret).unwrap().scope, None);
}

#[test]
fn inputs_hash_changes_with_scopes_and_kid() {
    let a = spec();
    let mut b = spec();
    b.scope = "system/Observation.rs".into();
    let endpoint = "https://ehr.example/token";
    assert_ne!(
        token_inputs_hash(&a, endpoint, "k"),
        token_inputs_hash(&b, endpoint, "k")
    );
    assert_ne!(
        token_inputs_hash(&a, endpoint, "k"),
        token_inputs_hash(&a, endpoint, "k2")
    );
    assert_eq!(
        token_inputs_hash(&a, endpoint, "k"),
        token_inputs_hash(&spec(), endpoint, "k")
    );
}

#[test]
fn a_template_repair_applies_only_the_operators_fields() {
    let spec = spec();
    let issued = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = token(issued, None);
    let written = written(&spec, &token, issued);
    // Someone removed the template's label and added labels and
    // annotations of their own (kubectl, a backup tool, a policy engine).
    let mut existing = written.clone();
    let labels = existing.metadata.labels.as_mut().unwrap();
    labels.remove("team");
    labels.insert("backup.example/include".into(), "true".into());
    let annotations = existing.metadata.annotations.as_mut().unwrap();
    annotations.insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        "{}".into(),
    );
    existing.metadata.resource_version = Some("42".into());
    assert!(template_drifted(&existing, &spec));

    let repaired = repaired_token_secret(&existing, &spec, "ns", "billing");
    assert_eq!(
        repaired, written,
        "the repair is what the operator wrote: its own fields, the template restored, nobody else's"
    );
    assert!(!template_drifted(&repaired, &spec));
}

#[test]
fn setting_the_clients_owner_keeps_everyone_elses() {
    let other = OwnerReference {
        uid: "someone-else".into(),
        controller: None,
        ..owner()
    };
    let mut secret = Secret::default();
    secret.metadata.owner_references = Some(vec![other.clone(), owner()]);
    assert_eq!(owners_with(&secret, "uid-1", None), vec![other.clone()]);
    let renamed = OwnerReference {
        name: "billing-2".into(),
        ..owner()
    };
    assert_eq!(
        owners_with(&secret, "uid-1", Some(renamed.clone())),
        vec![other.clone(), renamed]
    );
    assert_eq!(owners_with(&Secret::default(), "uid-1", None), vec![]);
}
