//! The public JWK Sets the admin server publishes at
//! /jwks/{namespace}/{name}: what the reconciler has just published (so a
//! server fetching the jwks_uri during the very first token request finds
//! the key), else `status.publicJwks` from the watch cache.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::SmartBackendClient;

#[derive(Default)]
pub struct JwksDirectory {
    recent: RwLock<HashMap<(String, String), String>>,
    stores: RwLock<Vec<Store<DynamicObject>>>,
}

impl JwksDirectory {
    pub fn publish(&self, namespace: &str, name: &str, jwks_json: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        if recent.get(&key).map(String::as_str) != Some(jwks_json) {
            recent.insert(key, jwks_json.to_string());
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.recent
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Keeps the recently published JWKS of the clients `keep` accepts.
    pub(crate) fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.recent
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(namespace, name), _| keep(namespace, name));
    }

    pub(crate) fn set_stores(&self, stores: Vec<Store<DynamicObject>>) {
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(jwks) = self
            .recent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(jwks.clone());
        }
        let resource = kube::core::ApiResource::erase::<SmartBackendClient>(&());
        let reference = ObjectRef::new_with(name, resource).within(namespace);
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores.iter().find_map(|store| {
            let object = store.get(&reference)?;
            object
                .data
                .get("status")?
                .get("publicJwks")?
                .as_str()
                .map(str::to_string)
        })
    }
}
