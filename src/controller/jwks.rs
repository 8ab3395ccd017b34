//! The public JWK Sets the admin server publishes at
//! /jwks/{namespace}/{name}: what the reconciler has just published (so a
//! server fetching the jwks_uri during the very first token request finds
//! the key), else `status.publicJwks` as the watch last showed it.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::ResourceExt;

use super::WatchedClient;

type Key = (String, String);

#[derive(Default)]
pub struct JwksDirectory {
    /// Published by this replica's reconciler.
    recent: RwLock<HashMap<Key, String>>,
    /// From every resource's status, kept by the watch.
    watched: RwLock<HashMap<Key, String>>,
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl JwksDirectory {
    pub fn publish(&self, namespace: &str, name: &str, jwks_json: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut recent = write(&self.recent);
        if recent.get(&key).map(String::as_str) != Some(jwks_json) {
            recent.insert(key, jwks_json.to_string());
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        write(&self.recent).remove(&(namespace.to_string(), name.to_string()));
    }

    /// Keeps the recently published JWKS of the clients `keep` accepts.
    pub(crate) fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        write(&self.recent).retain(|(namespace, name), _| keep(namespace, name));
    }

    pub(crate) fn set_watched(&self, namespace: String, name: String, jwks_json: String) {
        write(&self.watched).insert((namespace, name), jwks_json);
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
        listed: Vec<(String, String, String)>,
    ) {
        let mut watched = write(&self.watched);
        watched.retain(|(namespace, _), _| scope.is_some_and(|s| s != namespace));
        watched.extend(
            listed
                .into_iter()
                .map(|(namespace, name, jwks)| ((namespace, name), jwks)),
        );
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        let read = |lock: &RwLock<HashMap<Key, String>>| {
            lock.read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()
        };
        read(&self.recent).or_else(|| read(&self.watched))
    }
}
