//! On the test node (`control-plane node up`): the CSI driver delivers a
//! SmartBackendClient's token into a pod's memory. The kubelet, containerd
//! and runc are real; the node plugin runs in this process (as root, as the
//! chart's privileged DaemonSet does) and registers with the kubelet
//! through its plugin registry. Each test has the node's one driver
//! registration to itself.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::json;
use support::cluster::wait_for;
use support::csi::{self, NodePlugin};
use support::node;
use support::operator::{Harness, WAIT};

const SCOPE: &str = "system/Patient.rs";
/// The kubelet republishes a volume about once per sync period (1 minute);
/// a refresh the leader made before its plan reaches the pod then.
const REPUBLISH: Duration = Duration::from_secs(150);

/// One driver registration per node: the tests take turns.
static NODE_PLUGIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn logs(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.logs(name, &LogParams::default()).await.ok()
}

fn seen(hash: String) -> impl Fn(&String) -> bool {
    move |logs: &String| logs.contains(&format!("{hash} ok"))
}

#[tokio::test]
async fn a_pod_reads_its_token_from_memory_and_each_new_one_without_a_restart() {
    let _turn = NODE_PLUGIN.lock().await;
    let mut h = Harness::with("csi-pod", |_| {}).await;
    let ns = h.ns.name.clone();
    let mut settings = support::operator::test_settings(&ns);
    settings
        .http
        .destinations
        .allow_hosts
        .push("10.88.0.1".into());
    settings.delivery = Some(csi::delivery(&ns));
    h.restart_in_place(settings.clone()).await;
    let client = h.ns.client.clone();
    csi::install_driver(&client).await;
    let plugin = NodePlugin::start(&client, &ns).await;

    let ip = node::host_ip(&client).await;
    let base = node::sandbox(&ip, "app", SCOPE, h.jwks_uri("app")).await;
    let fhir = format!("{base}/fhir");
    for sa in ["web", "batch"] {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
        h.ns.api::<ServiceAccount>()
            .create(&PostParams::default(), &account)
            .await
            .expect("create a service account");
    }
    h.apply(
        "app",
        json!({
            "fhirBaseUrl": fhir, "clientId": "app", "scopes": [SCOPE],
            "token": {"delivery": "CSI", "consumers": ["web"]}
        }),
    )
    .await;
    h.wait_ready("app").await;
    assert!(
        h.secret("app-token").await.is_none(),
        "CSI delivery writes no token Secret"
    );

    let pods: Api<Pod> = h.ns.api();
    pods.create(
        &PostParams::default(),
        &csi::workload("web", "app", "web", &fhir),
    )
    .await
    .expect("create the workload pod");
    let first_logs = wait_for(
        "the pod to call the FHIR server with the token from its volume",
        WAIT * 2,
        || logs(&pods, "web"),
        |l| l.contains(" ok"),
    )
    .await;
    let pod = pods.get("web").await.expect("pod");
    let first = csi::token_on_host(&pod).expect("the token in the pod's volume");
    assert!(
        first_logs.contains(&format!("{} ok", node::short_hash(&first))),
        "{first_logs}"
    );

    // No Secret anywhere in the cluster holds the token.
    let secrets: Api<Secret> = Api::all(client.clone());
    for secret in secrets
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
    {
        for (key, value) in secret.data.unwrap_or_default() {
            let text = String::from_utf8_lossy(&value.0);
            assert!(
                !text.contains(&first),
                "Secret {}/{} key {key} holds the token",
                secret.metadata.namespace.unwrap_or_default(),
                secret.metadata.name.unwrap_or_default()
            );
        }
    }

    // A pod of another service account, and one of another namespace
    // naming the same client, stay un-started with an event that says why.
    pods.create(
        &PostParams::default(),
        &csi::workload("batch", "app", "batch", &fhir),
    )
    .await
    .expect("create the batch pod");
    let other = support::cluster::TestNamespace::new("csi-other").await;
    let other_pods: Api<Pod> = other.api();
    other_pods
        .create(
            &PostParams::default(),
            &csi::workload("stranger", "app", "default", &fhir),
        )
        .await
        .expect("create the pod in another namespace");
    let refused = wait_for(
        "an event saying why the batch pod has no token",
        WAIT * 2,
        || async { Some(csi::pod_event_messages(&client, &ns, "batch").await) },
        |m| m.iter().any(|m| m.contains("not among the consumers")),
    )
    .await;
    eprintln!("batch pod: {refused:?}");
    let stranger = wait_for(
        "an event saying why the pod in another namespace has no token",
        WAIT * 2,
        || async { Some(csi::pod_event_messages(&client, &other.name, "stranger").await) },
        |m| {
            m.iter()
                .any(|m| m.contains("has no token for SmartBackendClient"))
        },
    )
    .await;
    eprintln!("stranger pod: {stranger:?}");
    for (api, name) in [(&pods, "batch"), (&other_pods, "stranger")] {
        let pod = api.get(name).await.expect("pod");
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        assert_eq!(phase, "Pending", "{name} did not start");
    }

    // A refresh: the pod reads the new token from the same files.
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.annotate("app", "smartbackend.dev/refresh-requested-at", "csi-test")
        .await;
    let requested = Instant::now();
    let second = wait_for(
        "a new token in the pod's volume",
        REPUBLISH,
        || async { csi::token_on_host(&pods.get("web").await.ok()?) },
        |t| *t != first,
    )
    .await;
    eprintln!(
        "requested refresh -> new file in the pod: {:.0?}",
        requested.elapsed()
    );
    wait_for(
        "the pod to call with the new token",
        WAIT,
        || logs(&pods, "web"),
        seen(node::short_hash(&second)),
    )
    .await;

    // The plugin restarted: the pod's files stay, and the new plugin takes
    // the volume up again at the kubelet's next republish.
    plugin.stop().await;
    let pod = pods.get("web").await.expect("pod");
    assert_eq!(
        csi::token_on_host(&pod).as_deref(),
        Some(second.as_str()),
        "the files outlive the plugin"
    );
    let plugin = NodePlugin::start(&client, &ns).await;

    // A new leader (a restart: it holds no token, since there is no Secret
    // to resume from) requests one and the pod gets it.
    h.restart_in_place(settings).await;
    let third = wait_for(
        "the new leader's token in the pod's volume",
        REPUBLISH,
        || async { csi::token_on_host(&pods.get("web").await.ok()?) },
        |t| *t != second && *t != first,
    )
    .await;
    wait_for(
        "the pod to call with the new leader's token",
        WAIT,
        || logs(&pods, "web"),
        seen(node::short_hash(&third)),
    )
    .await;
    let logs_now = logs(&pods, "web").await.unwrap_or_default();
    assert!(!logs_now.contains("refused"), "{logs_now}");
    let pod = pods.get("web").await.expect("pod");
    let status = pod.status.expect("status");
    assert_eq!(
        status.container_statuses.expect("container")[0].restart_count,
        0,
        "never restarted"
    );

    // Deleting the pod unmounts its volume.
    let uid = pod.metadata.uid.clone().expect("uid");
    pods.delete("web", &Default::default())
        .await
        .expect("delete the pod");
    let mount = csi::kubelet_dir()
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi/token/mount");
    wait_for(
        "the volume to be unmounted",
        WAIT * 2,
        || async { Some(std::fs::read_to_string("/proc/mounts").unwrap_or_default()) },
        |mounts| !mounts.contains(mount.to_str().unwrap()),
    )
    .await;
    plugin.stop().await;
}

