//! `csi-node`: the CSI node plugin, run by the chart's DaemonSet on every
//! node (privileged: it mounts the pods' token volumes).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::delivery::DEFAULT_AUDIENCE;
use super::run::{LogFormat, duration, init_tracing, shutdown_signal};
use crate::csi::{self, fetch::Leader, node::Plugin};

#[derive(Args, Debug, Clone)]
pub struct CsiNodeArgs {
    /// This node's name (the chart sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubelet's root directory: the plugin's sockets go under its
    /// plugins/ and plugins_registry/, and the pods' volumes are there.
    #[arg(long, env = "SBO_KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// The namespace of the operator, whose leader Lease names where the
    /// leader serves tokens.
    #[arg(long, env = "SBO_OPERATOR_NAMESPACE")]
    pub operator_namespace: String,
    /// The operator's Lease.
    #[arg(long, env = "SBO_LEASE_NAME", default_value = "smart-backend-operator")]
    pub lease_name: String,
    /// The audience of the pods' ServiceAccount tokens (the CSIDriver
    /// object's tokenRequests; the operator's --csi-audience).
    #[arg(long, env = "SBO_CSI_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// How long one request to the leader may take.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    #[arg(long, env = "SBO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub async fn run(args: &CsiNodeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes API access ({e}): run in the cluster or set KUBECONFIG")
    })?;
    let leader = Arc::new(Leader::new(
        client,
        &args.operator_namespace,
        &args.lease_name,
        args.request_timeout,
    ));
    let plugin = Arc::new(Plugin::new(
        args.node_name.clone(),
        args.audience.clone(),
        leader,
    ));
    tracing::info!(node = args.node_name, kubelet_dir = %args.kubelet_dir.display(), "CSI node plugin {} starting", csi::DRIVER);
    csi::serve(plugin, &args.kubelet_dir, shutdown_signal()).await
}
