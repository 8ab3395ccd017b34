use super::*;

#[test]
fn every_reason_reads_back_as_itself() {
    for reason in Reason::ALL {
        assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
    }
    assert_eq!(Reason::parse("NoSuchReason"), None);
}

#[test]
fn healthy_reasons_count_as_no_failure() {
    for reason in Reason::ALL {
        assert_eq!(
            reason.class() == Class::Ok,
            reason.category() == "none" && *reason != Reason::TokenPending,
            "{reason}"
        );
    }
}

#[test]
fn a_forbidden_answer_names_the_verb_resource_and_namespace() {
    let error = kube::Error::Api(Box::new(
        kube::core::Status::failure("secrets is forbidden", "Forbidden").with_code(403),
    ));
    let failure = Failure::api(Reason::KeySecretUnavailable, "get", "team-a", "k", &error);
    assert_eq!(failure.reason, Reason::Forbidden);
    assert!(
        failure
            .message
            .contains("may not get secrets in namespace team-a")
    );
    let grant = SecretGrant {
        cluster_role: "ops-sbo-secrets".into(),
        service_account: "sbo".into(),
        service_account_namespace: "ops".into(),
    };
    let advised = failure.clone().with_grant_advice(Some(&grant), "team-a");
    assert!(
        advised.message.ends_with(
            "(needed for k): let it in with `kubectl create rolebinding ops-sbo-secrets -n team-a \
             --clusterrole=ops-sbo-secrets --serviceaccount=ops:sbo` (or list team-a in the \
             chart's secrets.namespaces); the operator retries on its own"
        ),
        "{}",
        advised.message
    );
    let generic = failure.with_grant_advice(None, "team-a");
    assert!(
        generic.message.contains("RoleBinding"),
        "{}",
        generic.message
    );
    let other = Failure::new(Reason::InvalidSpec, "x").with_grant_advice(Some(&grant), "n");
    assert_eq!(other.message, "x");
    let other = kube::Error::Api(Box::new(
        kube::core::Status::failure("busy", "x").with_code(500),
    ));
    let failure = Failure::api(Reason::KeySecretUnavailable, "get", "team-a", "k", &other);
    assert_eq!(failure.reason, Reason::KeySecretUnavailable);
    assert_eq!(failure.reason.class(), Class::Transient);
}

#[test]
fn token_errors_map_to_reasons_of_the_same_class() {
    let oauth = |status: u16, code: &str| TokenError::OAuth {
        status,
        code: code.into(),
        description: None,
        uri: None,
    };
    let cases = [
        (oauth(400, "invalid_client"), Reason::InvalidClient),
        (
            oauth(401, "unauthorized_client"),
            Reason::UnauthorizedClient,
        ),
        (oauth(400, "invalid_scope"), Reason::InvalidScope),
        (oauth(400, "invalid_grant"), Reason::InvalidGrant),
        (oauth(400, "something_else"), Reason::TokenRequestFailed),
        (
            oauth(503, "temporarily_unavailable"),
            Reason::TokenEndpointUnavailable,
        ),
        (
            oauth(500, "something_else"),
            Reason::TokenEndpointUnavailable,
        ),
        (
            TokenError::RateLimited { retry_after: None },
            Reason::RateLimited,
        ),
        (
            TokenError::UnexpectedStatus {
                status: 502,
                detail: String::new(),
                retry_after: None,
            },
            Reason::TokenEndpointUnavailable,
        ),
        (
            TokenError::UnexpectedStatus {
                status: 404,
                detail: String::new(),
                retry_after: None,
            },
            Reason::TokenRequestFailed,
        ),
        (
            TokenError::InvalidResponse("x".into()),
            Reason::InvalidTokenResponse,
        ),
        (
            TokenError::Transport(HttpError::Timeout {
                url: "u".into(),
                timeout: Duration::from_secs(1),
            }),
            Reason::TokenEndpointTimeout,
        ),
        (
            TokenError::Transport(HttpError::Connect {
                url: "u".into(),
                reason: "refused".into(),
            }),
            Reason::TokenEndpointUnreachable,
        ),
        (
            TokenError::Transport(HttpError::InsecureScheme { url: "u".into() }),
            Reason::TokenRequestFailed,
        ),
    ];
    for (error, reason) in cases {
        assert_eq!(for_token_error(&error, false), reason, "{error}");
        let transient = matches!(error.class(), ErrorClass::Transient { .. });
        assert_eq!(reason.class() == Class::Transient, transient, "{error}");
    }
}

