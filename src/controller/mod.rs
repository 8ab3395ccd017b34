//! The controller: watches SmartBackendClients (and the Secrets the operator
//! owns) and keeps each client's token Secret fresh.
//!
//! `reconcile` runs named steps: validate the spec, check the token Secret
//! is ours, discover, resolve the key, then refresh the token when its time
//! has come. Each step records a condition; one status patch ends it.

mod clock;
mod conditions;
mod discover;
mod discovery_cache;
mod draft;
mod exchange;
pub mod jwks;
mod keys;
mod memory;
pub mod reason;
mod reconcile;
pub mod schedule;
mod scopes;
pub mod secrets;
mod servers;
mod token;
pub mod validate;
mod wait;
mod watched;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::crd::{CLIENT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::metrics::Metrics;
use crate::smart::{HttpClient, HttpPolicy};
use discovery_cache::DiscoveryCache;
pub use jwks::{JwksDirectory, Published, watch_for_jwks};
pub(crate) use memory::{ClientMemory, KnownKeySecret, KnownTokenSecret, PendingToken, Settled};
pub use schedule::Timing;
pub use watched::WatchedClient;

/// Operator-wide settings, from the `run` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub http: HttpPolicy,
    pub timing: Timing,
    pub discovery_ttl: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Token requests in flight at once per authorization server.
    pub per_server_concurrency: usize,
    /// Identifies this replica in events.
    pub instance: String,
    pub clocks: Clocks,
    /// Where EHRs reach the operator's `/jwks/` (an Ingress), for
    /// `status.jwksUri`; unset when it is not exposed.
    pub jwks_public_url: Option<url::Url>,
}

/// How the operator deals with clocks that disagree.
#[derive(Clone, Debug)]
pub struct Clocks {
    /// `iat` is set this far in the past (`exp - iat` stays at most 300 s).
    pub assertion_backdate: Duration,
    /// A server's `Date` further than this from the local clock is
    /// reported (`ClockSkew`).
    pub skew_warning: Duration,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            assertion_backdate: crate::smart::assertion::DEFAULT_BACKDATE,
            skew_warning: Duration::from_secs(10),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            http: HttpPolicy::default(),
            timing: Timing::default(),
            discovery_ttl: Duration::from_secs(600),
            concurrency: 16,
            per_server_concurrency: 4,
            instance: "smart-backend-operator".into(),
            clocks: Clocks::default(),
            jwks_public_url: None,
        }
    }
}

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
    servers: servers::Servers,
    /// What this process knows about each client (by uid) that the watch
    /// cache may not show yet.
    memory: Mutex<HashMap<String, ClientMemory>>,
    /// The metadata (resource versions) of the Secrets the operator
    /// manages, one store per watched scope.
    own_secrets: RwLock<Vec<reflector::Store<PartialObjectMeta<Secret>>>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        jwks: Arc<JwksDirectory>,
    ) -> Result<Self, crate::smart::HttpError> {
        let http = HttpClient::new(settings.http.clone())?;
        let reporter = Reporter {
            controller: "smart-backend-operator".into(),
            instance: Some(settings.instance.clone()),
        };
        Ok(Self {
            discovery: DiscoveryCache::new(settings.discovery_ttl),
            servers: servers::Servers::new(settings.per_server_concurrency),
            client,
            settings,
            metrics,
            jwks,
            http,
            http_with_ca: Mutex::new(HashMap::new()),
            reporter,
            memory: Mutex::new(HashMap::new()),
            own_secrets: RwLock::new(Vec::new()),
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
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.values().filter_map(|m| m.expires_at).min()
    }

    /// Reads or updates what this process remembers about one client.
    pub(crate) fn remember<R>(&self, uid: &str, f: impl FnOnce(&mut ClientMemory) -> R) -> R {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(memory.entry(uid.to_string()).or_default())
    }

    /// The resource version of a Secret the operator manages, as its watch
    /// last showed it.
    pub(crate) fn own_secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        let reference = ObjectRef::new(name).within(namespace);
        let stores = self.own_secrets.read().unwrap_or_else(|e| e.into_inner());
        stores
            .iter()
            .find_map(|store| store.get(&reference)?.metadata.resource_version.clone())
    }

    /// Forgets what this replica learned while leading: per-client memory
    /// and the JWKS it published ahead of the status. Called whenever
    /// leadership is gained or lost, so that no state outlives a term.
    pub fn forget_leader_state(&self) {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.jwks.retain(|_, _| false);
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
        self.discovery
            .prune(self.settings.discovery_ttl + Duration::from_secs(3600));
        self.metrics
            .discovery_cache_entries
            .set(self.discovery.len() as i64);
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

/// The object being reconciled, as the steps need it.
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub owner: OwnerReference,
    pub annotations: BTreeMap<String, String>,
    pub status_kid: Option<&'a str>,
    pub handled_key_regeneration: Option<&'a str>,
}

impl Target<'_> {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
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

fn error_policy(_obj: Arc<WatchedClient>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.category());
    tracing::warn!(error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The namespaces to watch: each named one, or the whole cluster.
pub(crate) fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    }
}

