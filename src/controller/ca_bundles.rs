//! The CA bundle Secrets that clients name in `spec.tls.caBundleSecretRef`,
//! each watched on its own (a watch selected by name: the operator never
//! watches Secrets it was not pointed at), so that a reconcile reads the
//! bundle from memory instead of the API server, and a changed bundle is
//! used by the next request. A watch nobody's spec names any more stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::task::AbortHandle;

use super::watch_tasks::WatchTasks;

/// One bundle Secret: (namespace, name).
type Key = (String, String);

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
    pub fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<Secret>>> {
        let key = (namespace.to_string(), name.to_string());
        self.watches.read_or_start(
            key,
            || self.start(namespace, name),
            |watch| {
                let listed = watch.listed.load(Ordering::SeqCst);
                listed.then(|| watch.store.get(&ObjectRef::new(name).within(namespace)))
            },
        )
    }

    /// Stops the watches of bundles no client names.
    pub fn retain(&self, named: impl Fn(&str, &str) -> bool) {
        self.watches
            .retain(|(namespace, name)| named(namespace, name));
    }

    fn start(&self, namespace: &str, name: &str) -> (Watch, AbortHandle) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        // Only the data is read; what kubectl and field managers add would
        // otherwise double what is kept.
        let slim = |secret: &mut Secret| {
            secret.metadata.managed_fields = None;
            secret.metadata.annotations = None;
        };
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
