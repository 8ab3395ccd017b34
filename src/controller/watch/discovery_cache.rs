//! Authorization metadata cached per document fetched (a SMART
//! configuration, or an issuer's metadata). An entry older than the
//! TTL, or marked stale after a token-endpoint error, is fetched again; if
//! that fetch fails for a passing reason, the old result keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::smart::discovery::{DiscoveryError, SmartConfiguration};
use crate::smart::{HttpClient, MetadataSource};

struct Entry {
    config: Arc<SmartConfiguration>,
    fetched: Instant,
    stale: bool,
    /// What the entry holds, roughly, for the byte budget.
    bytes: usize,
}

/// At most this many documents are cached, and this many bytes of them;
/// beyond either, the oldest fetched go first. Each entry is one server's
/// metadata, so these leave room for thousands of EHR tenants while a
/// namespace that points resources at endless distinct URLs cannot grow
/// the operator's memory without bound.
pub const MAX_ENTRIES: usize = 2048;
pub const MAX_BYTES: usize = 32 << 20;

/// The document fetched, and the trust it was fetched through.
fn cache_key(http: &HttpClient, source: &MetadataSource) -> String {
    format!("{} {}", http.trust_key(), source.key())
}

/// The strings a configuration holds, in bytes (plus a fixed overhead).
fn weight(config: &SmartConfiguration) -> usize {
    let lists = [
        &config.token_endpoint_auth_methods_supported,
        &config.token_endpoint_auth_signing_alg_values_supported,
        &config.grant_types_supported,
        &config.scopes_supported,
        &config.capabilities,
    ];
    let strings: usize = lists
        .iter()
        .filter_map(|l| l.as_ref())
        .flatten()
        .map(|s| s.len() + 24)
        .sum();
    256 + config.token_endpoint.as_str().len()
        + config.issuer.as_ref().map_or(0, String::len)
        + strings
}

/// Whether a configuration came fresh or from a stale cache entry.
#[derive(Clone, Debug)]
pub enum Source {
    /// Fetched just now.
    Fresh,
    /// From the cache, within its TTL.
    Cached,
    /// Re-discovery failed; the cached result is used. The string says why.
    StaleAfterError(String),
}

pub struct DiscoveryCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
    max_bytes: usize,
}

impl DiscoveryCache {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, MAX_ENTRIES, MAX_BYTES)
    }

    pub fn bounded(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            max_entries,
            max_bytes,
        }
    }

    /// How many documents are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops entries older than `age` (kept so far as a fallback for
    /// passing outages).
    pub fn prune(&self, age: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.fetched.elapsed() < age);
    }

    fn insert(&self, key: String, config: Arc<SmartConfiguration>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry {
            bytes: weight(&config),
            config,
            fetched: Instant::now(),
            stale: false,
        };
        entries.insert(key, entry);
        let mut total: usize = entries.values().map(|e| e.bytes).sum();
        while entries.len() > self.max_entries || total > self.max_bytes {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.fetched)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(removed) = entries.remove(&oldest) {
                total -= removed.bytes;
            }
        }
    }

    fn cached(&self, key: &str) -> Option<(Arc<SmartConfiguration>, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .map(|e| (e.config.clone(), !e.stale && e.fetched.elapsed() < self.ttl))
    }

    /// The cached configuration while it is fresh; otherwise a fetch, but
    /// only when `admit` grants one (its permit is held for the fetch).
    /// `Ok(None)`: a fetch was needed and `admit` refused it.
    pub async fn get<P>(
        &self,
        http: &HttpClient,
        source: &MetadataSource,
        admit: impl FnOnce() -> Option<P>,
    ) -> Result<Option<(Arc<SmartConfiguration>, Source)>, DiscoveryError> {
        let key = cache_key(http, source);
        let cached = self.cached(&key);
        if let Some((config, true)) = &cached {
            return Ok(Some((config.clone(), Source::Cached)));
        }
        let Some(_permit) = admit() else {
            return Ok(None);
        };
        match source.fetch(http).await {
            Ok(config) => {
                let config = Arc::new(config);
                self.insert(key, config.clone());
                Ok(Some((config, Source::Fresh)))
            }
            Err(error) if error.is_transient() => match cached {
                Some((config, _)) => Ok(Some((config, Source::StaleAfterError(error.to_string())))),
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    /// Forces the next lookup of `source` to fetch again (the old entry is
    /// kept as a fallback).
    pub fn mark_stale(&self, http: &HttpClient, source: &MetadataSource) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&cache_key(http, source))
        {
            entry.stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scopes: usize) -> Arc<SmartConfiguration> {
        let doc = serde_json::json!({
            "token_endpoint": "https://ehr.example/token",
            "scopes_supported": (0..scopes).map(|i| format!("system/R{i}.rs")).collect::<Vec<_>>(),
        });
        Arc::new(SmartConfiguration::parse(doc.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn the_cache_keeps_at_most_its_entry_cap_and_byte_budget_oldest_out_first() {
        let cache = DiscoveryCache::bounded(Duration::from_secs(60), 3, usize::MAX);
        for i in 0..5 {
            cache.insert(format!("k{i}"), config(1));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.cached("k0").is_none() && cache.cached("k4").is_some());

        let budget = weight(&config(100)) * 2 + 10;
        let cache = DiscoveryCache::bounded(Duration::from_secs(60), 100, budget);
        for i in 0..4 {
            cache.insert(format!("k{i}"), config(100));
        }
        assert_eq!(cache.len(), 2, "the byte budget holds two");
        cache.prune(Duration::ZERO);
        assert_eq!(cache.len(), 0);
    }
}
