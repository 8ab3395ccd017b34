//! The controller: watches SmartBackendClients (and the Secrets the operator
//! owns) and keeps each client's token Secret fresh.
//!
//! In five parts: [`watch`] (what is watched and cached), [`decide`] (every
//! decision, pure), [`steps`] (the acting half: one reconcile as named
//! steps that return outcome values), [`model`] (what is held between
//! reconciles) and [`fairness`] (sharing workers and servers between
//! tenants). This file wires them: the [`Context`] every reconcile shares,
//! and [`run`], the controllers with their watches.

#[cfg(test)]
mod api_tests;
pub mod decide;
pub(crate) mod fairness;
pub mod model;
pub(crate) mod steps;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource};

use crate::metrics::Metrics;
use crate::smart::HttpClient;
use model::memory::Memories;
pub use model::settings::{Clocks, RotationTiming, Settings, Timing};
pub use model::settings::{
    DEFAULT_CONCURRENCY, DEFAULT_PER_SERVER_CONCURRENCY, SecretAccess, SecretGrant,
};
use watch::discovery_cache::DiscoveryCache;
pub use watch::jwks::{JwksDirectory, Published, watch_for_jwks};
use watch::own_secrets::SecretWatches;
pub use watch::scope::check_selector;
use watch::scope::watches;
pub use watch::watched::WatchedClient;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub jwks: Arc<JwksDirectory>,
    http: HttpClient,
    http_with_ca: Mutex<HashMap<String, HttpClient>>,
    discovery: DiscoveryCache,
    reporter: Reporter,
    servers: fairness::servers::Servers,
    /// What this process knows about each client (by uid) that the watch
    /// cache may not show yet.
    memory: Memories,
    /// The watches on the Secrets the operator manages, while it leads.
    secret_watches: RwLock<Option<Arc<SecretWatches>>>,
    /// Each client's next planned look, for liveness.
    progress: model::progress::Progress,
    /// The reconcile workers' share per namespace.
    workers: fairness::workers::Workers,
    /// The watch caches of this term's controllers: which clients exist.
    stores: RwLock<Vec<reflector::Store<WatchedClient>>>,
    /// When this term's first reconcile came: the first looks at settled
    /// clients are spread from then (see [`decide::wait::first_look_wait`]).
    term_started: Mutex<Option<SystemTime>>,
    /// The login to Vault / OpenBao, when the operator is configured for it.
    pub(crate) vault: Option<crate::smart::signer::VaultSession>,
    /// The AWS KMS client, when the operator is configured for it.
    pub(crate) kms: Option<crate::smart::signer::KmsSession>,
    /// Token delivery to CSI node plugins, when configured.
    pub delivery: Option<Arc<crate::token_delivery::Delivery>>,
    /// What the Secret watches would show, set by the mocked-API tests
    /// (which run no watches).
    #[cfg(test)]
    pub(crate) watched_versions: Mutex<HashMap<(String, String), String>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        jwks: Arc<JwksDirectory>,
    ) -> Result<Self, crate::smart::HttpError> {
        let http = HttpClient::new(settings.http.clone())?;
        let vault = match &settings.vault {
            Some(vault) => Some(crate::smart::signer::VaultSession::for_operator(
                vault.clone(),
                &settings.http,
            )?),
            None => None,
        };
        let kms = settings
            .kms
            .clone()
            .map(|kms| crate::smart::signer::KmsSession::new(kms, settings.http.request_timeout));
        let reporter = Reporter {
            controller: "smart-backend-operator".into(),
            instance: Some(settings.instance.clone()),
        };
        Ok(Self {
            discovery: DiscoveryCache::new(settings.discovery_ttl),
            workers: fairness::workers::Workers::new(usize::from(settings.concurrency)),
            servers: fairness::servers::Servers::new(
                settings.per_server_concurrency,
                usize::from(settings.concurrency),
            ),
            client,
            settings,
            metrics,
            jwks,
            http,
            http_with_ca: Mutex::new(HashMap::new()),
            reporter,
            memory: Memories::default(),
            secret_watches: RwLock::new(None),
            progress: model::progress::Progress::default(),
            stores: RwLock::new(Vec::new()),
            term_started: Mutex::new(None),
            vault,
            kms,
            delivery: None,
            #[cfg(test)]
            watched_versions: Mutex::default(),
        })
    }

    /// A recorder for one reconcile's events. kube's Recorder keeps every
    /// event of the last minutes in one cache that each publish scans under
    /// a write lock, which made event publishing quadratic in the number of
    /// clients (BENCHMARKS.md); the operator's events are already one per
    /// state change, so the series counting that cache is for is not needed.
    pub(crate) fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.memory.earliest_expiry()
    }

    /// How long the oldest look this replica planned for a client that
    /// still exists is overdue, and how long the operator has been stalled
    /// (overdue while no reconcile finished; see [`progress`]).
    pub fn overdue(&self) -> (Option<Duration>, Option<Duration>) {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let exists = |namespace: &str, name: &str| {
            let key = reflector::ObjectRef::new(name).within(namespace);
            stores.iter().any(|store| store.get(&key).is_some())
        };
        let now = SystemTime::now();
        let overdue = self.progress.oldest_overdue(now, exists);
        (overdue, self.progress.stalled_for(overdue, now))
    }

    /// When this term's first reconcile came (`now` if this is it).
    pub(crate) fn term_started(&self, now: SystemTime) -> SystemTime {
        let mut started = self.term_started.lock().unwrap_or_else(|e| e.into_inner());
        *started.get_or_insert(now)
    }

    /// The resource version of a Secret the operator manages, as its watch
    /// last showed it.
    pub(crate) fn own_secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        #[cfg(test)]
        {
            let key = (namespace.to_string(), name.to_string());
            let pretended = self.watched_versions.lock().unwrap().get(&key).cloned();
            if pretended.is_some() {
                return pretended;
            }
        }
        self.secret_watches()?.version(namespace, name)
    }

    /// Whether a Secret the operator manages exists as its watch shows it;
    /// `None` while that watch has not listed.
    pub(crate) fn own_secret_shown(&self, namespace: &str, name: &str) -> Option<bool> {
        self.secret_watches()?.shows(namespace, name)
    }

    fn secret_watches(&self) -> Option<Arc<SecretWatches>> {
        let watches = self
            .secret_watches
            .read()
            .unwrap_or_else(|e| e.into_inner());
        watches.clone()
    }

    /// A CA bundle Secret as its watch shows it (`Some(None)`: it does not
    /// exist); `None` when it must be read from the API server.
    pub(crate) fn ca_bundle(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Option<Option<Arc<k8s_openapi::api::core::v1::Secret>>> {
        self.secret_watches()?.ca_bundles.get(namespace, name, key)
    }

    /// Whether the client was just woken because its namespace granted the
    /// operator Secrets: then a backoff after `Forbidden` is not waited out.
    pub(crate) fn secrets_just_granted(&self, uid: &str) -> bool {
        self.secret_watches()
            .is_some_and(|watches| watches.take_granted(uid))
    }

    /// Forgets what this replica learned while leading: per-client memory
    /// and the JWKS it published ahead of the status. Called whenever
    /// leadership is gained or lost, so that no state outlives a term.
    pub fn forget_leader_state(&self) {
        self.memory.retain(|_| false);
        self.jwks.retain(|_, _| false);
        self.progress.retain(|_| false);
        // A demoted replica keeps no watch of Secrets: the term's
        // controllers were aborted before they could drop them.
        *self
            .secret_watches
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.term_started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(delivery) = &self.delivery {
            delivery.step_down();
        }
    }

    /// The maps keyed by what users write (servers, CA bundles, metadata
    /// URLs) keep only what is in use: a per-server limit nobody holds is
    /// made again when needed, CA-bundle clients are rebuilt from their
    /// Secret (the system roots stay loaded), and metadata older than an
    /// hour past its TTL is fetched again.
    fn prune_per_input_maps(&self) {
        self.servers.prune();
        self.http_with_ca
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.discovery.prune(
            self.settings
                .discovery_ttl
                .saturating_add(Duration::from_secs(3600)),
        );
        self.metrics
            .discovery_cache_entries
            .set(self.discovery.len() as i64);
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.memory.forget(uid);
        self.progress.forget(uid);
    }
}

