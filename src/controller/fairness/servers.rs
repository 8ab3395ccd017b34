//! What the operator knows about each authorization server it sends token
//! requests to: how many requests are in flight (a cap per server, so that
//! many clients due at once are spread out), and whether the server has
//! stopped answering (a circuit breaker, so that clients of a server that
//! hangs fail fast instead of each waiting out the timeout).
//!
//! Requests are also capped per namespace (a fair share of the workers:
//! equal parts for the busy namespaces and one for a newcomer), so that
//! tenants pointing many clients at many slow servers still leave workers
//! to everyone else; one namespace holds at most all but one of a server's
//! slots; and the breaker is kept per namespace and server, so that one
//! tenant's hanging path on a host does not pause another tenant there.
//!
//! Nothing here waits: a reconcile that finds its slots taken is told so
//! and comes back shortly, so one tenant's slow server cannot hold the
//! workers every tenant shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Consecutive requests that found the server unreachable (timeouts,
/// refused connections) before the breaker opens.
pub const OPEN_AFTER: u32 = 5;
/// How long an open breaker fails requests fast before one is let through.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// A circuit breaker for one server: pure, driven by the caller's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    consecutive: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// Whether a request may go now. After the cool-down one request is let
    /// through (the others wait for another cool-down) to see whether the
    /// server is back.
    pub fn allow(&mut self, now: Instant) -> Result<(), Instant> {
        self.check(now)?;
        if self.open_until.is_some() {
            self.open_until = Some(now + COOL_DOWN);
        }
        Ok(())
    }

    /// Whether a request could go now, without taking the trial.
    pub fn check(&self, now: Instant) -> Result<(), Instant> {
        match self.open_until {
            Some(until) if now < until => Err(until),
            _ => Ok(()),
        }
    }

    /// Records how a request ended: `reached` when the server answered at
    /// all (even with an error). Returns true when this opened the breaker.
    pub fn record(&mut self, reached: bool, now: Instant) -> bool {
        if reached {
            *self = Breaker::default();
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let was_open = self.open_until.is_some();
        if self.consecutive >= OPEN_AFTER {
            self.open_until = Some(now + COOL_DOWN);
        }
        !was_open && self.open_until.is_some()
    }

    pub fn failures(&self) -> u32 {
        self.consecutive
    }

    fn closed(&self) -> bool {
        self.open_until.is_none() && self.consecutive == 0
    }
}

/// When a reconcile that found its slots taken comes back: in a moment,
/// spread out so that the ones turned away together do not return together.
pub fn come_back_shortly() -> crate::controller::model::requeue::Requeue {
    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
    crate::controller::model::requeue::Requeue::After(Duration::from_secs(1) + jitter)
}

/// How many requests one namespace may have in flight out of `workers`,
/// while `busy_others` other namespaces have some: an equal part for each
/// busy namespace and one more for a newcomer, so that however many
/// tenants are busy, one more still finds workers free.
pub fn fair_share(workers: usize, busy_others: usize) -> usize {
    (workers / busy_others.saturating_add(2)).max(1)
}

/// How many of one server's slots one namespace may hold: all but one, so
/// that a tenant whose requests hang at a server cannot take it from the
/// other tenants of that server.
pub fn server_share(per_server: usize) -> usize {
    per_server.saturating_sub(1).max(1)
}

/// Requests in flight, and each (server, namespace)'s breaker.
#[derive(Default)]
struct InFlight {
    namespaces: HashMap<String, usize>,
    servers: HashMap<String, usize>,
    server_namespaces: HashMap<(String, String), usize>,
    /// Keyed by namespace too: one tenant's unreachable path on a host
    /// pauses that tenant's requests to it, not everyone's.
    breakers: HashMap<(String, String), Breaker>,
}

/// One less of `key` in a map of counts; the entry leaves at zero.
pub(in crate::controller) fn count_down<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, usize>,
    key: &K,
) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Slots held by a request in flight, freed when dropped.
pub struct Permit {
    state: Arc<Mutex<InFlight>>,
    namespace: String,
    server: Option<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        count_down(&mut state.namespaces, &self.namespace);
        if let Some(server) = self.server.take() {
            count_down(&mut state.servers, &server);
            let key = (server, std::mem::take(&mut self.namespace));
            count_down(&mut state.server_namespaces, &key);
        }
    }
}

