//! The form in which the watches hold a SmartBackendClient.
//!
//! Typed, because a cached `DynamicObject` keeps the resource as a JSON
//! tree whose every object is a B-tree of boxed strings: several times the
//! memory of the typed resource, for every client, all the time
//! (BENCHMARKS.md). Read with only the metadata the operator uses, so that
//! `managedFields` (a tree as large as the resource itself, parsed on every
//! watch event otherwise) is skipped unparsed. And infallible to
//! deserialize, because a typed watch fails its whole list when one object
//! cannot be read: a resource whose spec or status the operator cannot
//! read is kept with its metadata and the reason, so that reconcile can say
//! so on that resource while the others carry on.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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

/// The metadata fields reconcile reads (identity, version, generation,
/// deletion, and the request annotations); serde skips the rest unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    deletion_timestamp: Option<Time>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Wire {
    metadata: WireMetadata,
    spec: Option<serde_json::Value>,
    status: Option<serde_json::Value>,
}

/// The operator's own annotations (`smartbackend.dev/...`), each value at
/// most [`MAX_ANNOTATION_VALUE`] bytes, are all it reads; every other
/// annotation (kubectl's whole copy of the resource, a tenant's megabyte)
/// would be kept for every client for as long as it exists.
pub const OWN_ANNOTATION_PREFIX: &str = "smartbackend.dev/";

/// A longer value of an own annotation is kept as its digest: a new value
/// still reads as new, and the cache stays small.
pub const MAX_ANNOTATION_VALUE: usize = 256;

fn own_annotations(all: BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.into_iter()
        .filter(|(key, _)| key.starts_with(OWN_ANNOTATION_PREFIX) && key.len() <= 253)
        .map(|(key, value)| {
            if value.len() <= MAX_ANNOTATION_VALUE {
                return (key, value);
            }
            let digest = crate::smart::secret::fingerprint(value.as_bytes());
            (key, format!("sha256:{digest}"))
        })
        .collect()
}

impl<'de> Deserialize<'de> for WatchedClient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Wire {
            metadata,
            spec,
            status,
        } = Wire::deserialize(deserializer)?;
        let annotations = metadata.annotations.map(own_annotations);
        let metadata = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            resource_version: metadata.resource_version,
            generation: metadata.generation,
            deletion_timestamp: metadata.deletion_timestamp,
            annotations,
            ..ObjectMeta::default()
        };
        let typed = spec
            .ok_or_else(|| "the resource has no spec".to_string())
            .and_then(|spec| serde_json::from_value(spec).map_err(|e| format!("spec: {e}")))
            .and_then(|spec| {
                let status = status
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| format!("status: {e}"))?;
                Ok((spec, status))
            });
        Ok(Self(match typed {
            Ok((spec, status)) => Ok(SmartBackendClient {
                metadata,
                spec,
                status,
            }),
            Err(error) => Err(Unreadable { metadata, error }),
        }))
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

        // Only the metadata reconcile reads is kept.
        let applied = json!({
            "metadata": {"name": "c", "namespace": "n", "uid": "u3", "generation": 2,
                "resourceVersion": "7",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "a": "b",
                    "smartbackend.dev/refresh-requested-at": "1",
                    "smartbackend.dev/rotate-key": "x".repeat(1_000_000)},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"fhirBaseUrl": "https://ehr.example.org/fhir", "clientId": "c", "scopes": ["system/*.rs"]}
        });
        let watched: WatchedClient = serde_json::from_value(applied).unwrap();
        let meta = watched.meta();
        assert_eq!(meta.generation, Some(2));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert!(meta.managed_fields.is_none());
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [
                "smartbackend.dev/refresh-requested-at",
                "smartbackend.dev/rotate-key"
            ],
            "only the operator's own annotations are kept"
        );
        assert_eq!(annotations["smartbackend.dev/refresh-requested-at"], "1");
        let rotate = &annotations["smartbackend.dev/rotate-key"];
        assert!(
            rotate.starts_with("sha256:") && rotate.len() < 64,
            "{rotate}"
        );
    }
}
