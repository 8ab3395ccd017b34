//! Sharing the operator between tenants: the reconcile workers per
//! namespace, and the token requests per server and namespace (with each
//! pair's circuit breaker).

pub mod servers;
pub mod workers;
