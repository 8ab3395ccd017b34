//! Every condition reason the operator writes, each classified once: what
//! kind of problem it is (and so when to look again), and the bounded label
//! it is counted under in metrics. Control flow reads the class, never the
//! reason's text or a message.
//!
//! The README's troubleshooting table is checked against this list by a
//! unit test, so a new reason cannot ship undocumented.

use std::time::Duration;

use crate::smart::{ErrorClass, HttpError, TlsProblem, TokenError};

/// How a reason is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// All is well (possibly with a note).
    Ok,
    /// Bad configuration or registration: nothing changes until someone
    /// changes something. Retried when the resource changes, and slowly.
    Permanent,
    /// An outage or a passing API problem: retried with backoff, honouring
    /// a server's `Retry-After`.
    Transient,
    /// Waiting for something named in the message (a Secret to be created,
    /// a registration, a permission): retried quietly with backoff.
    Waiting,
}

macro_rules! reasons {
    ($($name:ident => $class:ident, $category:literal;)*) => {
        /// A condition reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($name,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The reason as written in a condition.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub fn class(self) -> Class {
                match self {
                    $(Reason::$name => Class::$class,)*
                }
            }

            /// The label for the failures metric.
            pub fn category(self) -> &'static str {
                match self {
                    $(Reason::$name => $category,)*
                }
            }

            /// A reason read back from a condition this operator wrote.
            pub fn parse(text: &str) -> Option<Reason> {
                match text {
                    $(stringify!($name) => Some(Reason::$name),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // Healthy.
    Discovered => Ok, "none";
    Configured => Ok, "none";
    KeyReady => Ok, "none";
    TokenIssued => Ok, "none";
    ScopeNarrowed => Ok, "none";
    // The resource as a whole.
    InvalidResource => Permanent, "invalid_resource";
    InvalidSpec => Permanent, "invalid_spec";
    Suspended => Waiting, "suspended";
    // The Kubernetes API.
    Forbidden => Waiting, "forbidden";
    TargetSecretConflict => Permanent, "target_secret_conflict";
    TokenSecretUnavailable => Transient, "api";
    TokenSecretWriteFailed => Transient, "api";
    // Trust and discovery.
    CaBundleUnavailable => Transient, "api";
    CaBundleNotFound => Waiting, "ca_bundle";
    CaBundleInvalid => Permanent, "ca_bundle";
    TlsUntrusted => Waiting, "tls";
    TlsNameMismatch => Permanent, "tls";
    TlsCertificateExpired => Waiting, "tls";
    DiscoveryFailed => Permanent, "discovery";
    DiscoveryUnavailable => Transient, "discovery_unavailable";
    NoSupportedAlgorithm => Permanent, "no_supported_algorithm";
    // The signing key.
    KeySecretUnavailable => Transient, "api";
    KeySecretNotFound => Waiting, "key";
    KeySecretNotOptedIn => Waiting, "key";
    KeySecretConflict => Permanent, "key";
    KeyInvalid => Permanent, "key";
    KeyMissing => Permanent, "key";
    KeyGenerationFailed => Transient, "key";
    KeyAlgorithmNotAccepted => Permanent, "key";
    KeyAlgorithmMismatch => Permanent, "key";
    SigningFailed => Permanent, "signing";
    // The token endpoint.
    TokenPending => Waiting, "none";
    AwaitingRegistration => Waiting, "awaiting_registration";
    InvalidClient => Permanent, "invalid_client";
    InvalidScope => Permanent, "invalid_scope";
    InvalidGrant => Permanent, "invalid_grant";
    UnauthorizedClient => Permanent, "unauthorized_client";
    InvalidRequest => Permanent, "invalid_request";
    UnsupportedGrantType => Permanent, "unsupported_grant_type";
    TokenRequestFailed => Permanent, "token_request";
    RateLimited => Transient, "rate_limited";
    TokenEndpointUnavailable => Transient, "server_unavailable";
    TokenEndpointTimeout => Transient, "timeout";
    TokenEndpointUnreachable => Transient, "connect";
    ServerNotAnswering => Transient, "server_not_answering";
    InvalidTokenResponse => Transient, "invalid_response";
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that stops a client from being Ready: why, in words a person
/// can act on, and how soon the server asked to be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// The server's `Retry-After`, for transient failures.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failed Kubernetes API call on a Secret: a 403 names the missing
    /// permission, anything else is a passing API problem.
    pub fn api(
        reason: Reason,
        verb: &str,
        namespace: &str,
        secret: &str,
        error: &kube::Error,
    ) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => Self::new(
                Reason::Forbidden,
                forbidden_message(verb, "secrets", namespace, secret),
            ),
            _ => Self::new(
                reason,
                format!(
                    "the API call to {verb} Secret {secret} failed: {error}; retrying with backoff"
                ),
            ),
        }
    }
}