/// Errors that abort a reconcile (everything else becomes a condition).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("patching the status failed: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "invalid_object",
            Error::PatchStatus(_) => "patch_status",
        }
    }
}

/// A reconcile that ended in an [`Error`], and when it is tried again
/// (backing off while the errors go on).
#[derive(Debug, thiserror::Error)]
#[error("{error}; retrying in {}s", retry.as_secs())]
pub struct Failed {
    #[source]
    pub error: Error,
    pub retry: Duration,
}

fn error_policy(_obj: Arc<WatchedClient>, failed: &Failed, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(failed.error.category(), "transient");
    tracing::warn!(error = %failed, "reconcile failed");
    Action::requeue(failed.retry)
}

/// Runs the controllers until `shutdown` completes (or the future is
/// dropped, which stops every write at once).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures_util::future::FutureExt::shared(Box::pin(shutdown));
    // The clients of each scope (a namespace, or all), cached with only
    // what reconcile reads (see `watched`).
    let mut watched = Vec::new();
    for watch in watches(&ctx.client, &ctx.settings) {
        let scope = watch.scope;
        let writer = reflector::store::Writer::default();
        let reader = writer.as_reader();
        let resources =
            reflector(writer, watcher(watch.api, watch.config).default_backoff()).applied_objects();
        watched.push((scope, reader, resources));
    }
    let stores: Vec<_> = watched
        .iter()
        .map(|(scope, store, _)| (scope.clone(), store.clone()))
        .collect();
    let (secret_watches, woken) = SecretWatches::new(
        ctx.client.clone(),
        ctx.settings.secret_access,
        stores.clone(),
    );
    *ctx.secret_watches
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(secret_watches.clone());
    *ctx.stores.write().unwrap_or_else(|e| e.into_inner()) =
        stores.iter().map(|(_, store)| store.clone()).collect();
    let mut controllers = Vec::new();
    for ((_, reader, resources), woken) in watched.into_iter().zip(woken) {
        // A namespace's Secrets are watched from its first client on.
        let watches = secret_watches.clone();
        let resources = resources.inspect(move |client| {
            if let Ok(namespace) = client.as_ref().map(|c| c.meta().namespace.as_deref()) {
                watches.ensure(namespace.unwrap_or_default());
            }
        });
        let woken = futures_util::stream::unfold(woken, |mut woken| async move {
            woken.recv().await.map(|client| (client, woken))
        });
        let unlisted = unlisted_at(shutdown.clone(), reader.clone());
        let controller = Controller::for_stream(resources, reader)
            .reconcile_on(woken)
            .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
            .graceful_shutdown_on(shutdown.clone());
        let ctx = ctx.clone();
        controllers.push(async move {
            let run = controller
                .run(steps::reconcile::reconcile, error_policy, ctx)
                .for_each(|_| futures_util::future::ready(()));
            tokio::select! {
                () = run => {}
                () = unlisted => {}
            }
        });
    }
    let stores = stores.into_iter().map(|(_, store)| store).collect();
    let prune = prune_forgotten_clients(ctx.clone(), stores, secret_watches);
    tokio::select! {
        _ = futures_util::future::join_all(controllers) => {}
        _ = prune => {}
    }
    // The term is over: the Secret watches stop with it.
    *ctx.secret_watches
        .write()
        .unwrap_or_else(|e| e.into_inner()) = None;
    ctx.stores
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

