//! SMART configurations cached per FHIR base URL. An entry older than the
//! TTL, or marked stale after a token-endpoint error, is fetched again; if
//! that fetch fails for a passing reason, the old result keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use crate::smart::HttpClient;
use crate::smart::discovery::{self, DiscoveryError, SmartConfiguration};

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
        base: &Url,
    ) -> Result<(Arc<SmartConfiguration>, Source), DiscoveryError> {
        let key = base.as_str().trim_end_matches('/').to_string();
        let cached = self.cached(&key);
        if let Some((config, true)) = &cached {
            return Ok((config.clone(), Source::Fresh));
        }
        match discovery::discover(http, base).await {
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

    /// Forces the next lookup of `base` to fetch again (the old entry is
    /// kept as a fallback).
    pub fn mark_stale(&self, base: &Url) {
        let key = base.as_str().trim_end_matches('/');
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            entry.stale = true;
        }
    }
}
