//! The controller: watches SmartBackendClients (and the Secrets the operator
//! owns) and keeps each client's token Secret fresh.
//!
//! `reconcile` runs named steps: validate the spec, check the token Secret
//! is ours, discover, resolve the key, then refresh the token when its time
//! has come. Each step records a condition; one status patch ends it.

mod conditions;
mod discovery_cache;
pub mod jwks;
mod keys;
mod reconcile;
pub mod schedule;
pub mod secrets;
mod token;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource};
use tokio::sync::Semaphore;

use crate::crd::{
    CLIENT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SmartBackendClient,
    SmartBackendClientStatus,
};
use crate::metrics::Metrics;
use crate::smart::{AccessToken, HttpClient, HttpPolicy};
use discovery_cache::DiscoveryCache;
pub use jwks::JwksDirectory;
pub use schedule::Timing;

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
        }
    }
}

/// A token that was obtained but could not be written yet: it is written
/// on the next attempt instead of minting another.
#[derive(Clone)]
pub(crate) struct PendingToken {
    pub token: AccessToken,
    pub issued_at: SystemTime,
    pub inputs_hash: String,
}

/// Per-client state this process keeps between reconciles. The watch cache
/// can lag behind the operator's own writes; these cannot.
#[derive(Clone, Default)]
pub(crate) struct ClientMemory {
    /// A token obtained but not yet written.
    pub pending: Option<PendingToken>,
    /// Expiry of the token last written, for the earliest-expiry metric.
    pub expires_at: Option<SystemTime>,
    /// The refresh-requested-at value last acted on.
    pub handled_refresh: Option<String>,
    /// Whether the last token attempt failed.
    pub last_attempt_failed: Option<bool>,
    /// The client's signing key, bound, with the fingerprint of the key
    /// bytes, algorithm and kid it was bound from.
    pub signing_key: Option<([u8; 32], crate::smart::SigningKey)>,
    /// The status this process last wrote, and when.
    pub written_status: Option<(Instant, SmartBackendClientStatus)>,
}

/// How long the status this process wrote is trusted over a watch cache
/// that does not show it yet. Longer lags mean someone else wrote status
/// since, and the cache wins.
const WATCH_LAG_TOLERANCE: Duration = Duration::from_secs(30);