/// The chart's values for the built image on the test node, watching only
/// `namespace`, with the CSI driver on.
fn chart_values(namespace: &str, ip: &str) -> Vec<String> {
    let kubelet_dir = csi::kubelet_dir();
    vec![
        "image.repository=smart-backend-operator".into(),
        "image.tag=dev".into(),
        "image.pullPolicy=Never".into(),
        "watch.mode=namespaced".into(),
        format!("watch.namespaces={{{namespace}}}"),
        "tolerations[0].operator=Exists".into(),
        format!("tolerations[0].key={}", node::TAINT_KEY),
        "operator.insecureAllowHttp=true".into(),
        format!("operator.extraArgs={{--allow-host,{ip}}}"),
        "csi.enabled=true".into(),
        format!("csi.kubeletDir={}", kubelet_dir.display()),
        "csi.tolerations[0].operator=Exists".into(),
        format!("csi.tolerations[0].key={}", node::TAINT_KEY),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_node_plugin_as_a_daemonset_and_a_pod_reads_its_token() {
    let _turn = NODE_PLUGIN.lock().await;
    let ns = support::cluster::TestNamespace::new("csi-chart").await;
    let client = ns.client.clone();
    support::operator::install_crd(&client).await;
    // The chart makes the CSIDriver object; the in-process test's goes.
    let drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(client.clone());
    let _ = drivers
        .delete(smart_backend_operator::csi::DRIVER, &Default::default())
        .await;
    wait_for(
        "the earlier CSIDriver object to go",
        WAIT,
        || async {
            Some(
                drivers
                    .get_opt(smart_backend_operator::csi::DRIVER)
                    .await
                    .ok()?
                    .is_none(),
            )
        },
        |gone| *gone,
    )
    .await;
    let ip = node::host_ip(&client).await;
    let release = support::helm::release_name("csi", &ns.name);
    support::helm::install(&release, &ns.name, &chart_values(&ns.name, &ip));
    let pods: Api<Pod> = ns.api();
    let selector = format!(
        "app.kubernetes.io/instance={release},app.kubernetes.io/name=smart-backend-operator"
    );
    let running = wait_for(
        "the operator and node plugin pods to run",
        WAIT * 3,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            Some(running)
        },
        |running| running.len() == 2,
    )
    .await;
    let operator = running
        .iter()
        .find(|p| {
            !p.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .contains("csi-node")
        })
        .expect("the operator pod");
    let pod_ip = operator
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let jwks_uri = format!("http://{pod_ip}:8080/jwks/{}/app", ns.name);
    let base = node::sandbox(&ip, "app", SCOPE, jwks_uri).await;
    let fhir = format!("{base}/fhir");
    let sbcs: Api<smart_backend_operator::crd::SmartBackendClient> = ns.api();
    let body = json!({
        "apiVersion": "smartbackend.dev/v1alpha1",
        "kind": "SmartBackendClient",
        "metadata": {"name": "app"},
        "spec": {"fhirBaseUrl": fhir, "clientId": "app", "scopes": [SCOPE], "token": {"delivery": "CSI"}},
    });
    sbcs.patch(
        "app",
        &kube::api::PatchParams::apply("csi-tests").force(),
        &kube::api::Patch::Apply(&body),
    )
    .await
    .expect("apply the client");
    wait_for(
        "the client to be Ready through the operator pod",
        WAIT * 2,
        || async { sbcs.get_opt("app").await.ok().flatten() },
        |sbc| support::operator::condition(sbc, "Ready").is_some_and(|c| c.status == "True"),
    )
    .await;

    pods.create(
        &PostParams::default(),
        &csi::workload("web", "app", "default", &fhir),
    )
    .await
    .expect("create the workload pod");
    let seen_logs = wait_for(
        "the pod to call the FHIR server with the token the DaemonSet's plugin wrote",
        WAIT * 3,
        || logs(&pods, "web"),
        |l| l.contains(" ok"),
    )
    .await;
    let pod = pods.get("web").await.expect("pod");
    let token = csi::token_on_host(&pod).expect("the token in the pod's volume");
    assert!(
        seen_logs.contains(&format!("{} ok", node::short_hash(&token))),
        "{seen_logs}"
    );
    let secrets: Api<Secret> = ns.api();
    assert!(
        secrets.get_opt("app-token").await.expect("read").is_none(),
        "no token Secret"
    );
    // What the node plugin costs, as the kernel counts it.
    let plugin = running
        .iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .contains("csi-node")
        })
        .and_then(pods_status_container_id)
        .expect("the plugin's container");
    let status = std::fs::read_to_string(format!("/proc/{}/status", node::container_pid(&plugin)))
        .unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default();
    eprintln!("node plugin serving one volume: {rss}");

    // The plugin goes with the release; the pod's files were its only copy.
    pods.delete("web", &Default::default())
        .await
        .expect("delete the pod");
    let uninstalled = support::helm::helm(&[
        "uninstall",
        &release,
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        uninstalled.status.success(),
        "{}",
        support::helm::text(&uninstalled)
    );
}

fn pods_status_container_id(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    status.container_id.clone()
}
