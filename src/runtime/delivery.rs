//! Binding the token-delivery listener at start, so that a wrong address
//! fails the start (like the admin port) instead of every CSI mount later.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::LeaderElection;
use crate::token_delivery::{Delivery, DeliverySettings};

pub(super) async fn bind(
    wanted: &DeliverySettings,
    leader: Option<&LeaderElection>,
) -> anyhow::Result<(Arc<Delivery>, TcpListener)> {
    let listener = TcpListener::bind(wanted.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (--csi-listen-addr): {e}",
            wanted.listen
        )
    })?;
    let port = listener.local_addr()?.port();
    let mut settings = wanted.clone();
    settings.identity = leader.map(|l| l.identity.clone());
    Ok((Delivery::new(settings, port)?, listener))
}