/// The reason, and what to do, when a server's certificate was refused.
pub fn for_tls(error: &HttpError) -> Option<(Reason, &'static str)> {
    let HttpError::Tls { problem, .. } = error else {
        return None;
    };
    Some(match problem {
        TlsProblem::UnknownIssuer => (
            Reason::TlsUntrusted,
            "the certificate is signed by a CA the operator does not trust: put that CA's PEM certificate in a Secret and name it in spec.tls.caBundleSecretRef",
        ),
        TlsProblem::WrongName => (
            Reason::TlsNameMismatch,
            "the certificate was issued for other names: use the host name the certificate names in the URL, or have the server's certificate reissued",
        ),
        TlsProblem::Expired => (
            Reason::TlsCertificateExpired,
            "the certificate has expired or is not valid yet: the server's administrators must renew it (or this node's clock is wrong)",
        ),
        TlsProblem::Other => (
            Reason::TlsUntrusted,
            "the certificate cannot be verified: check the server's certificate chain, or the CA bundle in spec.tls.caBundleSecretRef",
        ),
    })
}

/// The reason for a failed token request. `never_had_token`: no token was
/// ever obtained for the client, so a refusal of the client most likely
/// means the EHR side is not set up yet rather than broken.
pub fn for_token_error(error: &TokenError, never_had_token: bool) -> Reason {
    let transient = matches!(error.class(), ErrorClass::Transient { .. });
    match error {
        TokenError::OAuth { code, .. } => match code.as_str() {
            "invalid_client" | "unauthorized_client" if never_had_token => {
                Reason::AwaitingRegistration
            }
            "invalid_client" => Reason::InvalidClient,
            "unauthorized_client" => Reason::UnauthorizedClient,
            "invalid_scope" => Reason::InvalidScope,
            "invalid_grant" => Reason::InvalidGrant,
            "invalid_request" => Reason::InvalidRequest,
            "unsupported_grant_type" => Reason::UnsupportedGrantType,
            _ if transient => Reason::TokenEndpointUnavailable,
            _ => Reason::TokenRequestFailed,
        },
        TokenError::RateLimited { .. } => Reason::RateLimited,
        TokenError::UnexpectedStatus { .. } if transient => Reason::TokenEndpointUnavailable,
        TokenError::UnexpectedStatus { .. } => Reason::TokenRequestFailed,
        TokenError::InvalidResponse(_) => Reason::InvalidTokenResponse,
        TokenError::Transport(http) => match (for_tls(http), http) {
            (Some((reason, _)), _) => reason,
            (None, HttpError::Timeout { .. }) => Reason::TokenEndpointTimeout,
            (None, _) if transient => Reason::TokenEndpointUnreachable,
            (None, _) => Reason::TokenRequestFailed,
        },
    }
}

/// What a platform engineer needs to grant after a 403.
pub fn forbidden_message(verb: &str, resource: &str, namespace: &str, name: &str) -> String {
    format!(
        "the operator may not {verb} {resource} in namespace {namespace} (needed for {name}): \
         grant its ServiceAccount access there, for example with a RoleBinding in {namespace} \
         to the ClusterRole the chart installs for Secrets, or add {namespace} to the chart's \
         watch.namespaces; the operator retries on its own"
    )
}

#[cfg(test)]
mod tests {
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
        let readme = include_str!("../../README.md");
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
}
