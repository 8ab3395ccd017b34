use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;
use crate::controller::decide::validate::Rules;
use crate::controller::decide::validate::tests::sbc;
use crate::crd::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// What a gate decided, in words a table can hold.
fn outcome(gate: &Gate) -> String {
    match gate {
        Gate::BackingOff(wait) => format!("back off {}s", wait.as_secs()),
        Gate::Invalid(failure) => format!("invalid {}", failure.reason.as_str()),
        Gate::Suspended(spec, state) => {
            format!(
                "suspended {} ({})",
                state.reason.as_str(),
                spec.token_secret_name
            )
        }
        Gate::Go(spec) => format!("go ({})", spec.token_secret_name),
    }
}

#[test]
fn a_reconcile_goes_on_only_with_a_valid_spec_no_backoff_and_no_suspend() {
    let good = |_: &mut serde_json::Value| {};
    let suspended = |s: &mut serde_json::Value| s["suspend"] = true.into();
    let bad_url = |s: &mut serde_json::Value| s["fhirBaseUrl"] = "not a url".into();
    let bad_and_suspended = |s: &mut serde_json::Value| {
        s["fhirBaseUrl"] = "not a url".into();
        s["suspend"] = true.into();
    };
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, Option<u64>, &str); 6] = [
        ("a good spec", good, None, "go (billing-token)"),
        (
            "a backoff runs first, whatever the spec",
            bad_url,
            Some(30),
            "back off 30s",
        ),
        ("a bad spec", bad_url, None, "invalid InvalidSpec"),
        (
            "suspend keeps the Secrets and says so",
            suspended,
            None,
            "suspended Suspended (billing-token)",
        ),
        (
            "a bad spec is reported even when suspended",
            bad_and_suspended,
            None,
            "invalid InvalidSpec",
        ),
        (
            "a backoff outlasts suspend",
            suspended,
            Some(5),
            "back off 5s",
        ),
    ];
    for (case, edit, backoff, want) in cases {
        let backoff = backoff.map(Duration::from_secs);
        let gate = gate(&sbc(edit), "billing", backoff, Rules::https_only());
        assert_eq!(outcome(&gate), want, "{case}");
    }
}

#[test]
fn plain_http_is_a_bad_spec_unless_allowed() {
    let http = |s: &mut serde_json::Value| s["fhirBaseUrl"] = "http://ehr.example/fhir".into();
    assert_eq!(
        outcome(&gate(&sbc(http), "billing", None, Rules::https_only())),
        "invalid InvalidSpec"
    );
    assert_eq!(
        outcome(&gate(
            &sbc(http),
            "billing",
            None,
            Rules {
                allow_http: true,
                ..Rules::https_only()
            }
        )),
        "go (billing-token)"
    );
}

