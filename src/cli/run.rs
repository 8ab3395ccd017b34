//! `run`: the operator process. Also usable in-process (tests start and
//! stop operators with [`Operator::start`]).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use super::key_managers::{AwsArgs, VaultArgs};
use crate::controller::{self, SecretAccess, SecretGrant, Settings, Timing};
pub use crate::runtime::{LeaderElection, Operator};
use crate::smart::HttpPolicy;
use url::Url;

pub(super) fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration like 30s or 5m: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Watch only these namespaces (comma-separated); default: all.
    #[arg(long, env = "SBO_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Only SmartBackendClients whose labels match this selector (kubectl's
    /// -l syntax, e.g. team=billing): more than one operator can then share
    /// a cluster, each with its own clients. Default: all.
    #[arg(long, env = "SBO_SELECTOR")]
    pub selector: Option<String>,
    /// Allow plain http URLs. For local development and tests only.
    #[arg(long, env = "SBO_INSECURE_ALLOW_HTTP")]
    pub insecure_allow_http: bool,
    /// Allow only these authorization-server hosts (repeatable or
    /// comma-separated; `*.example.org` wildcards). A host named exactly is
    /// reachable even on loopback or link-local addresses.
    #[arg(long = "allow-host", env = "SBO_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
    /// Also refuse private (RFC 1918 / unique-local) addresses. Off by
    /// default: many EHRs are on private networks.
    #[arg(long, env = "SBO_BLOCK_PRIVATE_NETWORKS")]
    pub block_private_networks: bool,
    /// Address of the admin server (health, metrics, JWKS).
    #[arg(long, env = "SBO_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Address of the probe listener (/healthz and /readyz only), for the
    /// kubelet: apart from the admin port, so that no pod can crowd the
    /// probes out. Port 0 takes any free port.
    #[arg(long, env = "SBO_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Let spec.audience name other than the token endpoint or the issuer
    /// (for a server that documents another). Off: a tenant could otherwise
    /// have a client's key sign an assertion for one server while sending
    /// it to another.
    #[arg(long, env = "SBO_ALLOW_CUSTOM_AUDIENCE")]
    pub allow_custom_audience: bool,
    /// Never refresh a token more often than this.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub min_refresh_interval: Duration,
    /// First retry delay after a transient failure (doubles each time).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub backoff_base: Duration,
    /// Longest retry delay after transient failures.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub backoff_max: Duration,
    /// Safety retry after a permanent failure (bad registration or spec).
    #[arg(long, default_value = "30m", value_parser = duration)]
    pub permanent_retry: Duration,
    /// How long a server's SMART configuration is cached.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub discovery_ttl: Duration,
    /// Total timeout of one HTTP request to an authorization server.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = controller::DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Token requests in flight at once per authorization server. One
    /// namespace may hold all but one of them, so that a tenant whose
    /// requests hang there cannot take the server from the others.
    #[arg(long, default_value_t = controller::DEFAULT_PER_SERVER_CONCURRENCY)]
    pub per_server_concurrency: usize,
    /// Egress proxy for every request to authorization servers, e.g.
    /// http://proxy.hospital.internal:3128. Proxies in the environment
    /// (HTTPS_PROXY, ...) are ignored. With a proxy, the host allow-list
    /// still applies to target names, but the proxy resolves them, so the
    /// address rules see only the proxy (THREAT_MODEL.md).
    #[arg(long, env = "SBO_PROXY")]
    pub proxy: Option<Url>,
    /// How far before the signing time an assertion's `iat` is set, for
    /// servers whose clock is a little behind (`exp - iat` stays ≤ 300 s).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub assertion_backdate: Duration,
    /// How long a signed assertion is valid (`exp` minus the signing time),
    /// at most 300s minus the backdate. A retiring key stays published
    /// until the last assertion it signed has expired.
    #[arg(long, default_value = "240s", value_parser = duration)]
    pub assertion_lifetime: Duration,
    /// Report a server whose `Date` header differs from this host's clock by
    /// more than this (reason `ClockSkew` in events and the gauge
    /// `smart_backend_clock_skew_seconds`).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub clock_skew_warning: Duration,
    /// The public base URL at which EHRs reach this operator's /jwks/ (the
    /// Ingress), e.g. https://jwks.example-hospital.org; each client's
    /// status.jwksUri is built from it.
    #[arg(long, env = "SBO_JWKS_PUBLIC_URL")]
    pub jwks_public_url: Option<Url>,
    /// Where the operator may read and write Secrets: `per-namespace` (each
    /// namespace grants it with a RoleBinding; the default) or `cluster`.
    #[arg(long, env = "SBO_SECRET_ACCESS", value_enum, default_value_t = SecretAccess::PerNamespace)]
    pub secret_access: SecretAccess,
    /// The ClusterRole a namespace binds to grant the operator Secrets; with
    /// `--service-account`, a refusal names the exact RoleBinding to create.
    #[arg(long, env = "SBO_SECRETS_CLUSTER_ROLE")]
    pub secrets_cluster_role: Option<String>,
    /// The operator's ServiceAccount (in the `POD_NAMESPACE` namespace).
    #[arg(long, env = "SBO_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Cache-Control max-age of the JWKS endpoint, seconds. A rotation
    /// waits this long (plus --rotation-margin) before a new key signs.
    #[arg(long, default_value_t = 300)]
    pub jwks_max_age: u64,
    /// Added to the JWKS max-age before a rotation first uses a new key,
    /// for EHRs that fetch the JWKS a little late.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub rotation_margin: Duration,
    #[arg(long, env = "SBO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Elect a leader through a coordination.k8s.io Lease, so that several
    /// replicas can run: only the leader reconciles and writes.
    #[arg(long, env = "SBO_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Liveness fails when a refresh or retry the leader planned has been
    /// due for longer than this without running: the controllers are stuck,
    /// and a restart hands the work to another replica. Longer than one
    /// reconcile can take (two request timeouts and a few API calls), and
    /// shorter than the 150 s before expiry at which tokens are refreshed.
    #[arg(long, env = "SBO_PROGRESS_DEADLINE", default_value = "120s", value_parser = duration)]
    pub progress_deadline: Duration,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "SBO_LEASE_NAME", default_value = "smart-backend-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a leader's lease lasts without renewal; another replica takes
    /// over after this.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub delivery: super::delivery::DeliveryArgs,
}

