//! The CSI node plugin (`csi-node`): one process per node, registered with
//! the kubelet through its plugin registry, serving inline ephemeral
//! volumes that hold a SmartBackendClient's token on a tmpfs. Tokens come
//! from the operator's leader ([`fetch`]), for the pod whose ServiceAccount
//! token the kubelet hands over; nothing is written to the API server.

pub mod authority;
pub mod fetch;
pub mod files;
pub mod node;
pub mod refresh;
pub mod registration;
pub mod volume;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod csi {
        tonic::include_proto!("csi.v1");
    }
    pub mod registration {
        tonic::include_proto!("pluginregistration");
    }
}

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// The driver's name: the CSIDriver object's, and what pods name.
pub const DRIVER: &str = "smartbackend.dev";

/// The two sockets under the kubelet's directory.
pub fn sockets(kubelet_dir: &Path) -> (PathBuf, PathBuf) {
    (
        kubelet_dir.join("plugins").join(DRIVER).join("csi.sock"),
        kubelet_dir
            .join("plugins_registry")
            .join(format!("{DRIVER}-reg.sock")),
    )
}

fn listen(path: &Path) -> anyhow::Result<UnixListenerStream> {
    Ok(UnixListenerStream::new(bound(path)?))
}

fn bound(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    // A socket left by an earlier run.
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|e| anyhow::anyhow!("listening on {}: {e}", path.display()))
}

/// Serves the CSI services and the registration until `shutdown`; the
/// registration socket is removed first, so the kubelet stops calling.
pub async fn serve(
    plugin: Arc<node::Plugin>,
    kubelet_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (csi_socket, registration_socket) = sockets(kubelet_dir);
    let csi_incoming = listen(&csi_socket)?;
    // The registration server listens beside the CSI socket; the kubelet
    // reaches it through the relay on the registry socket.
    let registration_server = csi_socket.with_file_name("registration.sock");
    let registration_incoming = listen(&registration_server)?;
    let relay = authority::relay(bound(&registration_socket)?, registration_server);
    let relay = tokio::spawn(relay);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let csi = tonic::transport::Server::builder()
        .add_service(proto::csi::identity_server::IdentityServer::new(
            plugin.clone(),
        ))
        .add_service(proto::csi::node_server::NodeServer::new(plugin))
        .serve_with_incoming_shutdown(csi_incoming, wait(stopped.clone()));
    let registrar = registration::Registrar {
        endpoint: csi_socket.display().to_string(),
    };
    let registration = tonic::transport::Server::builder()
        .add_service(proto::registration::registration_server::RegistrationServer::new(registrar))
        .serve_with_incoming_shutdown(registration_incoming, wait(stopped));
    tracing::info!(socket = %registration_socket.display(), "waiting for the kubelet to register the plugin");
    let stopper = async move {
        shutdown.await;
        relay.abort();
        let _ = std::fs::remove_file(&registration_socket);
        let _ = stop.send(true);
    };
    let (csi, registration, ()) = tokio::join!(csi, registration, stopper);
    csi?;
    registration?;
    Ok(())
}
