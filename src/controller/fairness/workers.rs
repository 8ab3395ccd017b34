//! Reconcile workers shared among namespaces. kube-runtime runs reconciles
//! first come, first served, so one namespace that creates or changes many
//! clients at once (each reconcile a few API calls) would hold every worker
//! while another namespace's refreshes wait in the queue. A reconcile
//! therefore starts its work only while its namespace is within its share
//! of the workers; otherwise it comes back in a moment, which costs a worker
//! a few microseconds. A client put off again and again comes back after
//! 1, 2, then 4 seconds, so that a backlog of thousands does not keep the
//! workers busy putting itself off.
//!
//! Why not park the waiting reconciles in a fair queue instead: kube-runtime
//! polls every running reconcile whenever one of them wakes, so thousands
//! parked as running reconciles made a 5,000-client burst cost twice the
//! CPU (BENCHMARKS.md, 2026-12-07 afternoon). And the put-offs are cheap:
//! halving them changed nothing measurable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Workers kept free for namespaces that are not busy yet, when only one
/// is.
const RESERVE: usize = 2;

/// How many reconciles one namespace may run at once out of `workers`,
/// while `busy_others` other namespaces run some: all but a reserve when it
/// is alone, an equal part otherwise.
pub fn share(workers: usize, busy_others: usize) -> usize {
    let share = if busy_others == 0 {
        workers.saturating_sub(RESERVE)
    } else {
        workers / (busy_others + 1)
    };
    share.max(1)
}

/// How long a client put off `times` times in a row waits before it comes
/// back (`jitter` in [0, 1) spreads the ones put off together).
pub fn put_off(times: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1 << times.saturating_sub(1).min(2));
    base + Duration::from_secs(1).mul_f64(jitter.clamp(0.0, 1.0))
}

/// Reconciles running, by namespace, and how often each waiting client
/// was put off: one lock for both, taken once per reconcile.
#[derive(Default)]
struct Counts {
    running: HashMap<String, usize>,
    put_off: HashMap<String, u32>,
}

pub struct Workers {
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

/// A running reconcile's place, given back when dropped.
pub struct Place {
    counts: Arc<Mutex<Counts>>,
    namespace: String,
}

impl Workers {
    pub fn new(total: usize) -> Self {
        Self {
            total: total.max(1),
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for client `uid`'s reconcile in `namespace`, or how long to
    /// wait when the namespace has its share running.
    pub fn admit(&self, namespace: &str, uid: &str, jitter: f64) -> Result<Place, Duration> {
        let mut counts = self.lock();
        let own = counts.running.get(namespace).copied().unwrap_or(0);
        let busy_others = counts.running.len() - usize::from(own > 0);
        if own >= share(self.total, busy_others) {
            let times = counts.put_off.entry(uid.to_string()).or_default();
            *times = times.saturating_add(1);
            return Err(put_off(*times, jitter));
        }
        if !counts.put_off.is_empty() {
            counts.put_off.remove(uid);
        }
        let namespace = namespace.to_string();
        *counts.running.entry(namespace.clone()).or_default() += 1;
        Ok(Place {
            counts: self.counts.clone(),
            namespace,
        })
    }

    /// Forgets clients that no longer exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().put_off.retain(|uid, _| keep(uid));
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        crate::controller::fairness::servers::count_down(&mut counts.running, &self.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_alone_leaves_a_reserve_and_busy_ones_share_equally() {
        assert_eq!(share(16, 0), 14);
        assert_eq!(share(16, 1), 8);
        assert_eq!(share(16, 3), 4);
        assert_eq!(share(16, 40), 1);
        assert_eq!(share(2, 0), 1);
    }

    #[test]
    fn a_burst_in_one_namespace_leaves_workers_to_another() {
        let workers = Workers::new(8);
        let burst: Vec<Place> = (0..20)
            .filter_map(|i| workers.admit("noisy", &format!("n{i}"), 0.0).ok())
            .collect();
        assert_eq!(burst.len(), 6, "all but the reserve");
        let quiet = workers
            .admit("quiet", "q0", 0.0)
            .expect("the reserve is there");
        // With two namespaces busy, the noisy one is over its half.
        assert!(workers.admit("noisy", "n0", 0.0).is_err());
        assert!(workers.admit("quiet", "q1", 0.0).is_ok());
        drop(burst);
        drop(quiet);
        assert!(workers.lock().running.is_empty(), "all given back");
    }

    #[test]
    fn a_client_put_off_again_and_again_comes_back_less_often() {
        assert_eq!(put_off(1, 0.0), Duration::from_secs(1));
        assert_eq!(put_off(2, 0.0), Duration::from_secs(2));
        assert_eq!(put_off(3, 0.0), Duration::from_secs(4));
        assert_eq!(put_off(30, 0.5), Duration::from_millis(4500));
        let workers = Workers::new(3);
        let _held = workers.admit("noisy", "a", 0.0).unwrap();
        assert_eq!(
            workers.admit("noisy", "b", 0.0).err(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            workers.admit("noisy", "b", 0.0).err(),
            Some(Duration::from_secs(2))
        );
        drop(_held);
        assert!(workers.admit("noisy", "b", 0.0).is_ok());
        assert!(workers.lock().put_off.is_empty(), "admitted: forgotten");
    }
}