impl RunArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            selector: self.selector.clone().filter(|s| !s.trim().is_empty()),
            http: HttpPolicy {
                allow_http: self.insecure_allow_http,
                request_timeout: self.request_timeout,
                destinations: crate::smart::DestinationPolicy {
                    allow_hosts: self
                        .allow_hosts
                        .iter()
                        .filter(|h| !h.is_empty())
                        .cloned()
                        .collect(),
                    block_private: self.block_private_networks,
                },
                proxy: self.proxy.clone(),
                ..HttpPolicy::default()
            },
            timing: Timing {
                min_refresh_interval: self.min_refresh_interval,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                permanent_retry: self.permanent_retry,
                ..Timing::default()
            },
            discovery_ttl: self.discovery_ttl,
            progress_deadline: self.progress_deadline,
            allow_custom_audience: self.allow_custom_audience,
            concurrency: self.concurrency,
            per_server_concurrency: self.per_server_concurrency,
            instance: instance_name(),
            jwks_public_url: self.jwks_public_url.clone(),
            secret_access: self.secret_access,
            secret_grant: self
                .secrets_cluster_role
                .clone()
                .zip(self.service_account.clone())
                .map(|(cluster_role, service_account)| SecretGrant {
                    cluster_role,
                    service_account,
                    service_account_namespace: self.lease_namespace.clone(),
                }),
            rotation: controller::RotationTiming {
                jwks_max_age: Duration::from_secs(self.jwks_max_age),
                margin: self.rotation_margin,
            },
            clocks: controller::Clocks {
                assertion_backdate: self.assertion_backdate,
                assertion_lifetime: self.assertion_lifetime,
                skew_warning: self.clock_skew_warning,
            },
            vault: self.vault.settings()?,
            kms: self.aws.settings(self.insecure_allow_http)?,
            delivery: self
                .delivery
                .settings(&self.lease_namespace, &self.lease_name),
        })
    }

    pub fn leader_election(&self) -> Option<LeaderElection> {
        self.leader_election.then(|| LeaderElection {
            lease_name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: format!(
                "{}-{}",
                instance_name(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            duration: self.lease_duration,
        })
    }
}

fn instance_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| "smart-backend-operator".into())
}

pub(super) fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,kube=warn,hyper=warn,reqwest=warn,aws_config=warn,aws_smithy_runtime=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    if args.insecure_allow_http {
        tracing::warn!(
            "--insecure-allow-http is set: plain http authorization servers are accepted; never use this in production"
        );
    }
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration found (in-cluster or KUBECONFIG): {e}")
    })?;
    let mut operator = Operator::start_with_probes(
        client,
        args.settings()?,
        args.admin_addr,
        Some(args.health_addr),
        args.leader_election(),
    )
    .await?;
    tracing::info!(
        admin = %operator.admin_addr,
        namespaces = ?args.namespaces,
        selector = ?args.selector,
        leader_election = args.leader_election,
        "operator started"
    );
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            operator.stop().await
        }
        result = operator.finished() => result,
    }
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
