//! Which SmartBackendClients this operator handles: those in the watched
//! namespaces (or everywhere), and, with `--selector`, only those whose
//! labels match it. Two operators with disjoint selectors can share a
//! cluster, each with its own clients.

use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use super::{Settings, WatchedClient};

/// The namespaces to watch: each named one, or the whole cluster.
pub(crate) fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    }
}

/// The watch of SmartBackendClients in one scope, narrowed by the selector.
pub(crate) fn clients(
    client: &Client,
    settings: &Settings,
    scope: Option<&str>,
) -> (Api<WatchedClient>, watcher::Config) {
    let api = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default();
    let config = match &settings.selector {
        Some(selector) => config.labels(selector),
        None => config,
    };
    (api, config)
}

/// Asks the API server once whether the selector parses, so that a typo
/// stops the operator at start with the server's reason instead of a watch
/// that fails forever. Other errors are left to the watches, which retry
/// and report them.
pub async fn check_selector(client: &Client, settings: &Settings) -> anyhow::Result<()> {
    let Some(selector) = &settings.selector else {
        return Ok(());
    };
    let scope = scopes(settings).into_iter().next().flatten();
    let (api, _) = clients(client, settings, scope.as_deref());
    match api
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