fn secret(type_: Option<&str>, managed: bool, owner: Option<&str>) -> Secret {
    let labels = managed
        .then(|| BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
    Secret {
        metadata: ObjectMeta {
            name: Some("billing-token".into()),
            labels,
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        type_: type_.map(str::to_string),
        ..Secret::default()
    }
}

#[test]
fn only_an_opaque_token_secret_written_for_this_resource_is_written_again() {
    let cases: [(&str, Option<Secret>, Option<&str>); 6] = [
        ("no Secret yet", None, None),
        (
            "ours, Opaque",
            Some(secret(Some("Opaque"), true, Some("uid-1"))),
            None,
        ),
        (
            "ours, no type (Opaque)",
            Some(secret(None, true, Some("uid-1"))),
            None,
        ),
        (
            "another type",
            Some(secret(Some("kubernetes.io/tls"), true, Some("uid-1"))),
            Some("has type kubernetes.io/tls, not Opaque"),
        ),
        (
            "the operator's, for another resource",
            Some(secret(Some("Opaque"), true, Some("uid-2"))),
            Some("was not written by the operator for this resource"),
        ),
        (
            "someone else's",
            Some(secret(Some("Opaque"), false, Some("uid-1"))),
            Some("was not written by the operator for this resource"),
        ),
    ];
    for (case, existing, refused) in cases {
        let decided = token_target(existing.as_ref(), "billing-token", "uid-1");
        match (decided, refused) {
            (Ok(()), None) => {}
            (Err(failure), Some(says)) => {
                assert_eq!(failure.reason, Reason::TargetSecretConflict, "{case}");
                assert!(
                    failure.message.contains(says),
                    "{case}: {}",
                    failure.message
                );
                assert!(failure.message.contains("untouched"), "{case}");
            }
            (decided, _) => panic!("{case}: {decided:?}"),
        }
    }
}

#[test]
fn a_missing_key_is_regenerated_only_before_publication_or_when_asked() {
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let cases: [(Case<'_>, Result<Option<&str>, ()>); 6] = [
        (("first key", None, None, None), Ok(None)),
        (
            (
                "first key, with a request nobody handled",
                None,
                Some("r1"),
                None,
            ),
            Ok(Some("r1")),
        ),
        (("published, deleted", Some("kid-1"), None, None), Err(())),
        (
            (
                "published, request already handled",
                Some("kid-1"),
                Some("r1"),
                Some("r1"),
            ),
            Err(()),
        ),
        (
            (
                "published, a new request",
                Some("kid-1"),
                Some("r2"),
                Some("r1"),
            ),
            Ok(Some("r2")),
        ),
        (
            ("published, first request", Some("kid-1"), Some("r1"), None),
            Ok(Some("r1")),
        ),
    ];
    for ((case, kid, requested, handled), want) in cases {
        let decided = missing_key("billing-signing-key", kid, requested, handled);
        match (decided, want) {
            (Ok(handles), Ok(want)) => assert_eq!(handles.as_deref(), want, "{case}"),
            (Err(failure), Err(())) => {
                assert_eq!(failure.reason, Reason::KeyMissing, "{case}");
                let message = &failure.message;
                assert!(message.contains("kid-1"), "{case}: {message}");
                assert!(message.contains(REGENERATE_KEY_ANNOTATION), "{case}");
            }
            (decided, _) => panic!("{case}: {decided:?}"),
        }
    }
}

#[test]
fn a_found_key_secret_is_used_only_when_the_operator_made_it() {
    let cases = [
        (
            "ours, owner as the policy wants",
            true,
            true,
            true,
            Ok(Adoption::AsIs),
        ),
        (
            "ours, Retain, no owner",
            true,
            false,
            false,
            Ok(Adoption::AsIs),
        ),
        (
            "policy changed to Delete",
            true,
            false,
            true,
            Ok(Adoption::SetOwner(true)),
        ),
        (
            "policy changed to Retain",
            true,
            true,
            false,
            Ok(Adoption::SetOwner(false)),
        ),
        ("not made by the operator", false, false, true, Err(())),
    ];
    for (case, managed, has_owner, owned, want) in cases {
        let decided = adoption("billing-signing-key", managed, has_owner, owned);
        match (decided, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{case}"),
            (Err(failure), Err(())) => {
                assert_eq!(failure.reason, Reason::KeySecretConflict, "{case}");
                assert!(failure.message.contains("keySecretRef"), "{case}");
            }
            (decided, _) => panic!("{case}: {decided:?}"),
        }
    }
}

#[test]
fn the_stored_token_is_kept_only_while_nothing_asks_for_a_new_one() {
    let t = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs);
    let good = Some(("h1", t(600)));
    let cases = [
        (
            "nothing stored",
            None,
            "h1",
            false,
            false,
            0,
            TokenDue::First,
        ),
        (
            "good, refresh ahead",
            good,
            "h1",
            false,
            false,
            0,
            TokenDue::Keep,
        ),
        (
            "refresh time reached",
            good,
            "h1",
            false,
            false,
            600,
            TokenDue::Refresh,
        ),
        (
            "refresh time passed",
            good,
            "h1",
            false,
            false,
            900,
            TokenDue::Refresh,
        ),
        (
            "scopes, client or key changed",
            good,
            "h2",
            false,
            false,
            0,
            TokenDue::InputsChanged,
        ),
        (
            "refresh requested",
            good,
            "h1",
            true,
            false,
            0,
            TokenDue::Requested,
        ),
        (
            "last attempt failed",
            good,
            "h1",
            false,
            true,
            0,
            TokenDue::RetryAfterFailure,
        ),
        (
            "changed and requested: the change is the reason",
            good,
            "h2",
            true,
            true,
            0,
            TokenDue::InputsChanged,
        ),
    ];
    for (case, stored, hash, requested, failed, now, want) in cases {
        assert_eq!(
            token_due(stored, hash, requested, failed, t(now)),
            want,
            "{case}"
        );
    }
}

#[test]
fn a_retained_key_signs_only_for_its_own_resource_or_one_that_adopts_it() {
    let claim = |bound_uid, signed_before, adopt| Claim {
        bound_uid,
        uid: "u-new",
        signed_before,
        adopt,
    };
    let name = "billing-signing-key";
    assert_eq!(
        key_claim(name, &claim(Some("u-new"), false, None)),
        Ok(false)
    );
    // Made for a resource deleted since: refused, and told how to adopt.
    let refused = key_claim(name, &claim(Some("u-old"), false, None)).unwrap_err();
    assert_eq!(refused.reason, Reason::KeySecretConflict);
    assert!(
        refused
            .message
            .contains("smartbackend.dev/adopt-key=billing-signing-key")
            && refused.message.contains("u-old"),
        "{}",
        refused.message
    );
    // An adoption must name this Secret.
    assert!(key_claim(name, &claim(Some("u-old"), false, Some("other"))).is_err());
    assert_eq!(
        key_claim(name, &claim(Some("u-old"), false, Some(name))),
        Ok(true)
    );
    // A key made before uids were recorded: this resource's if it signed
    // with a key already, adopted only on request otherwise.
    assert_eq!(key_claim(name, &claim(None, true, None)), Ok(true));
    assert!(key_claim(name, &claim(None, false, None)).is_err());
    assert_eq!(key_claim(name, &claim(None, false, Some(name))), Ok(true));
}

#[test]
fn an_audience_other_than_the_token_endpoint_or_issuer_is_refused_unless_allowed() {
    let endpoint = url::Url::parse("https://ehr.example/oauth2/token").unwrap();
    let issuer = Some("https://ehr.example/oauth2");
    assert!(audience(None, &endpoint, issuer, false).is_ok());
    assert!(
        audience(
            Some("https://ehr.example/oauth2/token"),
            &endpoint,
            issuer,
            false
        )
        .is_ok()
    );
    assert!(
        audience(
            Some("https://ehr.example/oauth2/"),
            &endpoint,
            issuer,
            false
        )
        .is_ok()
    );
    let other = audience(
        Some("https://other.example/token"),
        &endpoint,
        issuer,
        false,
    )
    .unwrap_err();
    assert_eq!(other.reason, Reason::InvalidSpec);
    assert!(
        other.message.contains("--allow-custom-audience"),
        "{}",
        other.message
    );
    assert!(audience(Some("https://other.example/token"), &endpoint, None, true).is_ok());
}
