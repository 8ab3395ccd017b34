//! The object being reconciled, as the steps and decisions read it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::SmartBackendClient;

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

/// This client as the owner (and controller) of the Secrets made for it.
pub fn owner_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: SmartBackendClient::api_version(&()).into_owned(),
        kind: SmartBackendClient::kind(&()).into_owned(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
