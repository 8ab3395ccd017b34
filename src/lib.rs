//! smart-backend-operator: SMART on FHIR Backend Services access tokens for
//! Kubernetes workloads.
//!
//! [`smart`] is the protocol (discovery, keys, client assertions, token
//! exchange) with no Kubernetes in it; [`cli`] holds the one-shot commands
//! that `main.rs` wires to the command line.

pub mod admin;
pub mod checked_time;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod csi;
pub mod metrics;
pub mod runtime;
pub mod sandbox;
pub mod smart;
pub mod token_delivery;
