//! The object being reconciled, as the steps and decisions read it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

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
