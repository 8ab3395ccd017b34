//! Which SmartBackendClients this operator handles: those in the watched
//! namespaces (or everywhere), and, with `--selector`, only those whose
//! labels match it. Two operators with disjoint selectors can share a
//! cluster, each with its own clients.

use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use crate::controller::model::settings::Settings;
use crate::controller::watch::watched::WatchedClient;

/// One watch of SmartBackendClients: a namespace (None: the whole cluster),
/// its API and the watch's settings (the selector).
pub(crate) struct ScopeWatch {
    pub scope: Option<String>,
    pub api: Api<WatchedClient>,
    pub config: watcher::Config,
}

/// The watches: one per named namespace, or one for the whole cluster,
/// each narrowed by the selector.
pub(crate) fn watches(client: &Client, settings: &Settings) -> Vec<ScopeWatch> {
    let scopes = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let config = match &settings.selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    scopes
        .into_iter()
        .map(|scope| ScopeWatch {
            api: match &scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            },
            scope,
            config: config.clone(),
        })
        .collect()
}

/// Asks the API server once whether the selector parses, so that a typo
/// stops the operator at start with the server's reason instead of a watch
/// that fails forever. Other errors are left to the watches, which retry
/// and report them.
pub async fn check_selector(client: &Client, settings: &Settings) -> anyhow::Result<()> {
    let Some(selector) = &settings.selector else {
        return Ok(());
    };
    let Some(first) = watches(client, settings).into_iter().next() else {
        return Ok(());
    };
    match first
        .api
        .list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 400 => Err(anyhow::anyhow!(
            "--selector {selector:?} is not a label selector the API server accepts ({}); use kubectl's -l syntax, e.g. team=billing or 'tier in (a,b)'",
            status.message
        )),
        _ => Ok(()),
    }
}
