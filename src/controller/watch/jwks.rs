//! The public JWK Sets the admin server publishes: each client's at
//! /jwks/{namespace}/{name}, and shared sets at
//! /jwks/{namespace}/sets/{set}, the union of the keys of every client in
//! that namespace whose `spec.signing.jwksSet` names the set (for EHRs that
//! register one JWKS URL per application). A client's entry is what the
//! reconciler has just published (so a server fetching the jwks_uri during
//! the very first token request finds the key), else `status.publicJwks`
//! as the watch last showed it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::controller::model::settings::Settings;
use crate::controller::watch::scope::watches;
use crate::controller::watch::watched::WatchedClient;

type Key = (String, String);

/// One client's published JWK Set, and the shared set it also goes into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub jwks: String,
    pub set: Option<String>,
}

#[derive(Default)]
pub struct JwksDirectory {
    /// Published by this replica's reconciler (leader only).
    recent: RwLock<HashMap<Key, Published>>,
    /// From every resource's status, kept by the watch.
    watched: RwLock<HashMap<Key, Published>>,
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl JwksDirectory {
    pub fn publish(&self, namespace: &str, name: &str, published: Published) {
        let key = (namespace.to_string(), name.to_string());
        let mut recent = write(&self.recent);
        if recent.get(&key) != Some(&published) {
            recent.insert(key, published);
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        write(&self.recent).remove(&(namespace.to_string(), name.to_string()));
    }

    /// Keeps the recently published JWKS of the clients `keep` accepts.
    pub(crate) fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        write(&self.recent).retain(|(namespace, name), _| keep(namespace, name));
    }

    pub(crate) fn set_watched(&self, namespace: String, name: String, published: Published) {
        write(&self.watched).insert((namespace, name), published);
    }

    pub(crate) fn remove_watched(&self, client: &WatchedClient) {
        if let Some(namespace) = client.namespace() {
            write(&self.watched).remove(&(namespace, client.name_any()));
        }
    }

    /// After a (re)list of one watched scope (a namespace, or all when
    /// `None`): its entries become exactly `listed`.
    pub(crate) fn replace_watched(
        &self,
        scope: Option<&str>,
        listed: Vec<(String, String, Published)>,
    ) {
        let mut watched = write(&self.watched);
        watched.retain(|(namespace, _), _| scope.is_some_and(|s| s != namespace));
        watched.extend(
            listed
                .into_iter()
                .map(|(namespace, name, published)| ((namespace, name), published)),
        );
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        let recent = read(&self.recent).get(&key).map(|p| p.jwks.clone());
        recent.or_else(|| read(&self.watched).get(&key).map(|p| p.jwks.clone()))
    }

    /// The shared set `set` of `namespace`: every member's keys, once each
    /// (the first member by name wins a kid two members use for different
    /// keys). `None` when no client is in the set.
    pub fn get_set(&self, namespace: &str, set: &str) -> Option<String> {
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        let in_set =
            |((ns, _), p): &(&Key, &Published)| ns == namespace && p.set.as_deref() == Some(set);
        for ((_, name), published) in read(&self.watched).iter().filter(|e| in_set(e)) {
            members.insert(name.clone(), published.jwks.clone());
        }
        for ((_, name), published) in read(&self.recent).iter().filter(|e| in_set(e)) {
            members.insert(name.clone(), published.jwks.clone());
        }
        if members.is_empty() {
            return None;
        }
        Some(merge(members.values().map(String::as_str)))
    }
}

/// `{base}/jwks/{namespace}/{name}`, or the shared set's
/// `{base}/jwks/{namespace}/sets/{set}`, keeping any path in the base.
pub fn public_uri(base: &url::Url, namespace: &str, name: &str, set: Option<&str>) -> String {
    let base = base.as_str().trim_end_matches('/');
    match set {
        Some(set) => format!("{base}/jwks/{namespace}/sets/{set}"),
        None => format!("{base}/jwks/{namespace}/{name}"),
    }
}

/// One JWK Set holding the keys of several, each kid once.
pub fn merge<'a>(sets: impl Iterator<Item = &'a str>) -> String {
    let mut keys: Vec<Value> = Vec::new();
    for set in sets {
        let Ok(Value::Object(mut set)) = serde_json::from_str::<Value>(set) else {
            continue;
        };
        let Some(Value::Array(found)) = set.remove("keys") else {
            continue;
        };
        for key in found {
            let kid = key.get("kid").cloned();
            if kid.is_none() || !keys.iter().any(|k| k.get("kid") == kid.as_ref()) {
                keys.push(key);
            }
        }
    }
    serde_json::json!({ "keys": keys }).to_string()
}

