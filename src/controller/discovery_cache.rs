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
}

/// Whether a configuration came fresh or from a stale cache entry.
#[derive(Clone, Debug)]
pub enum Source {
    Fresh,
    /// Re-discovery failed; the cached result is used. The string says why.
    StaleAfterError(String),
}

pub struct DiscoveryCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl DiscoveryCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &str) -> Option<(Arc<SmartConfiguration>, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .map(|e| (e.config.clone(), !e.stale && e.fetched.elapsed() < self.ttl))
    }

    pub async fn get(
        &self,
        http: &HttpClient,
        source: &MetadataSource,
    ) -> Result<(Arc<SmartConfiguration>, Source), DiscoveryError> {
        let key = source.key();
        let cached = self.cached(&key);
        if let Some((config, true)) = &cached {
            return Ok((config.clone(), Source::Fresh));
        }
        match source.fetch(http).await {
            Ok(config) => {
                let config = Arc::new(config);
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                entries.insert(
                    key,
                    Entry {
                        config: config.clone(),
                        fetched: Instant::now(),
                        stale: false,
                    },
                );
                Ok((config, Source::Fresh))
            }
            Err(error) if error.is_transient() => match cached {
                Some((config, _)) => Ok((config, Source::StaleAfterError(error.to_string()))),
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    /// Forces the next lookup of `source` to fetch again (the old entry is
    /// kept as a fallback).
    pub fn mark_stale(&self, source: &MetadataSource) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&source.key())
        {
            entry.stale = true;
        }
    }
}
