//! Every condition reason the operator writes, each classified once: what
//! kind of problem it is (and so when to look again), and the bounded label
//! it is counted under in metrics. Control flow reads the class, never the
//! reason's text or a message.
//!
//! The README's troubleshooting table is checked against this list by a
//! unit test, so a new reason cannot ship undocumented.

use std::time::Duration;

use crate::controller::model::settings::SecretGrant;
use crate::smart::{ErrorClass, HttpError, SignerError, TlsProblem, TokenError};

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

impl Class {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Permanent => "permanent",
            Class::Transient => "transient",
            Class::Waiting => "waiting",
        }
    }
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
    // A key manager (Vault / OpenBao Transit).
    KeyManagerUnavailable => Transient, "key_manager";
    KeyManagerForbidden => Waiting, "key_manager";
    KeyManagerKeyNotFound => Waiting, "key_manager";
    KeyManagerKeyUnusable => Permanent, "key_manager";
    KeyManagerRefused => Permanent, "key_manager";
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
    // The operator itself.
    InternalError => Transient, "internal";
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
/// The reason for a key manager's failure to sign or to show its key.
pub fn for_signer_error(error: &SignerError) -> Reason {
    match error {
        SignerError::Unreachable(_)
        | SignerError::Unavailable { .. }
        | SignerError::Malformed { .. } => Reason::KeyManagerUnavailable,
        SignerError::PermissionDenied { .. } => Reason::KeyManagerForbidden,
        SignerError::KeyNotFound { .. } => Reason::KeyManagerKeyNotFound,
        SignerError::KeyTypeUnusable { .. } | SignerError::Key(_) => Reason::KeyManagerKeyUnusable,
        SignerError::Address(_)
        | SignerError::InvalidName(_)
        | SignerError::Credential(_)
        | SignerError::Refused { .. } => Reason::KeyManagerRefused,
        SignerError::Assertion(_) => Reason::SigningFailed,
    }
}

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

/// What was refused after a 403; [`Failure::with_grant_advice`] adds
/// what to grant.
pub fn forbidden_message(verb: &str, resource: &str, namespace: &str, name: &str) -> String {
    format!("the operator may not {verb} {resource} in namespace {namespace} (needed for {name})")
}

impl Failure {
    /// A refusal says how to let the operator in: the exact RoleBinding
    /// when the operator knows its ClusterRole and ServiceAccount.
    pub fn with_grant_advice(mut self, grant: Option<&SecretGrant>, namespace: &str) -> Self {
        if self.reason != Reason::Forbidden {
            return self;
        }
        let advice = match grant {
            Some(grant) => format!(
                "let it in with `{}` (or list {namespace} in the chart's secrets.namespaces)",
                grant.command(namespace)
            ),
            None => format!(
                "grant its ServiceAccount access to Secrets in {namespace}, for example with a \
                 RoleBinding there to the ClusterRole the chart installs for Secrets"
            ),
        };
        self.message = format!(
            "{}: {advice}; the operator retries on its own",
            self.message
        );
        self
    }
}

#[cfg(test)]
mod tests;
