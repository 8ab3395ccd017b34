use super::*;
use crate::crd::SmartBackendClientSpec;

#[test]
fn the_secret_template_cannot_override_what_the_operator_writes() {
    for (kind, key) in [
        ("annotations", "smartbackend.dev/client"),
        ("annotations", "smartbackend.dev/expires-at"),
        ("labels", "app.kubernetes.io/managed-by"),
        ("annotations", "reloader.stakater.com/ignore"),
    ] {
        let s = sbc(|s| s["token"] = serde_json::json!({"secretTemplate": {kind: {key: "x"}}}));
        let err = validate(&s, "billing", Rules::https_only()).unwrap_err();
        assert_eq!(err.field, "token.secretTemplate", "{key}");
        assert!(err.problem.contains(key), "{err}");
    }
    let fine = sbc(|s| {
        s["token"] = serde_json::json!({"secretTemplate": {"labels": {"team": "billing"}}})
    });
    assert!(validate(&fine, "billing", Rules::https_only()).is_ok());
}

pub(crate) fn sbc(f: impl FnOnce(&mut serde_json::Value)) -> SmartBackendClient {
    let mut spec = serde_json::json!({
        "fhirBaseUrl": "https://ehr.example/fhir",
        "clientId": "c1",
        "scopes": ["system/Patient.rs"]
    });
    f(&mut spec);
    let spec: SmartBackendClientSpec = serde_json::from_value(spec).unwrap();
    SmartBackendClient::new("billing", spec)
}

#[test]
fn a_minimal_spec_gets_the_documented_defaults() {
    let v = validate(&sbc(|_| {}), "billing", Rules::https_only()).unwrap();
    assert_eq!(v.token_secret_name, "billing-token");
    assert_eq!(
        v.key,
        KeySource::Generated {
            secret_name: "billing-signing-key".into(),
            policy: GeneratedKeyPolicy::Retain,
            rsa_bits: 3072
        }
    );
    assert_eq!(v.scope, "system/Patient.rs");
}

#[test]
fn plain_http_is_refused_unless_the_operator_allows_it() {
    let s = sbc(|s| s["fhirBaseUrl"] = "http://ehr.example/fhir".into());
    let err = validate(&s, "billing", Rules::https_only()).unwrap_err();
    assert_eq!(err.field, "fhirBaseUrl");
    assert!(err.to_string().contains("--insecure-allow-http"), "{err}");
    assert!(
        validate(
            &s,
            "billing",
            Rules {
                allow_http: true,
                ..Rules::https_only()
            }
        )
        .is_ok()
    );
}

#[test]
fn bad_fields_are_named_with_the_fix() {
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|s| s["scopes"] = serde_json::json!([" "])),
            "scopes",
        ),
        (
            Box::new(|s| s["scopes"] = serde_json::json!(["a b"])),
            "scopes",
        ),
        (
            Box::new(|s| s["tokenEndpoint"] = "https://u:p@x/token".into()),
            "tokenEndpoint",
        ),
        (
            Box::new(|s| s["token"] = serde_json::json!({"refreshBefore": "5 fortnights"})),
            "token.refreshBefore",
        ),
        (
            Box::new(|s| s["token"] = serde_json::json!({"secretName": "billing-signing-key"})),
            "token.secretName",
        ),
        (
            Box::new(|s| s["token"] = serde_json::json!({"extraParams": {"scope": "x"}})),
            "token.extraParams",
        ),
        (
            Box::new(|s| s["signing"] = serde_json::json!({"rsaKeySize": 1024})),
            "signing.rsaKeySize",
        ),
    ];
    for (mutate, field) in cases {
        let err = validate(&sbc(mutate), "billing", Rules::https_only()).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn rotation_needs_a_generated_key_and_a_kid_per_key() {
    let every = |s: &mut serde_json::Value| {
        s["signing"] = serde_json::json!({"rotation": {"every": "720h"}})
    };
    let v = validate(&sbc(every), "billing", Rules::https_only()).unwrap();
    assert_eq!(v.rotate_every, Some(Duration::from_secs(720 * 3600)));
    let with_kid =
        sbc(|s| s["signing"] = serde_json::json!({"rotation": {"every": "1h"}, "kid": "k1"}));
    assert_eq!(
        validate(&with_kid, "billing", Rules::https_only())
            .unwrap_err()
            .field,
        "signing.kid"
    );
    let referenced = sbc(
        |s| s["signing"] = serde_json::json!({"rotation": {"every": "1h"}, "keySecretRef": {"name": "k", "key": "pem"}}),
    );
    let err = validate(&referenced, "billing", Rules::https_only()).unwrap_err();
    assert!(
        err.problem.contains("nextKeySecretRef") || err.problem.contains("publishing the next key"),
        "{err}"
    );
    let next_alone = sbc(|s| {
        s["signing"] = serde_json::json!({"nextKeySecretRef": {"name": "n", "key": "pem"}})
    });
    assert_eq!(
        validate(&next_alone, "billing", Rules::https_only())
            .unwrap_err()
            .field,
        "signing.nextKeySecretRef"
    );
    let same = sbc(
        |s| s["signing"] = serde_json::json!({"keySecretRef": {"name": "k", "key": "pem"}, "nextKeySecretRef": {"name": "k", "key": "pem"}}),
    );
    assert_eq!(
        validate(&same, "billing", Rules::https_only())
            .unwrap_err()
            .field,
        "signing.nextKeySecretRef"
    );
    let next = sbc(
        |s| s["signing"] = serde_json::json!({"keySecretRef": {"name": "k", "key": "pem"}, "nextKeySecretRef": {"name": "n", "key": "pem"}}),
    );
    let v = validate(&next, "billing", Rules::https_only()).unwrap();
    assert!(matches!(v.key, KeySource::Referenced { next: Some(ref n), .. } if n.0 == "n"));
}

#[test]
fn a_rotation_period_outside_one_rotation_and_ten_years_is_refused_by_name() {
    let every = |value: &'static str| {
        sbc(move |s| s["signing"] = serde_json::json!({"rotation": {"every": value}}))
    };
    // The value that once stopped every controller: it overflowed time sums.
    for huge in ["9999999999999999999s", "87601h", "584542046090y"] {
        let err = validate(&every(huge), "billing", Rules::https_only()).unwrap_err();
        assert_eq!(err.field, "signing.rotation.every", "{huge}: {err}");
    }
    assert!(validate(&every("87600h"), "billing", Rules::https_only()).is_ok());
    let short = validate(&every("9m"), "billing", Rules::https_only()).unwrap_err();
    assert!(short.problem.contains("600s"), "{short}");
    assert!(validate(&every("10m"), "billing", Rules::https_only()).is_ok());
    let slow_caches = Rules {
        rotation_floor: Duration::from_secs(7200),
        ..Rules::https_only()
    };
    assert!(validate(&every("1h"), "billing", slow_caches).is_err());
    assert!(validate(&every("0s"), "billing", Rules::https_only()).is_err());
}

