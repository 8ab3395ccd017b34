//! The form in which the watches hold a SmartBackendClient.
//!
//! Typed, because a cached `DynamicObject` keeps the resource as a JSON
//! tree whose every object is a B-tree of boxed strings: several times the
//! memory of the typed resource, for every client, all the time
//! (BENCHMARKS.md). And infallible to deserialize, because a typed watch
//! fails its whole list when one object cannot be read: a resource the
//! operator cannot read is kept with its metadata and the reason, so that
//! reconcile can say so on that resource while the others carry on.

use std::borrow::Cow;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Deserializer};

use crate::crd::SmartBackendClient;

/// A resource the operator cannot read as a SmartBackendClient.
#[derive(Clone, Debug)]
pub struct Unreadable {
    pub metadata: ObjectMeta,
    /// What serde said, without the object's content.
    pub error: String,
}

#[derive(Clone, Debug)]
pub struct WatchedClient(pub Result<SmartBackendClient, Unreadable>);

impl<'de> Deserialize<'de> for WatchedClient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match SmartBackendClient::deserialize(&value) {
            Ok(client) => Ok(Self(Ok(client))),
            Err(error) => {
                // Without readable metadata there is nothing to report on;
                // the API server never sends such an object.
                let metadata = value
                    .get("metadata")
                    .map(ObjectMeta::deserialize)
                    .transpose()
                    .map_err(serde::de::Error::custom)?
                    .unwrap_or_default();
                Ok(Self(Err(Unreadable {
                    metadata,
                    error: error.to_string(),
                })))
            }
        }
    }
}

impl Resource for WatchedClient {
    type DynamicType = ();
    type Scope = <SmartBackendClient as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        SmartBackendClient::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        SmartBackendClient::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        SmartBackendClient::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        SmartBackendClient::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(client) => &client.metadata,
            Err(unreadable) => &unreadable.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(client) => &mut client.metadata,
            Err(unreadable) => &mut unreadable.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_readable_resource_is_typed_and_an_unreadable_one_keeps_its_metadata() {
        let good = json!({
            "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
            "metadata": {"name": "a", "namespace": "n", "uid": "u1"},
            "spec": {"fhirBaseUrl": "https://ehr.example.org/fhir", "clientId": "c", "scopes": ["system/*.rs"]}
        });
        let watched: WatchedClient = serde_json::from_value(good).unwrap();
        let client = watched.0.expect("readable");
        assert_eq!(client.spec.client_id, "c");

        let bad = json!({
            "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
            "metadata": {"name": "b", "namespace": "n", "uid": "u2"},
            "spec": {"fhirBaseUrl": 42}
        });
        let watched: WatchedClient = serde_json::from_value(bad).unwrap();
        let unreadable = watched.0.expect_err("unreadable");
        assert_eq!(unreadable.metadata.name.as_deref(), Some("b"));
        assert!(
            unreadable.error.contains("invalid type"),
            "{}",
            unreadable.error
        );

        let no_metadata = json!({"metadata": 7, "spec": {}});
        assert!(serde_json::from_value::<WatchedClient>(no_metadata).is_err());
    }
}
