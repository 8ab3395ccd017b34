//! What the controller watches and caches: SmartBackendClients (in the
//! slim form reconcile reads), the operator's own Secrets, CA bundles, the
//! published JWK Sets and the servers' metadata.

pub(crate) mod ca_bundles;
pub(crate) mod discovery_cache;
pub mod jwks;
pub(crate) mod own_secrets;
pub(crate) mod scope;
pub(crate) mod tasks;
pub(crate) mod watched;