/// Keeps the JWKS directory's copy of each client's `status.publicJwks` up
/// to date. Runs on every replica, leader or not; `ready` turns true after
/// the first full list.
pub async fn watch_for_jwks(
    client: Client,
    settings: Settings,
    jwks: Arc<JwksDirectory>,
    ready: Arc<AtomicBool>,
) {
    let watches = watches(&client, &settings);
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(watches.len()));
    let streams = watches.into_iter().map(|watch| {
        let scope = watch.scope;
        let (jwks, ready, remaining) = (jwks.clone(), ready.clone(), remaining.clone());
        let mut listed = false;
        // A (re)list is collected whole, then replaces the scope's entries.
        let mut relist: Vec<(String, String, Published)> = Vec::new();
        watcher(watch.api, watch.config)
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Init) => relist.clear(),
                    Ok(watcher::Event::InitApply(client)) => relist.extend(published_jwks(&client)),
                    Ok(watcher::Event::InitDone) => {
                        jwks.replace_watched(scope.as_deref(), std::mem::take(&mut relist));
                        if !listed {
                            listed = true;
                            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                                ready.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(client)) => match published_jwks(&client) {
                        Some((namespace, name, published)) => {
                            jwks.set_watched(namespace, name, published)
                        }
                        None => jwks.remove_watched(&client),
                    },
                    Ok(watcher::Event::Delete(client)) => jwks.remove_watched(&client),
                    Err(error) => tracing::warn!(
                        %error,
                        "watching SmartBackendClients for the JWKS endpoint failed; retrying with backoff"
                    ),
                }
                futures_util::future::ready(())
            })
    });
    futures_util::future::join_all(streams).await;
}

/// A client's namespace, name and published JWKS, if it has one.
fn published_jwks(client: &WatchedClient) -> Option<(String, String, Published)> {
    let client = client.0.as_ref().ok()?;
    let jwks = client.status.as_ref()?.public_jwks.clone()?;
    let set = client.spec.signing.jwks_set.clone();
    Some((
        client.namespace()?,
        client.name_any(),
        Published { jwks, set },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(kid: &str, set: Option<&str>) -> Published {
        Published {
            jwks: format!(r#"{{"keys":[{{"kty":"EC","kid":"{kid}"}}]}}"#),
            set: set.map(str::to_string),
        }
    }

    #[test]
    fn a_shared_set_holds_each_members_keys_once_and_only_its_namespaces() {
        let directory = JwksDirectory::default();
        directory.set_watched("a".into(), "one".into(), published("k1", Some("app")));
        directory.set_watched("a".into(), "two".into(), published("k2", Some("app")));
        directory.set_watched("a".into(), "alone".into(), published("k3", None));
        directory.set_watched("b".into(), "other".into(), published("k4", Some("app")));
        // Published by the leader before the status shows it.
        directory.publish("a", "three", published("k1", Some("app")));
        let set: Value = serde_json::from_str(&directory.get_set("a", "app").unwrap()).unwrap();
        let kids: Vec<&str> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["k1", "k2"]);
        assert_eq!(directory.get_set("a", "nothing"), None);
        assert!(directory.get("a", "alone").is_some());
    }

    #[test]
    fn the_jwks_uri_is_the_clients_or_its_shared_sets() {
        let base = url::Url::parse("https://jwks.example.org/ops/").unwrap();
        assert_eq!(
            super::public_uri(&base, "a", "c", None),
            "https://jwks.example.org/ops/jwks/a/c"
        );
        assert_eq!(
            super::public_uri(&base, "a", "c", Some("app")),
            "https://jwks.example.org/ops/jwks/a/sets/app"
        );
    }
}