/// Completes when `shutdown` comes before the scope's first list did; pends
/// otherwise. kube-runtime starts no reconcile until the cache has listed,
/// and the shutdown cuts the watch that would list it, so such a controller
/// would wait forever for its graceful end (seen as a replica that ignored
/// SIGTERM right after it became leader). It has nothing in flight: it may
/// be dropped.
async fn unlisted_at(
    shutdown: impl std::future::Future<Output = ()>,
    store: reflector::Store<WatchedClient>,
) {
    shutdown.await;
    let listed = futures_util::FutureExt::now_or_never(store.wait_until_ready())
        .is_some_and(|ready| ready.is_ok());
    if listed {
        std::future::pending::<()>().await;
    }
}

/// How often memory of deleted clients is dropped (and their JWKS no
/// longer served): a pass over the watch caches, cheap at any fleet size.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Drops per-client memory, published JWKS and delivered tokens of clients
/// that no longer exist. A deleted resource without finalizers is never reconciled again,
/// so nothing else would let go of them.
async fn prune_forgotten_clients(
    ctx: Arc<Context>,
    stores: Vec<reflector::Store<WatchedClient>>,
    secret_watches: Arc<SecretWatches>,
) {
    for store in &stores {
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    for round in 0u64.. {
        tick.tick().await;
        let live: Vec<Arc<WatchedClient>> = stores.iter().flat_map(|s| s.state()).collect();
        let uids: std::collections::HashSet<&str> = live
            .iter()
            .filter_map(|o| o.meta().uid.as_deref())
            .collect();
        ctx.memory.retain(|uid| uids.contains(uid));
        ctx.progress.retain(|uid| uids.contains(uid));
        ctx.workers.retain(|uid| uids.contains(uid));
        let names: std::collections::HashSet<(&str, &str)> = live
            .iter()
            .filter_map(|o| Some((o.meta().namespace.as_deref()?, o.meta().name.as_deref()?)))
            .collect();
        ctx.jwks
            .retain(|namespace, name| names.contains(&(namespace, name)));
        if let Some(delivery) = &ctx.delivery {
            delivery
                .tokens
                .retain(|ns, name| names.contains(&(ns, name)));
        }
        secret_watches.retain(|namespace| names.iter().any(|(ns, _)| *ns == namespace));
        let bundles: std::collections::HashSet<(&str, &str, &str)> = live
            .iter()
            .filter_map(|o| {
                let client = o.0.as_ref().ok()?;
                let bundle = client.spec.tls.as_ref()?.ca_bundle_secret_ref.as_ref()?;
                let namespace = client.metadata.namespace.as_deref()?;
                Some((namespace, bundle.name.as_str(), bundle.key.as_str()))
            })
            .collect();
        secret_watches
            .ca_bundles
            .retain(|namespace, name, key| bundles.contains(&(namespace, name, key)));
        // The maps keyed by what users write, every 5 minutes: clearing the
        // CA-bundle clients drops their connections.
        if round % 10 == 9 {
            ctx.prune_per_input_maps();
        }
    }
}
