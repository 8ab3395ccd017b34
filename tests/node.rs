//! On the test node (`control-plane node up`): a workload pod mounts the
//! token Secret as a volume, calls a FHIR server with the token it reads
//! from the file, and after a refresh calls it with the new token, without
//! a restart. The kubelet, containerd, runc and the CNI bridge are real;
//! the FHIR server is the sandbox on this host's address on the pod
//! network.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;
use support::cluster::wait_for;
use support::node;
use support::operator::{Harness, WAIT};

const SCOPE: &str = "system/Patient.rs";
/// The operator's default refresh lead: a new token is written this long
/// before the old one expires, so the file must change within it.
const REFRESH_LEAD: Duration = Duration::from_secs(150);
/// How long the pod runs before the refresh.
const SETTLE: Duration = Duration::from_secs(15);

fn workload_pod(fhir: &str) -> Pod {
    node::workload_pod(
        "workload",
        "default",
        fhir,
        json!({"secret": {"secretName": "app-token"}}),
    )
}

async fn logs(pods: &Api<Pod>) -> Option<String> {
    pods.logs("workload", &LogParams::default()).await.ok()
}

#[tokio::test]
async fn a_workload_pod_reads_each_new_token_from_its_mounted_secret_without_a_restart() {
    let h = Harness::with("node-workload", |settings| {
        settings
            .http
            .destinations
            .allow_hosts
            .push("10.88.0.1".into());
    })
    .await;
    let ip = node::host_ip(&h.ns.client).await;
    assert_eq!(
        ip, "10.88.0.1",
        "the node's address is this host's on the pod network"
    );
    // The sandbox on this host's pod-network address, reachable from pods.
    let base = node::sandbox(&ip, "app", SCOPE, h.jwks_uri("app")).await;

    h.apply(
        "app",
        json!({"fhirBaseUrl": format!("{base}/fhir"), "clientId": "app", "scopes": [SCOPE]}),
    )
    .await;
    h.wait_ready("app").await;
    let first = Harness::value(&h.wait_secret("app-token").await, "access_token");

    let pods: Api<Pod> = h.ns.api();
    pods.create(
        &PostParams::default(),
        &workload_pod(&format!("{base}/fhir")),
    )
    .await
    .expect("create the workload pod");
    let seen = |hash: String| move |logs: &String| logs.contains(&format!("{hash} ok"));
    wait_for(
        "the pod to call the FHIR server with the first token",
        WAIT * 2,
        || logs(&pods),
        seen(node::short_hash(&first)),
    )
    .await;

    // A refresh once the pod has settled (a pod's first seconds bring extra
    // kubelet syncs that would hide the usual delay): the Secret changes in
    // place and the pod reads the new file.
    tokio::time::sleep(SETTLE).await;
    h.annotate("app", "smartbackend.dev/refresh-requested-at", "node-test")
        .await;
    let secrets = h.secrets();
    let second = wait_for(
        "a new token in the Secret",
        WAIT,
        || async {
            let secret = secrets.get_opt("app-token").await.ok().flatten()?;
            Some(Harness::value(&secret, "access_token"))
        },
        |token| *token != first,
    )
    .await;
    let written = Instant::now();
    let logs_now = wait_for(
        "the pod to call the FHIR server with the new token",
        REFRESH_LEAD,
        || logs(&pods),
        seen(node::short_hash(&second)),
    )
    .await;
    eprintln!(
        "Secret write -> file change in the pod (seen by its next call): {:.0?}",
        written.elapsed()
    );
    assert!(!logs_now.contains("refused"), "{logs_now}");
    let pod = pods.get("workload").await.expect("pod");
    let status = pod.status.expect("pod status");
    let container = &status.container_statuses.expect("container status")[0];
    assert_eq!(container.restart_count, 0, "the pod was not restarted");
    assert!(
        container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );
}
