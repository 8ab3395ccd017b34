//! The watches on the operator's own Secrets (their metadata only, selected
//! by the managed-by label), which tell a reconcile that a Secret it wrote
//! is unchanged and wake a client when someone else changes one.
//!
//! By default the operator may touch Secrets only in namespaces that opted
//! in (a RoleBinding to the ClusterRole the chart ships), so Secrets are
//! watched one namespace at a time: a watch starts when the first client of
//! a namespace is seen and stops when the namespace has none left. A watch
//! the API server refuses keeps retrying with backoff; when it first lists,
//! the namespace's clients are woken at once instead of waiting out their
//! backoff. With cluster-wide Secret access (an explicit choice), one watch
//! covers every namespace.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::controller::model::settings::SecretAccess;
use crate::controller::watch::ca_bundles::CaBundles;
use crate::controller::watch::tasks::WatchTasks;
use crate::controller::watch::watched::WatchedClient;
use crate::crd::{CLIENT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// A request to reconcile one client.
pub(crate) type Wake = ObjectRef<WatchedClient>;

pub(crate) struct SecretWatches {
    client: Client,
    access: SecretAccess,
    /// By namespace; the key "" is the cluster-wide watch.
    watches: WatchTasks<String, Store<PartialObjectMeta<Secret>>>,
    /// Each controller's scope (a namespace, or all), the clients it
    /// watches, and where to send its wake-ups.
    controllers: Vec<(
        Option<String>,
        Store<WatchedClient>,
        mpsc::UnboundedSender<Wake>,
    )>,
    /// Clients (by uid) woken because their namespace's Secrets became
    /// accessible: their next reconcile does not wait out a backoff.
    granted: Mutex<HashSet<String>>,
    /// The CA bundle Secrets clients name.
    pub ca_bundles: CaBundles,
}

impl SecretWatches {
    /// One receiver of wake-ups for each controller, in the order given.
    pub fn new(
        client: Client,
        access: SecretAccess,
        controllers: Vec<(Option<String>, Store<WatchedClient>)>,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Wake>>) {
        let mut receivers = Vec::new();
        let controllers = controllers
            .into_iter()
            .map(|(scope, store)| {
                let (wake, woken) = mpsc::unbounded_channel();
                receivers.push(woken);
                (scope, store, wake)
            })
            .collect();
        let watches = Arc::new(Self {
            ca_bundles: CaBundles::new(client.clone()),
            client,
            access,
            watches: WatchTasks::new(),
            controllers,
            granted: Mutex::new(HashSet::new()),
        });
        if access == SecretAccess::Cluster {
            watches.start("");
        }
        (watches, receivers)
    }

    /// Whether the client was woken because its namespace's Secrets just
    /// became accessible (once).
    pub fn take_granted(&self, uid: &str) -> bool {
        let mut granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
        granted.remove(uid)
    }

    /// Makes sure the Secrets of `namespace` are watched.
    pub fn ensure(self: &Arc<Self>, namespace: &str) {
        if self.access == SecretAccess::PerNamespace {
            self.start(namespace);
        }
    }

    /// The resource version of one of the operator's Secrets, as its watch
    /// last showed it.
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.read(namespace, |store| {
            let secret = store.get(&ObjectRef::new(name).within(namespace))?;
            secret.metadata.resource_version.clone()
        })
    }

    /// Whether the Secret exists as its watch shows it; `None` while that
    /// watch has not listed yet (or does not run).
    pub fn shows(&self, namespace: &str, name: &str) -> Option<bool> {
        self.read(namespace, |store| {
            let listed = futures_util::FutureExt::now_or_never(store.wait_until_ready())
                .is_some_and(|ready| ready.is_ok());
            listed.then(|| store.get(&ObjectRef::new(name).within(namespace)).is_some())
        })
    }

    /// `f` on the cache of the watch that covers `namespace`, if it runs.
    fn read<R>(
        &self,
        namespace: &str,
        f: impl FnOnce(&Store<PartialObjectMeta<Secret>>) -> Option<R>,
    ) -> Option<R> {
        let key = match self.access {
            SecretAccess::Cluster => "",
            SecretAccess::PerNamespace => namespace,
        };
        self.watches.read(key, f).flatten()
    }

    /// Stops the watches of namespaces in which no client is left.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if self.access == SecretAccess::PerNamespace {
            self.watches.retain(|namespace| live(namespace));
        }
    }

    /// Starts the watch of `namespace` ("" for all) unless it runs.
    fn start(self: &Arc<Self>, namespace: &str) {
        if self.watches.read(namespace, |_| ()).is_none() {
            self.watches
                .read_or_start(namespace.to_string(), || self.spawn(namespace), |_| ());
        }
    }

    fn spawn(
        self: &Arc<Self>,
        namespace: &str,
    ) -> (Store<PartialObjectMeta<Secret>>, tokio::task::AbortHandle) {
        let api: Api<PartialObjectMeta<Secret>> = if namespace.is_empty() {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), namespace)
        };
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        let events = reflector(
            writer,
            watcher(api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .modify(slim_secret_metadata),
        );
        // The task holds the set weakly: dropping the set (the end of a
        // leadership term) aborts every watch.
        let this = Arc::downgrade(self);
        let scope = namespace.to_string();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut refused = false;
            while let Some(event) = events.next().await {
                let Some(watches) = this.upgrade() else {
                    return;
                };
                match event {
                    Ok(
                        watcher::Event::Apply(secret)
                        | watcher::Event::Delete(secret)
                        | watcher::Event::InitApply(secret),
                    ) => watches.wake_owner(&secret),
                    Ok(watcher::Event::InitDone) => {
                        if refused {
                            refused = false;
                            tracing::info!(namespace = %scope, "Secrets in the namespace are now accessible");
                            watches.wake_namespace(&scope);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if !refused {
                            tracing::warn!(namespace = %scope, %error, "watching the operator's Secrets failed; retrying with backoff");
                        }
                        refused = true;
                    }
                }
            }
        });
        (store, task.abort_handle())
    }

    fn controller_of(
        &self,
        namespace: &str,
    ) -> Option<&(
        Option<String>,
        Store<WatchedClient>,
        mpsc::UnboundedSender<Wake>,
    )> {
        self.controllers
            .iter()
            .find(|(scope, _, _)| scope.as_deref().is_none_or(|s| s == namespace))
    }

    fn wake_owner(&self, secret: &PartialObjectMeta<Secret>) {
        let owner = secret.annotations().get(CLIENT_ANNOTATION);
        if let (Some(client), Some(namespace)) = (owner, secret.meta().namespace.as_deref())
            && let Some((_, _, wake)) = self.controller_of(namespace)
        {
            let _ = wake.send(ObjectRef::new(client).within(namespace));
        }
    }

    fn wake_namespace(&self, namespace: &str) {
        let Some((_, store, wake)) = self.controller_of(namespace) else {
            return;
        };
        let clients: Vec<_> = store
            .state()
            .into_iter()
            .filter(|c| c.meta().namespace.as_deref() == Some(namespace))
            .collect();
        self.granted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(clients.iter().filter_map(|c| c.meta().uid.clone()));
        for client in clients {
            let _ = wake.send(ObjectRef::from_obj(&*client));
        }
    }
}

/// Keeps what the controller reads from its own Secrets' metadata: where
/// they are, their version, and the client they belong to. Token and key
/// bytes never pass through the watch.
fn slim_secret_metadata(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    let client = meta
        .annotations
        .take()
        .and_then(|mut a| a.remove_entry(CLIENT_ANNOTATION));
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        resource_version: meta.resource_version.take(),
        annotations: client.map(|entry| BTreeMap::from([entry])),
        ..Default::default()
    };
}