#[test]
fn a_client_refused_before_its_first_token_is_awaiting_registration() {
    let oauth = |code: &str| TokenError::OAuth {
        status: 400,
        code: code.into(),
        description: None,
        uri: None,
    };
    for code in ["invalid_client", "unauthorized_client"] {
        assert_eq!(
            for_token_error(&oauth(code), true),
            Reason::AwaitingRegistration
        );
    }
    assert_eq!(
        for_token_error(&oauth("invalid_scope"), true),
        Reason::InvalidScope
    );
    assert_eq!(Reason::AwaitingRegistration.class(), Class::Waiting);
}

/// Every failure reason has a row in the README's troubleshooting
/// table, and every reason there exists.
#[test]
fn the_readme_troubleshooting_table_lists_exactly_these_reasons() {
    let readme = include_str!("../../../../README.md");
    let table: String = readme
        .split("## Troubleshooting")
        .nth(1)
        .expect("README has a Troubleshooting section")
        .lines()
        .skip_while(|l| !l.starts_with("| reason"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(1).unwrap_or_default().to_string() + "\n")
        .collect();
    let listed: Vec<&str> = table
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .collect();
    for reason in Reason::ALL {
        if reason.class() != Class::Ok && *reason != Reason::TokenPending {
            assert!(listed.contains(&reason.as_str()), "README lacks {reason}");
        }
    }
    for word in listed {
        assert!(Reason::parse(word).is_some(), "README lists unknown {word}");
    }
}

/// A key manager's failures: an outage is transient (the token is kept and
/// the signature retried), a missing grant or key waits for a person, a key
/// of the wrong type needs a change.
#[test]
fn key_manager_failures_are_classed_by_what_ends_them() {
    use crate::smart::SignerError;
    let unavailable = SignerError::Unavailable {
        url: "https://vault".into(),
        status: 503,
        detail: ": Vault is sealed".into(),
    };
    assert_eq!(
        for_signer_error(&unavailable),
        Reason::KeyManagerUnavailable
    );
    assert_eq!(Reason::KeyManagerUnavailable.class(), Class::Transient);
    let denied = SignerError::PermissionDenied {
        action: "sign".into(),
        grant: "a policy".into(),
    };
    assert_eq!(for_signer_error(&denied), Reason::KeyManagerForbidden);
    assert_eq!(Reason::KeyManagerForbidden.class(), Class::Waiting);
    let missing = SignerError::KeyNotFound {
        key: "team.billing".into(),
        url: "https://vault".into(),
        remedy: "create it".into(),
    };
    assert_eq!(for_signer_error(&missing), Reason::KeyManagerKeyNotFound);
    let unusable = SignerError::KeyTypeUnusable {
        key: "team.billing".into(),
        kind: "ed25519".into(),
        wanted: "ES384".into(),
        remedy: "use ecdsa-p384".into(),
    };
    assert_eq!(for_signer_error(&unusable), Reason::KeyManagerKeyUnusable);
    assert_eq!(Reason::KeyManagerKeyUnusable.class(), Class::Permanent);
    let refused = SignerError::Refused {
        action: "sign".into(),
        status: 400,
        detail: String::new(),
    };
    assert_eq!(for_signer_error(&refused), Reason::KeyManagerRefused);
}
