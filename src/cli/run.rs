//! `run`: the operator process. Also usable in-process (tests start and
//! stop operators with [`Operator::start`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{self, Context, JwksDirectory, Settings, Timing};
use crate::http::{AdminState, router};
use crate::metrics::Metrics;
use crate::smart::HttpPolicy;

fn duration(value: &str) -> Result<Duration, String> {
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
    /// Allow plain http URLs. For local development and tests only.
    #[arg(long, env = "SBO_INSECURE_ALLOW_HTTP")]
    pub insecure_allow_http: bool,
    /// Address of the admin server (health, metrics, JWKS).
    #[arg(long, env = "SBO_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
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
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Token requests in flight at once per authorization server.
    #[arg(long, default_value_t = 4)]
    pub per_server_concurrency: usize,
    /// Cache-Control max-age of the JWKS endpoint, seconds.
    #[arg(long, default_value_t = 300)]
    pub jwks_max_age: u64,
    #[arg(long, env = "SBO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            http: HttpPolicy {
                allow_http: self.insecure_allow_http,
                request_timeout: self.request_timeout,
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
            concurrency: self.concurrency,
            per_server_concurrency: self.per_server_concurrency,
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "smart-backend-operator".into()),
        }
    }
}

/// A running operator: controllers plus the admin server.
pub struct Operator {
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Operator {
    /// Binds the admin server and starts the controllers.
    pub async fn start(
        client: kube::Client,
        settings: Settings,
        admin_addr: SocketAddr,
        jwks_max_age: u64,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let jwks = Arc::new(JwksDirectory::default());
        let ctx = Arc::new(Context::new(
            client,
            settings,
            metrics.clone(),
            jwks.clone(),
        )?);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {admin_addr} (--admin-addr): {e}"))?;
        let admin_addr = listener.local_addr()?;
        let expiry_ctx = ctx.clone();
        let app = router(AdminState {
            metrics: metrics.clone(),
            jwks,
            ready: ready.clone(),
            jwks_max_age,
            earliest_expiry: Arc::new(move || expiry_ctx.earliest_expiry()),
        });
        let (stop, stopped) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let admin_stop = wait(stopped.clone());
        let controller_stop = wait(stopped);
        let task = tokio::spawn(async move {
            let admin = axum::serve(listener, app).with_graceful_shutdown(admin_stop);
            let controllers = controller::run(ctx, ready, controller_stop);
            let (served, ()) = tokio::join!(admin, controllers);
            if let Err(error) = served {
                tracing::error!(%error, "admin server failed");
            }
        });
        Ok(Self {
            admin_addr,
            metrics,
            stop,
            task,
        })
    }

    /// Stops gracefully: in-flight reconciles finish, the admin server closes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would.
    pub fn kill(self) {
        self.task.abort();
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,hyper=warn,reqwest=warn")
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
    let operator =
        Operator::start(client, args.settings(), args.admin_addr, args.jwks_max_age).await?;
    tracing::info!(admin = %operator.admin_addr, namespaces = ?args.namespaces, "operator started");
    shutdown_signal().await;
    tracing::info!("shutting down");
    operator.stop().await;
    Ok(())
}

async fn shutdown_signal() {
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