impl ClientMemory {
    /// The status to compare against: the one this process last wrote while
    /// the watch cache has not caught up with it, else the cached one. A
    /// reconcile triggered by the operator's own Secret write otherwise sees
    /// the status from before its last write and writes the same change
    /// again.
    pub fn current_status(&mut self, cached: SmartBackendClientStatus) -> SmartBackendClientStatus {
        match self.written_status.take() {
            Some((at, written)) if at.elapsed() < WATCH_LAG_TOLERANCE && written != cached => {
                self.written_status = Some((at, written.clone()));
                written
            }
            _ => cached,
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
    server_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// What this process knows about each client (by uid) that the watch
    /// cache may not show yet.
    memory: Mutex<HashMap<String, ClientMemory>>,
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
            client,
            settings,
            metrics,
            jwks,
            http,
            http_with_ca: Mutex::new(HashMap::new()),
            reporter,
            server_limits: Mutex::new(HashMap::new()),
            memory: Mutex::new(HashMap::new()),
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

    /// Caps concurrent token requests to one authorization server, so that
    /// many clients due at once are spread out rather than fired together.
    pub(crate) fn server_limit(&self, authority: &str) -> Arc<Semaphore> {
        let mut limits = self.server_limits.lock().unwrap_or_else(|e| e.into_inner());
        limits
            .entry(authority.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.per_server_concurrency.max(1)))
            })
            .clone()
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

fn error_policy(_obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
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
    let resource = ApiResource::erase::<SmartBackendClient>(&());
    let shutdown = futures_util::future::FutureExt::shared(Box::pin(shutdown));
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes(&ctx.settings) {
        // Api<PartialObjectMeta<_>> makes metadata-only requests.
        let (clients, secrets): (Api<DynamicObject>, Api<PartialObjectMeta<Secret>>) = match &scope
        {
            Some(ns) => (
                Api::namespaced_with(ctx.client.clone(), ns, &resource),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (
                Api::all_with(ctx.client.clone(), &resource),
                Api::all(ctx.client.clone()),
            ),
        };
        // The cache keeps each resource without what reconcile never reads.
        let writer = reflector::store::Writer::new(resource.clone());
        let reader = writer.as_reader();
        stores.push(reader.clone());
        let resources = reflector(
            writer,
            watcher(clients, watcher::Config::default())
                .default_backoff()
                .modify(slim_for_reconcile),
        )
        .applied_objects();
        // Only the operator's own Secrets are watched, never all Secrets,
        // and only their metadata (see `secrets` above): the mapping needs
        // nothing else, and token and key bytes never pass through the watch.
        let own_secrets =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let secret_changes = watcher(secrets, own_secrets)
            .default_backoff()
            .touched_objects();
        let mapper_resource = resource.clone();
        let controller = Controller::for_stream_with(resources, reader, resource.clone())
            .watches_stream(secret_changes, move |secret: PartialObjectMeta<Secret>| {
                let client = secret.annotations().get(CLIENT_ANNOTATION)?.clone();
                let namespace = secret.meta().namespace.clone()?;
                Some(ObjectRef::new_with(&client, mapper_resource.clone()).within(&namespace))
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
async fn prune_forgotten_clients(ctx: Arc<Context>, stores: Vec<reflector::Store<DynamicObject>>) {
    for store in &stores {
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let live: Vec<Arc<DynamicObject>> = stores.iter().flat_map(|s| s.state()).collect();
        let uids: std::collections::HashSet<&str> = live
            .iter()
            .filter_map(|o| o.metadata.uid.as_deref())
            .collect();
        ctx.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| uids.contains(uid.as_str()));
        let names: std::collections::HashSet<(&str, &str)> = live
            .iter()
            .filter_map(|o| {
                Some((
                    o.metadata.namespace.as_deref()?,
                    o.metadata.name.as_deref()?,
                ))
            })
            .collect();
        ctx.jwks
            .retain(|namespace, name| names.contains(&(namespace, name)));
    }
}

/// Drops what reconcile never reads from a cached resource: managedFields
/// (server-side apply makes them a large part of each object) and the
/// annotation client-side `kubectl apply` keeps a whole copy in.
fn slim_for_reconcile(object: &mut DynamicObject) {
    object.metadata.managed_fields = None;
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Keeps only what the JWKS endpoint serves: the name and status.publicJwks.
fn slim_for_jwks(object: &mut DynamicObject) {
    let jwks = object
        .data
        .get("status")
        .and_then(|s| s.get("publicJwks"))
        .cloned();
    object.metadata = kube::api::ObjectMeta {
        name: object.metadata.name.take(),
        namespace: object.metadata.namespace.take(),
        ..Default::default()
    };
    object.data = match jwks {
        Some(jwks) => serde_json::json!({"status": {"publicJwks": jwks}}),
        None => serde_json::Value::Null,
    };
}

/// Keeps a read-only cache of SmartBackendClients for the JWKS endpoint.
/// Runs on every replica, leader or not; `ready` turns true after the
/// first full list.
pub async fn watch_for_jwks(
    client: Client,
    settings: Settings,
    jwks: Arc<JwksDirectory>,
    ready: Arc<AtomicBool>,
) {
    let resource = ApiResource::erase::<SmartBackendClient>(&());
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for scope in scopes(&settings) {
        let api: Api<DynamicObject> = match &scope {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let writer = kube::runtime::reflector::store::Writer::new(resource.clone());
        stores.push(writer.as_reader());
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(slim_for_jwks),
        )
        .for_each(|_| futures_util::future::ready(()));
        streams.push(stream);
    }
    jwks.set_stores(stores.clone());
    let readiness = async move {
        for store in stores {
            let _ = store.wait_until_ready().await;
        }
        ready.store(true, Ordering::SeqCst);
    };
    tokio::join!(futures_util::future::join_all(streams), readiness);
}

use kube::ResourceExt;
