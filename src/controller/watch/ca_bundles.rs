//! The CA bundle Secrets that clients name in `spec.tls.caBundleSecretRef`,
//! each watched on its own (a watch selected by name: the operator never
//! watches Secrets it was not pointed at), so that a reconcile reads the
//! bundle from memory instead of the API server, and a changed bundle is
//! used by the next request. A watch nobody's spec names any more stops.
//!
//! What a tenant names here is bounded: each watch keeps only the key the
//! spec names, and only up to [`MAX_CA_BUNDLE`] bytes of it (a larger one
//! is kept empty and refused by name); at most [`MAX_WATCHES_PER_NAMESPACE`]
//! bundles are watched per namespace, and further ones are read from the
//! API server when used. A Secret of a megabyte named by hundreds of
//! clients therefore costs the operator nothing beyond a request each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::task::AbortHandle;

use crate::controller::watch::tasks::WatchTasks;

/// One bundle: (namespace, Secret name, key).
type Key = (String, String, String);

/// The largest CA bundle used: a few dozen certificates.
pub const MAX_CA_BUNDLE: usize = 64 * 1024;

/// Bundles watched at once in one namespace.
pub const MAX_WATCHES_PER_NAMESPACE: usize = 8;

struct Watch {
    store: Store<Secret>,
    /// Whether the watch has listed (until then the store knows nothing).
    listed: Arc<AtomicBool>,
}

pub(crate) struct CaBundles {
    client: Client,
    watches: WatchTasks<Key, Watch>,
}

impl CaBundles {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            watches: WatchTasks::new(),
        }
    }

    /// The bundle Secret as its watch shows it: `Some(None)` when it does
    /// not exist, `None` when the watch has not listed yet (the caller
    /// reads it from the API server instead). Starts the watch if needed.
    pub fn get(&self, namespace: &str, name: &str, key: &str) -> Option<Option<Arc<Secret>>> {
        let id = (namespace.to_string(), name.to_string(), key.to_string());
        self.watches
            .read_or_start_capped(
                id,
                |(ns, _, _)| ns == namespace,
                MAX_WATCHES_PER_NAMESPACE,
                || self.start(namespace, name, key),
                |watch| {
                    let listed = watch.listed.load(Ordering::SeqCst);
                    listed.then(|| watch.store.get(&ObjectRef::new(name).within(namespace)))
                },
            )
            .flatten()
    }

    /// Stops the watches of bundles no client names.
    pub fn retain(&self, named: impl Fn(&str, &str, &str) -> bool) {
        self.watches
            .retain(|(namespace, name, key)| named(namespace, name, key));
    }

    fn start(&self, namespace: &str, name: &str, key: &str) -> (Watch, AbortHandle) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        let key = key.to_string();
        let slim = move |secret: &mut Secret| slim(secret, &key);
        let events = reflector(writer, watcher(api, config).default_backoff().modify(slim));
        let listed = Arc::new(AtomicBool::new(false));
        let flag = listed.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::SeqCst),
                    // Refused or broken: reconciles read it directly (and
                    // say Forbidden if that is refused too).
                    Err(_) => flag.store(false, Ordering::SeqCst),
                    Ok(_) => {}
                }
            }
        });
        (Watch { store, listed }, task.abort_handle())
    }
}

/// The Secret as a bundle watch keeps it: only `key`, and only when it is
/// at most [`MAX_CA_BUNDLE`] bytes (else empty, which is refused by name).
/// What kubectl and field managers add, and every other key, would
/// otherwise be kept for as long as the watch runs.
pub fn slim(secret: &mut Secret, key: &str) {
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = None;
    secret.metadata.labels = None;
    secret.string_data = None;
    if let Some(data) = secret.data.as_mut() {
        data.retain(|k, _| k == key);
        for value in data.values_mut() {
            if value.0.len() > MAX_CA_BUNDLE {
                value.0 = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn a_watched_bundle_keeps_only_its_key_and_nothing_too_large() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([
                ("ca.crt".to_string(), ByteString(vec![b'a'; 2000])),
                ("release".to_string(), ByteString(vec![b'b'; 1024 * 1024])),
            ])),
            ..Secret::default()
        };
        let mut other = secret.clone();
        slim(&mut secret, "ca.crt");
        let data = secret.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["ca.crt"].0.len(), 2000);
        slim(&mut other, "release");
        let data = other.data.unwrap();
        assert_eq!(data.len(), 1);
        assert!(data["release"].0.is_empty(), "a megabyte is not kept");
    }
}
