//! Reconcile workers shared among namespaces. kube-runtime runs reconciles
//! first come, first served, so one namespace that creates or changes many
//! clients at once (each reconcile a few API calls) would hold every worker
//! while another namespace's refreshes wait in the queue. A reconcile
//! therefore starts its work only while its namespace is within its share
//! of the workers; otherwise it comes back in a moment, which costs a worker
//! a few microseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Reconciles running, by namespace.
pub struct Workers {
    total: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// A running reconcile's place, given back when dropped.
pub struct Place {
    running: Arc<Mutex<HashMap<String, usize>>>,
    namespace: String,
}

impl Workers {
    pub fn new(total: usize) -> Self {
        Self {
            total: total.max(1),
            running: Arc::default(),
        }
    }

    /// A place for a reconcile in `namespace`, or `None` when the namespace
    /// has its share running.
    pub fn admit(&self, namespace: &str) -> Option<Place> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let own = running.get(namespace).copied().unwrap_or(0);
        let busy_others = running.len() - usize::from(own > 0);
        if own >= share(self.total, busy_others) {
            return None;
        }
        *running.entry(namespace.to_string()).or_default() += 1;
        Some(Place {
            running: self.running.clone(),
            namespace: namespace.to_string(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.namespace);
            }
        }
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
        let burst: Vec<Place> = (0..20).filter_map(|_| workers.admit("noisy")).collect();
        assert_eq!(burst.len(), 6, "all but the reserve");
        let quiet = workers.admit("quiet").expect("the reserve is there");
        // With two namespaces busy, the noisy one is over its half.
        assert!(workers.admit("noisy").is_none());
        assert!(workers.admit("quiet").is_some());
        drop(burst);
        drop(quiet);
        assert!(workers.running.lock().unwrap().is_empty(), "all given back");
    }
}
