//! Leadership: the Lease that decides which replica writes, and the loop
//! that runs the controllers only while this replica holds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{self, Context};
use crate::metrics::Metrics;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

pub(crate) async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// How long to wait before asking the API server for the Lease again after
/// `failures` failed tries: 1, 2, 4, then every 5 seconds. One read a try
/// costs the API server little, and a longer wait is time without a leader
/// once it answers again.
pub(crate) fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(3)).min(Duration::from_secs(5))
}

/// Counts one more failed try and returns how long to wait before the next.
fn next_retry(failures: &mut u32) -> Duration {
    let wait = retry_after(*failures);
    *failures = failures.saturating_add(1);
    wait
}

/// Takes part in the election. Returns the "leading" channel and the task
/// that keeps the Lease: once every receiver of the channel is dropped, the
/// task releases the Lease (if held) and ends, so a replica that stops
/// gracefully hands over at once instead of after the lease duration.
///
/// A replica that starts while the API server is down (a restart, an etcd
/// election) waits for it and tries again, rather than exiting and leaving
/// the kubelet's growing restart backoff between the cluster and a leader.
/// Returns `None` if `stopped` turns true first.
pub(crate) async fn lease(
    client: kube::Client,
    election: &LeaderElection,
    stopped: watch::Receiver<bool>,
) -> Option<(watch::Receiver<bool>, JoinHandle<()>)> {
    let seconds = election.duration.as_secs().max(2);
    let mut failures = 0u32;
    let manager = loop {
        let built =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
                .with_namespace(&election.namespace)
                .with_identity(&election.identity)
                .with_duration(seconds)
                .with_grace((seconds / 3).max(1))
                .build()
                .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                let wait = next_retry(&mut failures);
                tracing::warn!(
                    %error,
                    "joining the leader election on Lease {}/{} failed; trying again in {wait:?} (check that the API server answers and that the chart's Role grants the Lease)",
                    election.namespace,
                    election.lease_name
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wait_true(stopped.clone()) => return None,
                }
            }
        }
    };
    let (sender, leading) = watch::channel(false);
    let keeper = tokio::spawn(keep(manager, sender));
    Some((leading, keeper))
}

/// Keeps the Lease (renews it while held, takes it when it expires) and
/// sends every change of leadership, until every receiver is dropped; then
/// releases it. The crate's own loop waits up to 30 s between failed looks
/// at the Lease, so after an API-server outage a replica could look again
/// long after the Lease expired: time with no leader, while 60-second
/// tokens run out. This loop looks again within `retry_after`.
async fn keep(manager: kube_lease_manager::LeaseManager, sender: watch::Sender<bool>) {
    let mut failures = 0u32;
    loop {
        let changed = tokio::select! {
            biased;
            () = sender.closed() => break,
            changed = manager.changed() => changed,
        };
        match changed {
            Ok(leading) => {
                failures = 0;
                if sender.send(leading).is_err() {
                    break;
                }
            }
            Err(error) => {
                let wait = next_retry(&mut failures);
                tracing::warn!(%error, "the leader Lease could not be read or renewed; trying again in {wait:?}");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = sender.closed() => break,
                }
            }
        }
    }
    match manager.release().await {
        Ok(()) => tracing::info!("leader lease released"),
        Err(error) => {
            tracing::warn!(%error, "the leader lease could not be released; the next leader waits for it to expire")
        }
    }
}

/// How long a stopping replica waits for its Lease to be released.
pub(crate) const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the controllers while `leading` is true; stops them the moment it
/// turns false. Returns when `stopped` turns true, or with an error if the
/// lease channel closes.
pub(crate) async fn lead(
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            changed = leading.wait_for(|l| *l) => {
                if changed.is_err() {
                    anyhow::bail!("leader election stopped; exiting so that the replica restarts");
                }
            }
            () = wait_true(stopped.clone()) => return Ok(()),
        }
        tracing::info!("leading: starting the controllers");
        // Nothing learned in an earlier term is trusted: another leader
        // may have written since.
        ctx.forget_leader_state();
        if let Some(delivery) = &ctx.delivery {
            delivery.lead(ctx.client.clone());
        }
        metrics.leader.set(1);
        let mut controllers =
            tokio::spawn(controller::run(ctx.clone(), wait_true(stopped.clone())));
        let outcome = tokio::select! {
            lost = leading.wait_for(|l| !*l) => if lost.is_err() { Some(Err(())) } else { None },
            () = wait_true(stopped.clone()) => Some(Ok(())),
            ended = &mut controllers => {
                // The controllers stop on the same signal as this loop:
                // whichever the select sees first, a stop is a clean exit.
                if *stopped.borrow() {
                    metrics.leader.set(0);
                    return Ok(());
                }
                // Nothing reconciles any more while this replica holds the
                // Lease: every tenant would wait. Give the Lease up (by
                // returning, which drops the channel) and exit non-zero, so
                // that a standby leads and the kubelet restarts this one.
                metrics.leader.set(0);
                let why = match ended {
                    Err(join) if join.is_panic() => "a controller panicked".to_string(),
                    Err(join) => format!("the controllers' task ended: {join}"),
                    Ok(()) => "the controllers returned".to_string(),
                };
                anyhow::bail!("{why} while this replica led; exiting so that another replica leads");
            }
        };
        metrics.leader.set(0);
        match outcome {
            // Lost the lease: stop writing at once.
            None => {
                controllers.abort();
                // The JWKS this replica published as leader may be replaced
                // by the new leader; from now on it serves what the status
                // says, like any other replica.
                ctx.forget_leader_state();
                tracing::warn!("lost the leader lease: controllers stopped");
            }
            Some(Ok(())) => {
                let _ = controllers.await;
                return Ok(());
            }
            Some(Err(())) => {
                controllers.abort();
                anyhow::bail!("leader election stopped; exiting so that the replica restarts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_join_is_tried_again_sooner_at_first_and_never_later_than_5_seconds() {
        let waits: Vec<u64> = (0..6).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
        assert_eq!(retry_after(u32::MAX), Duration::from_secs(5));
    }
}
