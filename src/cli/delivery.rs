//! The `run` flags for token delivery to the CSI driver's node plugins.

use std::net::SocketAddr;

use clap::Args;

use crate::token_delivery::DeliverySettings;

/// The default audience of the pods' ServiceAccount tokens that node
/// plugins present (the CSIDriver object's tokenRequests).
pub const DEFAULT_AUDIENCE: &str = "smartbackend.dev";

#[derive(Args, Debug, Clone)]
pub struct DeliveryArgs {
    /// Serve tokens to the CSI driver's node plugins on this address (TLS,
    /// with a certificate made at start), for clients whose
    /// spec.token.delivery includes CSI. Unset: CSI delivery is refused.
    #[arg(long, env = "SBO_CSI_LISTEN_ADDR")]
    pub csi_listen_addr: Option<SocketAddr>,
    /// The address node plugins reach this replica at (its pod IP); the
    /// certificate names it, and the leader announces it on the Lease.
    #[arg(long, env = "POD_IP", default_value = "127.0.0.1")]
    pub csi_advertise_host: String,
    /// The audience of the pods' ServiceAccount tokens that plugins
    /// present; the CSIDriver object's tokenRequests must name it.
    #[arg(long, env = "SBO_CSI_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub csi_audience: String,
}

impl DeliveryArgs {
    pub fn settings(&self, lease_namespace: &str, lease_name: &str) -> Option<DeliverySettings> {
        self.csi_listen_addr.map(|listen| DeliverySettings {
            listen,
            advertise_host: self.csi_advertise_host.clone(),
            audience: self.csi_audience.clone(),
            lease_namespace: lease_namespace.to_string(),
            lease_name: lease_name.to_string(),
            identity: None,
        })
    }
}
