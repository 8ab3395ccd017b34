//! The running operator: the admin server and the JWKS cache on every
//! replica, the Lease, and the controllers while this replica leads.

mod delivery;
mod lease;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use lease::LeaderElection;
use lease::{RELEASE_TIMEOUT, lead, lease, wait_true};

use crate::admin::{AdminState, router};
use crate::controller::{self, Context, JwksDirectory, Settings};
use crate::metrics::Metrics;

/// A running operator: the admin server and JWKS cache on every replica,
/// the controllers only while this replica leads.
pub struct Operator {
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    /// Binds the admin server and starts. With `leader` set, controllers
    /// run only while this replica holds the Lease.
    pub async fn start(
        client: kube::Client,
        settings: Settings,
        admin_addr: SocketAddr,
        leader: Option<LeaderElection>,
    ) -> anyhow::Result<Self> {
        Self::start_with_probes(client, settings, admin_addr, None, leader).await
    }

    /// Like [`Operator::start`], with the probes also on `health_addr`.
    pub async fn start_with_probes(
        client: kube::Client,
        settings: Settings,
        admin_addr: SocketAddr,
        health_addr: Option<SocketAddr>,
        leader: Option<LeaderElection>,
    ) -> anyhow::Result<Self> {
        controller::check_selector(&client, &settings).await?;
        let metrics = Arc::new(Metrics::default());
        let jwks = Arc::new(JwksDirectory::default());
        let mut ctx = Context::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            jwks.clone(),
        )?;
        let delivery = match &settings.delivery {
            Some(wanted) => {
                let (delivery, listener) = delivery::bind(wanted, leader.as_ref()).await?;
                ctx.delivery = Some(delivery.clone());
                Some((delivery, listener))
            }
            None => None,
        };
        let ctx = Arc::new(ctx);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {admin_addr} (--admin-addr): {e}"))?;
        let admin_addr = listener.local_addr()?;
        let probe_listener =
            match health_addr {
                Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on {addr} (--health-addr): {e}")
                })?),
                None => None,
            };
        let expiry_ctx = ctx.clone();
        let overdue_ctx = ctx.clone();
        let state = AdminState {
            metrics: metrics.clone(),
            jwks: jwks.clone(),
            ready: ready.clone(),
            jwks_max_age: settings.rotation.jwks_max_age.as_secs(),
            earliest_expiry: Arc::new(move || expiry_ctx.earliest_expiry()),
            overdue: Arc::new(move || overdue_ctx.overdue()),
            progress_deadline: settings.progress_deadline,
        };
        let probe_app = crate::admin::probes(state.clone());
        let app = router(state);
        let (stop, stopped) = watch::channel(false);
        let admin_stop = wait_true(stopped.clone());
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let probe_stop = wait_true(stopped.clone());
            let admin = tokio::spawn(crate::admin::serve::serve(listener, app, admin_stop));
            let probes = probe_listener.map(|listener| {
                tokio::spawn(crate::admin::serve::serve(listener, probe_app, probe_stop))
            });
            let delivering = delivery.map(|(delivery, listener)| {
                let stop = wait_true(stopped.clone());
                let app = crate::token_delivery::server::router(delivery.clone(), client.clone());
                tokio::spawn(crate::admin::serve::serve_tls(
                    listener,
                    app,
                    stop,
                    delivery.tls(),
                ))
            });
            let cache = tokio::spawn(controller::watch_for_jwks(
                client.clone(),
                settings,
                jwks,
                ready,
            ));
            // Without election this replica always leads; the sender is
            // kept alive here so the channel never reports "closed". With
            // it, the admin server answers while the Lease is joined.
            let elected = match leader {
                None => {
                    let (tx, rx) = watch::channel(true);
                    Some((Some(tx), rx, None))
                }
                Some(election) => lease(client, &election, stopped.clone())
                    .await
                    .map(|(rx, keeper)| (None, rx, Some(keeper))),
            };
            let result = match elected {
                Some((always, leading, keeper)) => {
                    // `lead` owns the only receiver: when it returns, the
                    // lease task sees the channel closed and releases the
                    // Lease.
                    let result = lead(ctx, task_metrics, leading, stopped).await;
                    drop(always);
                    if let Some(keeper) = keeper
                        && tokio::time::timeout(RELEASE_TIMEOUT, keeper).await.is_err()
                    {
                        tracing::warn!(
                            "the leader lease was not released within {RELEASE_TIMEOUT:?}; the next leader waits for it to expire"
                        );
                    }
                    result
                }
                // Stopped before the API server answered.
                None => Ok(()),
            };
            cache.abort();
            if let Some(delivering) = delivering {
                delivering.abort();
            }
            if result.is_err() {
                // Stopping by itself: nothing will ask the admin server to
                // stop, and the probes must not go on answering.
                admin.abort();
            }
            let _ = admin.await;
            if let Some(probes) = probes {
                probes.abort();
            }
            result
        });
        Ok(Self {
            admin_addr,
            metrics,
            stop,
            task,
        })
    }

    /// Stops gracefully: in-flight reconciles finish, the admin server closes.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }

    /// Stops at once, as a crash would.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Completes if the operator stops by itself (the lease was lost for good).
    pub async fn finished(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}
