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

/// Whether a request may go through an open breaker: only one whose
/// client's current token (`token_left` of its life) would expire before
/// the breaker lets a trial through and, should that trial fail, one more
/// cool-down ends. The breaker saves a server that is down from requests
/// that can wait; it never lets a token expire that a request could still
/// renew (a server that drops most connections answers some). Such requests
/// still take the server's slots, so a dead server sees no more than it
/// would without a breaker. A client with no valid token waits.
pub fn cannot_wait(until: Instant, now: Instant, token_left: Option<Duration>) -> bool {
    token_left.is_some_and(|left| {
        left < until
            .saturating_duration_since(now)
            .saturating_add(COOL_DOWN)
    })
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

    /// A slot for a token request to `authority` from `namespace`, whose
    /// client's current token has `token_left` of its life (None: no valid
    /// token).
    pub fn admit(
        &self,
        authority: &str,
        namespace: &str,
        now: Instant,
        token_left: Option<Duration>,
    ) -> Admission {
        let mut state = self.lock();
        if !Self::namespace_has_room(&state, namespace, self.workers) {
            return Admission::Busy;
        }
        let key = (authority.to_string(), namespace.to_string());
        let breaker = state.breakers.entry(key.clone()).or_default();
        let passes = match breaker.check(now) {
            Ok(()) => false,
            Err(until) if cannot_wait(until, now, token_left) => true,
            Err(until) => {
                return Admission::Open {
                    until,
                    failures: breaker.failures(),
                };
            }
        };
        let on_server = state.servers.get(authority).copied().unwrap_or(0);
        let mine = state.server_namespaces.get(&key).copied().unwrap_or(0);
        if on_server >= self.per_server || mine >= server_share(self.per_server) {
            return Admission::Busy;
        }
        // The half-open trial is taken only by a request that goes, and not
        // by one that passes because its token cannot wait.
        let breaker = state.breakers.entry(key.clone()).or_default();
        if !passes && let Err(until) = breaker.allow(now) {
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
mod tests;