#[test]
fn a_transit_key_is_named_under_the_namespace_and_stands_alone() {
    let vault = Rules {
        vault: true,
        kms: false,
        csi: false,
        ..Rules::https_only()
    };
    let transit = |extra: serde_json::Value| {
        let mut signing = serde_json::json!({"vaultTransit": {"key": "billing"}});
        signing
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut s = sbc(|s| s["signing"] = signing);
        s.metadata.namespace = Some("team-a".into());
        s
    };
    let v = validate(&transit(serde_json::json!({})), "billing", vault).unwrap();
    assert_eq!(
        v.key,
        KeySource::Transit {
            key: "team-a.billing".into()
        }
    );
    // An operator installed without Vault says how to install it with.
    let err = validate(
        &transit(serde_json::json!({})),
        "billing",
        Rules::https_only(),
    )
    .unwrap_err();
    assert!(err.problem.contains("vault.address"), "{err}");
    for beside in [
        serde_json::json!({"keySecretRef": {"name": "k", "key": "pem"}}),
        serde_json::json!({"rotation": {"every": "720h"}}),
        serde_json::json!({"rsaKeySize": 4096}),
        serde_json::json!({"generatedKeyPolicy": "Delete"}),
    ] {
        let err = validate(&transit(beside.clone()), "billing", vault).unwrap_err();
        assert_eq!(err.field, "signing.vaultTransit", "{beside}");
    }
    let err = validate(&transit(serde_json::json!({"kid": "k1"})), "billing", vault).unwrap_err();
    assert_eq!(err.field, "signing.kid");
}

#[test]
fn a_kms_key_is_named_by_alias_under_the_namespace_and_stands_alone() {
    let kms = Rules {
        kms: true,
        csi: false,
        ..Rules::https_only()
    };
    let client = |spec: serde_json::Value| {
        let mut s = sbc(|s| s["signing"] = serde_json::json!({"awsKms": spec}));
        s.metadata.namespace = Some("team-a".into());
        s
    };
    let v = validate(
        &client(serde_json::json!({"key": "billing", "nextKey": "billing-2"})),
        "billing",
        kms,
    )
    .unwrap();
    assert_eq!(
        v.key,
        KeySource::Kms {
            key: "billing".into(),
            next: Some("billing-2".into())
        }
    );
    let err = validate(
        &client(serde_json::json!({"key": "billing"})),
        "billing",
        Rules::https_only(),
    )
    .unwrap_err();
    assert!(err.problem.contains("aws.kms.enabled"), "{err}");
    for (spec, field) in [
        (serde_json::json!({"key": "../x"}), "signing.awsKms.key"),
        (serde_json::json!({"key": "a/b"}), "signing.awsKms.key"),
        (
            serde_json::json!({"key": "a", "nextKey": "a"}),
            "signing.awsKms.nextKey",
        ),
    ] {
        let err = validate(&client(spec.clone()), "billing", kms).unwrap_err();
        assert_eq!(err.field, field, "{spec}");
    }
    let mut beside = client(serde_json::json!({"key": "billing"}));
    beside.spec.signing.rotation = Some(Default::default());
    let err = validate(&beside, "billing", kms).unwrap_err();
    assert!(err.problem.contains("awsKms.nextKey"), "{err}");
}