/// Whether a token request to a server may go now.
pub enum Admission {
    /// Go, holding one of the server's and one of the namespace's slots
    /// until the permit is dropped.
    Go(Permit),
    /// All the server's or the namespace's slots are taken: come back
    /// shortly.
    Busy,
    /// The server stopped answering: fail fast until then.
    Open { until: Instant, failures: u32 },
}

pub struct Servers {
    per_server: usize,
    /// The reconcile workers every namespace shares.
    workers: usize,
    state: Arc<Mutex<InFlight>>,
}

impl Servers {
    pub fn new(per_server: usize, workers: usize) -> Self {
        Self {
            per_server: per_server.max(1),
            workers: workers.max(1),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `namespace` is within its fair share of the workers.
    fn namespace_has_room(state: &InFlight, namespace: &str, workers: usize) -> bool {
        let own = state.namespaces.get(namespace).copied().unwrap_or(0);
        let busy_others = state.namespaces.len() - usize::from(own > 0);
        own < fair_share(workers, busy_others)
    }

    /// One of the namespace's slots for a request to any server (metadata
    /// fetches take only this), or None when its share is taken.
    pub fn admit_namespace(&self, namespace: &str) -> Option<Permit> {
        let mut state = self.lock();
        if !Self::namespace_has_room(&state, namespace, self.workers) {
            return None;
        }
        *state.namespaces.entry(namespace.to_string()).or_default() += 1;
        Some(Permit {
            state: self.state.clone(),
            namespace: namespace.to_string(),
            server: None,
        })
    }

    pub fn admit(&self, authority: &str, namespace: &str, now: Instant) -> Admission {
        let mut state = self.lock();
        if !Self::namespace_has_room(&state, namespace, self.workers) {
            return Admission::Busy;
        }
        let key = (authority.to_string(), namespace.to_string());
        let breaker = state.breakers.entry(key.clone()).or_default();
        if let Err(until) = breaker.check(now) {
            return Admission::Open {
                until,
                failures: breaker.failures(),
            };
        }
        let on_server = state.servers.get(authority).copied().unwrap_or(0);
        let mine = state.server_namespaces.get(&key).copied().unwrap_or(0);
        if on_server >= self.per_server || mine >= server_share(self.per_server) {
            return Admission::Busy;
        }
        // The half-open trial is taken only by a request that goes.
        let breaker = state.breakers.entry(key.clone()).or_default();
        if let Err(until) = breaker.allow(now) {
            return Admission::Open {
                until,
                failures: breaker.failures(),
            };
        }
        *state.namespaces.entry(namespace.to_string()).or_default() += 1;
        *state.servers.entry(authority.to_string()).or_default() += 1;
        *state.server_namespaces.entry(key).or_default() += 1;
        Admission::Go(Permit {
            state: self.state.clone(),
            namespace: namespace.to_string(),
            server: Some(authority.to_string()),
        })
    }

    /// Returns true when this outcome opened the breaker of `namespace`'s
    /// requests to the server.
    pub fn record(&self, authority: &str, namespace: &str, reached: bool, now: Instant) -> bool {
        let key = (authority.to_string(), namespace.to_string());
        let mut state = self.lock();
        state.breakers.entry(key).or_default().record(reached, now)
    }

    /// Forgets breakers with nothing to remember (the in-flight counts
    /// leave with their last request).
    pub fn prune(&self) {
        self.lock().breakers.retain(|_, breaker| !breaker.closed());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.lock();
        state.servers.len() + state.breakers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_repeated_unreachable_requests_and_lets_one_through_after_the_cool_down()
     {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 1..OPEN_AFTER {
            assert!(!b.record(false, t0), "{i}");
            assert!(b.allow(t0).is_ok());
        }
        assert!(b.record(false, t0), "the fifth opens it");
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Err(t0 + COOL_DOWN));
        // After the cool-down one request goes; the next waits again.
        let later = t0 + COOL_DOWN;
        assert!(b.allow(later).is_ok());
        assert!(b.allow(later + Duration::from_secs(1)).is_err());
        // It failed again: open for another cool-down, not "opened" anew.
        assert!(!b.record(false, later + Duration::from_secs(2)));
        // An answer of any kind closes it.
        b.record(true, later + COOL_DOWN * 2);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_server_answering_with_errors_keeps_the_breaker_closed() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..10 {
            b.record(false, t0);
            b.record(true, t0);
        }
        assert!(b.allow(t0).is_ok());
    }

    #[test]
    fn slots_are_taken_without_waiting_and_freed_with_the_permit() {
        let servers = Servers::new(2, 8);
        let now = Instant::now();
        let Admission::Go(a) = servers.admit("ehr:443", "n", now) else {
            panic!()
        };
        let Admission::Go(_b) = servers.admit("ehr:443", "m", now) else {
            panic!()
        };
        assert!(matches!(
            servers.admit("ehr:443", "o", now),
            Admission::Busy
        ));
        assert!(matches!(
            servers.admit("other:443", "n", now),
            Admission::Go(_)
        ));
        drop(a);
        assert!(matches!(
            servers.admit("ehr:443", "n", now),
            Admission::Go(_)
        ));
        servers.prune();
        assert_eq!(
            servers.len(),
            1,
            "the server with a request in flight is kept"
        );
    }

    #[test]
    fn an_open_breaker_is_reported_with_when_it_closes() {
        let servers = Servers::new(4, 8);
        let now = Instant::now();
        for _ in 0..OPEN_AFTER {
            servers.record("hang:443", "n", false, now);
        }
        match servers.admit("hang:443", "n", now) {
            Admission::Open { until, failures } => {
                assert_eq!(until, now + COOL_DOWN);
                assert_eq!(failures, OPEN_AFTER);
            }
            _ => panic!("the breaker is open"),
        }
        // Another tenant of the same host is not paused by it.
        assert!(matches!(
            servers.admit("hang:443", "other", now),
            Admission::Go(_)
        ));
    }

    #[test]
    fn every_busy_namespace_gets_an_equal_part_and_a_newcomer_still_finds_room() {
        assert_eq!(fair_share(16, 0), 8);
        assert_eq!(fair_share(16, 1), 5);
        assert_eq!(fair_share(16, 2), 4);
        assert_eq!(fair_share(16, 100), 1);
        assert_eq!(server_share(4), 3);
        assert_eq!(server_share(1), 1);
        // Three greedy namespaces cannot take every worker between them.
        let servers = Servers::new(100, 12);
        let now = Instant::now();
        let mut held = Vec::new();
        for round in 0..12 {
            for ns in ["a", "b", "c"] {
                if let Admission::Go(p) = servers.admit(&format!("s{round}{ns}:443"), ns, now) {
                    held.push(p);
                }
            }
        }
        assert!(held.len() < 12, "{} of 12 workers taken", held.len());
        assert!(matches!(
            servers.admit("s:443", "newcomer", now),
            Admission::Go(_)
        ));
    }

    #[test]
    fn one_namespace_leaves_a_slot_of_each_server_to_the_others() {
        let servers = Servers::new(4, 64);
        let now = Instant::now();
        let held: Vec<Permit> = (0..3)
            .map(|_| match servers.admit("ehr:443", "greedy", now) {
                Admission::Go(p) => p,
                _ => panic!("within its share of the server"),
            })
            .collect();
        assert!(matches!(
            servers.admit("ehr:443", "greedy", now),
            Admission::Busy
        ));
        assert!(matches!(
            servers.admit("ehr:443", "other", now),
            Admission::Go(_)
        ));
        drop(held);
    }

    #[test]
    fn one_namespace_takes_at_most_its_share_of_requests_across_all_servers() {
        let servers = Servers::new(4, 6);
        let now = Instant::now();
        let held: Vec<Permit> = (0..3)
            .map(
                |i| match servers.admit(&format!("slow-{i}:443"), "greedy", now) {
                    Admission::Go(permit) => permit,
                    _ => panic!("within the share"),
                },
            )
            .collect();
        assert!(matches!(
            servers.admit("slow-9:443", "greedy", now),
            Admission::Busy
        ));
        assert!(servers.admit_namespace("greedy").is_none(), "metadata too");
        assert!(matches!(
            servers.admit("slow-0:443", "other", now),
            Admission::Go(_)
        ));
        drop(held);
        assert!(servers.admit_namespace("greedy").is_some());
        servers.prune();
        assert!(
            servers.lock().namespaces.is_empty(),
            "idle namespaces are forgotten"
        );
    }
}
