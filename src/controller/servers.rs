//! What the operator knows about each authorization server it sends token
//! requests to: how many requests are in flight (a cap per server, so that
//! many clients due at once are spread out), and whether the server has
//! stopped answering (a circuit breaker, so that clients of a server that
//! hangs fail fast instead of each waiting out the timeout).
//!
//! Requests are also capped per namespace (half the workers), so that one
//! tenant pointing many clients at many slow servers still leaves the other
//! half of the workers to everyone else.
//!
//! Nothing here waits: a reconcile that finds its slots taken is told so
//! and comes back shortly, so one tenant's slow server cannot hold the
//! workers every tenant shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
pub fn come_back_shortly() -> kube::runtime::controller::Action {
    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
    kube::runtime::controller::Action::requeue(Duration::from_secs(1) + jitter)
}

/// Slots held by a request in flight, freed when dropped.
pub struct Permit {
    _server: Option<OwnedSemaphorePermit>,
    _namespace: OwnedSemaphorePermit,
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

struct Server {
    slots: Arc<Semaphore>,
    breaker: Breaker,
}

pub struct Servers {
    per_server: usize,
    servers: Mutex<HashMap<String, Server>>,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Servers {
    pub fn new(per_server: usize, per_namespace: usize) -> Self {
        Self {
            per_server: per_server.max(1),
            servers: Mutex::new(HashMap::new()),
            per_namespace: per_namespace.max(1),
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    /// One of the namespace's slots for a request to any server (metadata
    /// fetches take only this), or None when they are all taken.
    pub fn admit_namespace(&self, namespace: &str) -> Option<Permit> {
        let slots = {
            let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            namespaces
                .entry(namespace.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace)))
                .clone()
        };
        let permit = slots.try_acquire_owned().ok()?;
        Some(Permit {
            _server: None,
            _namespace: permit,
        })
    }

    fn with<R>(&self, authority: &str, f: impl FnOnce(&mut Server) -> R) -> R {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let server = servers
            .entry(authority.to_string())
            .or_insert_with(|| Server {
                slots: Arc::new(Semaphore::new(self.per_server)),
                breaker: Breaker::default(),
            });
        f(server)
    }

    pub fn admit(&self, authority: &str, namespace: &str, now: Instant) -> Admission {
        let Some(mut permit) = self.admit_namespace(namespace) else {
            return Admission::Busy;
        };
        self.with(authority, |server| {
            if let Err(until) = server.breaker.check(now) {
                return Admission::Open {
                    until,
                    failures: server.breaker.failures(),
                };
            }
            match server.slots.clone().try_acquire_owned() {
                // The half-open trial is taken only by a request that goes.
                Ok(slot) => match server.breaker.allow(now) {
                    Ok(()) => {
                        permit._server = Some(slot);
                        Admission::Go(permit)
                    }
                    Err(until) => Admission::Open {
                        until,
                        failures: server.breaker.failures(),
                    },
                },
                Err(_) => Admission::Busy,
            }
        })
    }

    /// Returns true when this outcome opened the server's breaker.
    pub fn record(&self, authority: &str, reached: bool, now: Instant) -> bool {
        self.with(authority, |server| server.breaker.record(reached, now))
    }

    /// Forgets servers with nothing in flight and nothing to remember.
    pub fn prune(&self) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|_, s| s.slots.available_permits() < self.per_server || !s.breaker.closed());
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces.retain(|_, slots| slots.available_permits() < self.per_namespace);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.servers.lock().unwrap_or_else(|e| e.into_inner()).len()
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
        let Admission::Go(_b) = servers.admit("ehr:443", "n", now) else {
            panic!()
        };
        assert!(matches!(
            servers.admit("ehr:443", "n", now),
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
            servers.record("hang:443", false, now);
        }
        match servers.admit("hang:443", "n", now) {
            Admission::Open { until, failures } => {
                assert_eq!(until, now + COOL_DOWN);
                assert_eq!(failures, OPEN_AFTER);
            }
            _ => panic!("the breaker is open"),
        }
    }

    #[test]
    fn one_namespace_takes_at_most_its_share_of_requests_across_all_servers() {
        let servers = Servers::new(4, 3);
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
            servers.namespaces.lock().unwrap().is_empty(),
            "idle namespaces are forgotten"
        );
    }
}
