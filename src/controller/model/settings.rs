//! Operator-wide settings, from the `run` flags.

use std::time::Duration;

use crate::smart::HttpPolicy;

/// Reconciles running at once, by default.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Token requests in flight at once per authorization server, by default.
/// One namespace may hold all but one of them, so that a tenant whose
/// requests hang there cannot take the server from the others: 5 lets a
/// namespace alone send 4 at once (with 3, a burst of new clients redid
/// half of each reconcile that found the slots taken; BENCHMARKS.md).
pub const DEFAULT_PER_SERVER_CONCURRENCY: usize = 5;

/// Operator-wide settings, from the `run` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Only SmartBackendClients whose labels match (kubectl's `-l` syntax).
    pub selector: Option<String>,
    pub http: HttpPolicy,
    pub timing: Timing,
    pub discovery_ttl: Duration,
    /// Whether `spec.audience` may name other than the token endpoint or
    /// the issuer.
    pub allow_custom_audience: bool,
    /// Liveness fails when a planned look is overdue by more than this.
    pub progress_deadline: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Token requests in flight at once per authorization server.
    pub per_server_concurrency: usize,
    /// Identifies this replica in events.
    pub instance: String,
    pub clocks: Clocks,
    /// Where EHRs reach the operator's `/jwks/` (an Ingress), for
    /// `status.jwksUri`; unset when it is not exposed.
    pub jwks_public_url: Option<url::Url>,
    /// Where the operator may touch Secrets.
    pub secret_access: SecretAccess,
    /// How a namespace grants it Secrets, when known (the chart says).
    pub secret_grant: Option<SecretGrant>,
    /// Key rotation's waits.
    pub rotation: RotationTiming,
    /// Vault / OpenBao, for clients that sign with a Transit key.
    pub vault: Option<crate::smart::signer::VaultSettings>,
    /// AWS KMS, for clients that sign with a KMS key.
    pub kms: Option<crate::smart::signer::KmsSettings>,
    /// Token delivery to the CSI driver's node plugins.
    pub delivery: Option<crate::token_delivery::DeliverySettings>,
}

impl Settings {
    /// What validation admits beyond the schema.
    pub fn rules(&self) -> crate::controller::decide::validate::Rules {
        let waits = self.rotation;
        let lifetime = self.clocks.assertion_lifetime();
        crate::controller::decide::validate::Rules {
            allow_http: self.http.allow_http,
            rotation_floor: waits
                .jwks_max_age
                .saturating_add(waits.margin)
                .saturating_add(lifetime),
            vault: self.vault.is_some(),
            kms: self.kms.is_some(),
            csi: self.delivery.is_some(),
        }
    }
}

/// How long a rotation waits between its steps.
#[derive(Clone, Copy, Debug)]
pub struct RotationTiming {
    /// The max-age the JWKS endpoint serves (`--jwks-max-age`): how long an
    /// EHR may go on using a JWKS fetched before a new key was added.
    pub jwks_max_age: Duration,
    /// On top of the max-age before the next key is first used
    /// (`--rotation-margin`).
    pub margin: Duration,
}

impl Default for RotationTiming {
    fn default() -> Self {
        Self {
            jwks_max_age: Duration::from_secs(300),
            margin: Duration::from_secs(60),
        }
    }
}

/// How the operator deals with clocks that disagree.
#[derive(Clone, Debug)]
pub struct Clocks {
    /// `iat` is set this far in the past (`exp - iat` stays at most 300 s).
    pub assertion_backdate: Duration,
    /// How long an assertion is valid after it is signed.
    pub assertion_lifetime: Duration,
    /// A server's `Date` further than this from the local clock is
    /// reported (`ClockSkew`).
    pub skew_warning: Duration,
}

impl Clocks {
    /// How long an assertion is valid after it is signed, within what
    /// SMART allows (`exp - iat` at most 300 s, `iat` backdated).
    pub fn assertion_lifetime(&self) -> Duration {
        self.assertion_lifetime.clamp(
            Duration::from_secs(1),
            crate::smart::assertion::MAX_LIFETIME - self.backdate(),
        )
    }

    /// How far `iat` is backdated: the flag, at most a minute.
    pub fn backdate(&self) -> Duration {
        self.assertion_backdate.min(MAX_BACKDATE)
    }
}

/// The most `iat` is backdated, whatever the flag says.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

impl Default for Clocks {
    fn default() -> Self {
        Self {
            assertion_backdate: crate::smart::assertion::DEFAULT_BACKDATE,
            assertion_lifetime: crate::smart::assertion::DEFAULT_LIFETIME,
            skew_warning: Duration::from_secs(10),
        }
    }
}

/// Scheduling knobs, from the operator's flags.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Never refresh more often than this, whatever the token lifetime.
    pub min_refresh_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait honoured from a server's Retry-After.
    pub retry_after_max: Duration,
    /// Safety retry for permanent errors (bad registration, bad spec).
    pub permanent_retry: Duration,
    /// The first retry of a client the server does not know yet; it
    /// doubles up to `registration_retry_max`. Registering is a person's
    /// work at the EHR: asking every few seconds only fills its logs
    /// (`kubectl smart refresh` asks at once when it is done).
    pub registration_retry: Duration,
    pub registration_retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            retry_after_max: Duration::from_secs(3600),
            permanent_retry: Duration::from_secs(1800),
            registration_retry: Duration::from_secs(120),
            registration_retry_max: Duration::from_secs(1800),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            selector: None,
            http: HttpPolicy::default(),
            timing: Timing::default(),
            discovery_ttl: Duration::from_secs(600),
            progress_deadline: Duration::from_secs(120),
            allow_custom_audience: false,
            concurrency: DEFAULT_CONCURRENCY,
            per_server_concurrency: DEFAULT_PER_SERVER_CONCURRENCY,
            instance: "smart-backend-operator".into(),
            clocks: Clocks::default(),
            jwks_public_url: None,
            secret_access: SecretAccess::default(),
            secret_grant: None,
            rotation: RotationTiming::default(),
            vault: None,
            kms: None,
            delivery: None,
        }
    }
}

/// Where the operator may read and write Secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretAccess {
    /// Only in namespaces granted one by one (the default install).
    #[default]
    PerNamespace,
    /// Everywhere (`secrets.clusterWide` in the chart).
    Cluster,
}

/// Which ClusterRole grants the operator's ServiceAccount Secrets in a
/// namespace, so that a refusal can say exactly what to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretGrant {
    pub cluster_role: String,
    pub service_account: String,
    pub service_account_namespace: String,
}

impl SecretGrant {
    /// The command a namespace admin runs to let the operator in.
    pub fn command(&self, namespace: &str) -> String {
        format!(
            "kubectl create rolebinding {role} -n {namespace} --clusterrole={role} --serviceaccount={sa_ns}:{sa}",
            role = self.cluster_role,
            sa_ns = self.service_account_namespace,
            sa = self.service_account,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_command_names_the_cluster_role_and_the_service_account() {
        let grant = SecretGrant {
            cluster_role: "ops-sbo-secrets".into(),
            service_account: "sbo".into(),
            service_account_namespace: "ops".into(),
        };
        assert_eq!(
            grant.command("team-a"),
            "kubectl create rolebinding ops-sbo-secrets -n team-a --clusterrole=ops-sbo-secrets --serviceaccount=ops:sbo"
        );
    }
}
