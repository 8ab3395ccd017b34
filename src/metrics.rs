//! Prometheus metrics. Labels come from small fixed sets (result, error
//! category, OAuth error code, write kind), never from object names or
//! error text, so cardinality stays bounded however many clients exist.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: &'static str,
    /// permanent, transient or waiting (`controller::reason::Class`), so
    /// that alerts can tell what needs a person from what passes.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenRequestLabels {
    pub result: &'static str,
    /// The RFC 6749 error code, or "none" / "other".
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
}

/// A metric of one sample, or none.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconciles_unchanged: Counter,
    pub reconcile_duration: Histogram,
    pub failures: Family<CategoryLabels, Counter>,
    pub token_requests: Family<TokenRequestLabels, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub keys_generated: Counter,
    /// No sample while no token is known (a follower, or before the
    /// first token): 0 would read as "expiring now".
    earliest_expiry_seconds: Family<NoLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub leader: Gauge<i64, AtomicI64>,
    pub scope_narrowed: Counter,
    pub clock_skew_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub discovery_cache_entries: Gauge<i64, AtomicI64>,
    pub server_breaker_opened: Counter,
    pub reconcile_panics: Counter,
    pub reconciles_deferred: Counter,
    pub oldest_overdue_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smart_backend");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconciles_unchanged = Counter::default();
        registry.register(
            "reconciles_unchanged",
            "Reconciles that found nothing changed since the last good outcome and ended without an API request",
            reconciles_unchanged.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let failures = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error, by category",
            failures.clone(),
        );
        let token_requests = Family::<TokenRequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token requests sent, by result and OAuth error code",
            token_requests.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind",
            api_writes.clone(),
        );
        let keys_generated = Counter::default();
        registry.register(
            "keys_generated",
            "Signing keys generated",
            keys_generated.clone(),
        );
        let earliest_expiry_seconds =
            Family::<NoLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "earliest_token_expiry_seconds",
            "Seconds until the earliest token this replica wrote expires",
            earliest_expiry_seconds.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 when this replica holds the leader lease",
            leader.clone(),
        );
        let scope_narrowed = Counter::default();
        registry.register(
            "tokens_scope_narrowed",
            "Tokens issued with fewer scopes than requested",
            scope_narrowed.clone(),
        );
        let clock_skew_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "clock_skew_seconds",
            "The largest difference last seen between this host's clock and an authorization server's Date header (server minus local)",
            clock_skew_seconds.clone(),
        );
        let discovery_cache_entries = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "discovery_cache_entries",
            "Authorization metadata documents cached",
            discovery_cache_entries.clone(),
        );
        let server_breaker_opened = Counter::default();
        registry.register(
            "server_breaker_opened",
            "Times token requests to a server were paused because it stopped answering",
            server_breaker_opened.clone(),
        );
        let reconcile_panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked; each became its own resource's InternalError and the controllers went on",
            reconcile_panics.clone(),
        );
        let reconciles_deferred = Counter::default();
        registry.register(
            "reconciles_deferred",
            "Reconciles put off for a moment because their namespace had its share of the workers running",
            reconciles_deferred.clone(),
        );
        let oldest_overdue_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "oldest_overdue_refresh_seconds",
            "How long the oldest refresh or retry the leader planned has been due without running (0 when none is); liveness fails past the progress deadline",
            oldest_overdue_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            reconciles_unchanged,
            reconcile_duration,
            failures,
            token_requests,
            api_writes,
            keys_generated,
            earliest_expiry_seconds,
            leader,
            scope_narrowed,
            clock_skew_seconds,
            discovery_cache_entries,
            server_breaker_opened,
            reconcile_panics,
            reconciles_deferred,
            oldest_overdue_seconds,
        }
    }
}

impl Metrics {
    /// Seconds until the earliest token this replica wrote expires
    /// (negative once expired), or no sample when it knows of none.
    pub fn set_earliest_expiry(&self, seconds: Option<f64>) {
        match seconds {
            Some(seconds) => {
                self.earliest_expiry_seconds
                    .get_or_create(&NoLabels {})
                    .set(seconds);
            }
            None => self.earliest_expiry_seconds.clear(),
        }
    }

    pub fn observe_reconcile(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn write(&self, kind: &'static str) {
        self.api_writes.get_or_create(&WriteLabels { kind }).inc();
    }

    pub fn token_request(&self, result: &'static str, error: &'static str) {
        self.token_requests
            .get_or_create(&TokenRequestLabels { result, error })
            .inc();
    }

    pub fn failure(&self, category: &'static str, class: &'static str) {
        self.failures
            .get_or_create(&CategoryLabels { category, class })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_expiry_has_no_sample_while_no_token_is_known() {
        let metrics = Metrics::default();
        let sample = |m: &Metrics| {
            m.encode()
                .lines()
                .find(|l| l.starts_with("smart_backend_earliest_token_expiry_seconds"))
                .map(str::to_string)
        };
        assert_eq!(sample(&metrics), None, "a follower says nothing, not 0");
        metrics.set_earliest_expiry(Some(-3.0));
        assert_eq!(
            sample(&metrics).as_deref(),
            Some("smart_backend_earliest_token_expiry_seconds -3.0")
        );
        metrics.set_earliest_expiry(None);
        assert_eq!(sample(&metrics), None);
    }
}
