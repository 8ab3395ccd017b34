//! The CSI driver on the test node: the CSIDriver object, the node plugin
//! in this process (registered with the node's kubelet), and workload pods
//! that mount a token volume.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use smart_backend_operator::csi::{self, fetch::Leader, node::Plugin};
use smart_backend_operator::token_delivery::DeliverySettings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cluster::{repo_root, wait_for};
use super::node;

pub const AUDIENCE: &str = "smartbackend.dev";
pub const LEASE: &str = "sbo-csi";

/// The node's kubelet directory (`--root-dir`).
pub fn kubelet_dir() -> PathBuf {
    repo_root().join("target/control-plane/node/kubelet")
}

/// The operator's delivery settings for a test in `namespace`: on loopback,
/// announced on the Lease [`LEASE`] there.
pub fn delivery(namespace: &str) -> DeliverySettings {
    DeliverySettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise_host: "127.0.0.1".into(),
        audience: AUDIENCE.into(),
        lease_namespace: namespace.into(),
        lease_name: LEASE.into(),
        identity: None,
    }
}

/// Applies the CSIDriver object as the chart makes it.
pub async fn install_driver(client: &kube::Client) {
    let driver: CSIDriver = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": csi::DRIVER},
        "spec": {
            "attachRequired": false,
            "podInfoOnMount": true,
            "volumeLifecycleModes": ["Ephemeral"],
            "tokenRequests": [{"audience": AUDIENCE, "expirationSeconds": 3600}],
            "requiresRepublish": true,
            "fsGroupPolicy": "None"
        }
    }))
    .unwrap();
    Api::<CSIDriver>::all(client.clone())
        .patch(
            csi::DRIVER,
            &PatchParams::apply("e2e-tests").force(),
            &Patch::Apply(&driver),
        )
        .await
        .expect("apply the CSIDriver");
}

/// The node plugin, in this process, for the operator whose Lease is in
/// `namespace`.
pub struct NodePlugin {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl NodePlugin {
    /// Starts it and waits until the kubelet has registered it (the node's
    /// CSINode object lists the driver).
    pub async fn start(client: &kube::Client, namespace: &str) -> Self {
        let leader = Leader::new(client.clone(), namespace, LEASE, Duration::from_secs(5));
        let plugin = Arc::new(Plugin::new(
            node::NODE.into(),
            AUDIENCE.into(),
            Arc::new(leader),
        ));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            csi::serve(plugin, &kubelet_dir(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        let nodes: Api<CSINode> = Api::all(client.clone());
        wait_for(
            "the kubelet to register the CSI driver",
            Duration::from_secs(60),
            || async {
                let node = nodes.get_opt(node::NODE).await.ok().flatten()?;
                let names: Vec<String> = node.spec.drivers.iter().map(|d| d.name.clone()).collect();
                Some(names)
            },
            |names| names.iter().any(|n| n == csi::DRIVER),
        )
        .await;
        NodePlugin { stop, task }
    }

    /// Stops it: the registration socket goes, the kubelet deregisters it;
    /// the pods' volumes stay mounted.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A workload pod on the test node whose token volume is the CSI driver's
/// for `client`.
pub fn workload(name: &str, client: &str, service_account: &str, fhir: &str) -> Pod {
    node::workload_pod(
        name,
        service_account,
        fhir,
        json!({"csi": {"driver": csi::DRIVER, "readOnly": true, "volumeAttributes": {"client": client}}}),
    )
}

/// The token in a pod's volume, read on the host (this test runs as root).
pub fn token_on_host(pod: &Pod) -> Option<String> {
    let uid = pod.metadata.uid.as_deref()?;
    let path = kubelet_dir()
        .join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~csi/token/mount/access_token");
    std::fs::read_to_string(path).ok()
}

/// The pod's events' messages.
pub async fn pod_event_messages(client: &kube::Client, namespace: &str, pod: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().fields(&format!("involvedObject.name={pod}"));
    events
        .list(&params)
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.message).collect())
        .unwrap_or_default()
}