/// Runs the controllers until `shutdown` completes (or the future is
/// dropped, which stops every write at once).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures_util::future::FutureExt::shared(Box::pin(shutdown));
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    let mut secret_stores = Vec::new();
    for scope in scopes(&ctx.settings) {
        // Api<PartialObjectMeta<_>> makes metadata-only requests.
        let (clients, secrets): (Api<WatchedClient>, Api<PartialObjectMeta<Secret>>) = match &scope
        {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
        // The cache keeps only what reconcile reads (see `watched`).
        let writer = reflector::store::Writer::default();
        let reader = writer.as_reader();
        stores.push(reader.clone());
        let resources = reflector(
            writer,
            watcher(clients, watcher::Config::default()).default_backoff(),
        )
        .applied_objects();
        // Only the operator's own Secrets are watched, never all Secrets,
        // and only their metadata, of which only the resource version and
        // the owning client are kept: token and key bytes never pass
        // through the watch.
        let own_secrets =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let secret_writer = reflector::store::Writer::default();
        secret_stores.push(secret_writer.as_reader());
        let secret_changes = reflector(
            secret_writer,
            watcher(secrets, own_secrets)
                .default_backoff()
                .modify(slim_secret_metadata),
        )
        .touched_objects();
        let controller = Controller::for_stream(resources, reader)
            .watches_stream(secret_changes, |secret: PartialObjectMeta<Secret>| {
                let client = secret.annotations().get(CLIENT_ANNOTATION)?;
                let namespace = secret.meta().namespace.as_deref()?;
                Some(ObjectRef::new(client).within(namespace))
            })
            .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
            .graceful_shutdown_on(shutdown.clone());
        let ctx = ctx.clone();
        controllers.push(async move {
            controller
                .run(reconcile::reconcile, error_policy, ctx)
                .for_each(|_| futures_util::future::ready(()))
                .await
        });
    }
    *ctx.own_secrets.write().unwrap_or_else(|e| e.into_inner()) = secret_stores;
    let prune = prune_forgotten_clients(ctx.clone(), stores);
    tokio::select! {
        _ = futures_util::future::join_all(controllers) => {}
        _ = prune => {}
    }
}

/// How often memory of deleted clients is dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);

/// Drops per-client memory and published JWKS of clients that no longer
/// exist. A deleted resource without finalizers is never reconciled again,
/// so nothing else would let go of them.
async fn prune_forgotten_clients(ctx: Arc<Context>, stores: Vec<reflector::Store<WatchedClient>>) {
    for store in &stores {
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let live: Vec<Arc<WatchedClient>> = stores.iter().flat_map(|s| s.state()).collect();
        let uids: std::collections::HashSet<&str> = live
            .iter()
            .filter_map(|o| o.meta().uid.as_deref())
            .collect();
        ctx.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| uids.contains(uid.as_str()));
        let names: std::collections::HashSet<(&str, &str)> = live
            .iter()
            .filter_map(|o| Some((o.meta().namespace.as_deref()?, o.meta().name.as_deref()?)))
            .collect();
        ctx.jwks
            .retain(|namespace, name| names.contains(&(namespace, name)));
        ctx.prune_per_input_maps();
    }
}

/// Keeps what the controller reads from its own Secrets' metadata: where
/// they are, their version, and the client they belong to.
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
