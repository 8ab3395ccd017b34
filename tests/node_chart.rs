//! The chart as users install it, on the test node, with the image built
//! from the Dockerfile (`make image`): the operator runs as a pod under
//! the restricted security context (checked on the process, as the kernel
//! sees it), reaches the API server with in-cluster config and a SMART
//! server on this host, generates a key and keeps a token Secret; an
//! `helm test` passes; an upgrade that rolls the pod and adds a replica,
//! and the loss of the leader pod, hand the work over through the lease
//! without an extra refresh or a moment without a good token. A pod that
//! cannot sync stays un-Ready.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use smart_backend_operator::crd::SmartBackendClient;
use support::cluster::{TestNamespace, wait_for};
use support::helm::{CHART, helm, install, release_name, text};
use support::node::{self, FreshnessWatch};
use support::operator::{WAIT, condition, install_crd};

const SCOPE: &str = "system/Patient.rs";
/// A pod from a local image starts in seconds; the first sync follows.
const POD_READY: Duration = Duration::from_secs(120);

/// The release's operator pods (the Deployment's selector: not the
/// `helm test` pod).
async fn operator_pods(pods: &Api<Pod>, release: &str) -> Option<Vec<Pod>> {
    let selector = format!(
        "app.kubernetes.io/name=smart-backend-operator,app.kubernetes.io/instance={release}"
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    Some(list.items)
}

/// The names of `count` Ready operator pods, none of them terminating.
async fn ready_pod_names(pods: &Api<Pod>, release: &str, count: usize) -> Vec<String> {
    wait_for(
        &format!("{count} Ready operator pods"),
        POD_READY,
        || async {
            let ready: Vec<String> = operator_pods(pods, release)
                .await?
                .into_iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod))
                .filter_map(|pod| pod.metadata.name)
                .collect();
            Some(ready)
        },
        |ready| ready.len() == count,
    )
    .await
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The chart's values for the built image on the test node, watching only
/// `namespace`, and `extra`.
fn chart_values(namespace: &str, extra: &[&str]) -> Vec<String> {
    let mut values: Vec<String> = [
        "image.repository=smart-backend-operator",
        "image.tag=dev",
        "image.pullPolicy=Never",
        "watch.mode=namespaced",
        "tolerations[0].operator=Exists",
    ]
    .map(str::to_owned)
    .to_vec();
    values.push(format!("watch.namespaces={{{namespace}}}"));
    values.push(format!("tolerations[0].key={}", node::TAINT_KEY));
    values.extend(extra.iter().map(|v| (*v).to_owned()));
    values
}

async fn scale(deployments: &Api<Deployment>, name: &str, replicas: i32) {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    deployments
        .patch_scale(name, &PatchParams::default(), &patch)
        .await
        .expect("scale the Deployment");
}

async fn ready_operator_pod(pods: &Api<Pod>, release: &str) -> Pod {
    let name = ready_pod_names(pods, release, 1).await.remove(0);
    pods.get(&name).await.expect("the operator pod")
}

// Two threads: helm runs blocking on one while the freshness watch reads
// the token Secret on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_built_image_confined_and_it_keeps_a_token_secret() {
    let ns = TestNamespace::new("node-chart").await;
    install_crd(&ns.client).await;
    let ip = node::host_ip(&ns.client).await;
    let release = release_name("op", &ns.name);
    let started = Instant::now();
    let allow = format!("operator.extraArgs={{--allow-host,{ip}}}");
    install(
        &release,
        &ns.name,
        &chart_values(&ns.name, &["operator.insecureAllowHttp=true", &allow]),
    );
    let pods: Api<Pod> = ns.api();
    let pod = ready_operator_pod(&pods, &release).await;
    eprintln!(
        "helm install -> operator pod Ready: {:.1?}",
        started.elapsed()
    );

    // The restricted security context, as the kernel enforces it.
    let status = pod.status.clone().expect("pod status");
    let container = &status.container_statuses.expect("container statuses")[0];
    let pid = node::container_pid(container.container_id.as_deref().expect("container id"));
    let confined = node::confinement(pid);
    assert_eq!(confined.uids, "65532 65532 65532 65532", "{confined:?}");
    assert_eq!(
        confined.effective_capabilities, "0000000000000000",
        "{confined:?}"
    );
    assert_eq!(confined.seccomp, "2", "a seccomp filter: {confined:?}");
    assert_eq!(confined.no_new_privileges, "1", "{confined:?}");
    assert!(confined.read_only_root, "{confined:?}");
    let probe = pod.spec.as_ref().expect("spec").containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|g| g.path.clone().unwrap_or_default());
    assert_eq!(probe.as_deref(), Some("/readyz"));

    // A client served by a SMART server on this host, which fetches the
    // client's keys from the operator pod's JWKS endpoint.
    let pod_ip = status.pod_ip.expect("pod IP");
    let jwks_uri = format!("http://{pod_ip}:8080/jwks/{}/app", ns.name);
    let base = node::sandbox(&ip, "app", SCOPE, jwks_uri).await;
    let sbcs: Api<SmartBackendClient> = ns.api();
    let body = json!({
        "apiVersion": "smartbackend.dev/v1alpha1",
        "kind": "SmartBackendClient",
        "metadata": {"name": "app"},
        "spec": {"fhirBaseUrl": format!("{base}/fhir"), "clientId": "app", "scopes": [SCOPE]},
    });
    sbcs.patch(
        "app",
        &PatchParams::apply("node-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("apply the client");
    let ready = wait_for(
        "the client to be Ready through the operator pod",
        WAIT * 2,
        || async { sbcs.get_opt("app").await.ok().flatten() },
        |sbc| condition(sbc, "Ready").is_some_and(|c| c.status == "True"),
    )
    .await;
    let status = ready.status.expect("status");
    let secrets: Api<Secret> = ns.api();
    let token = secrets.get("app-token").await.expect("the token Secret");
    let access = token.data.as_ref().and_then(|d| d.get("access_token"));
    assert!(
        access.is_some_and(|t| !t.0.is_empty()),
        "a token was written"
    );
    let key = secrets
        .get("app-signing-key")
        .await
        .expect("the key Secret");
    assert!(status.kid.is_some() && key.data.is_some());

    // helm test: the chart's own check, from a pod of the built image.
    let tested = helm(&[
        "test",
        &release,
        "-n",
        &ns.name,
        "--logs",
        "--timeout",
        "180s",
    ]);
    let tested_text = text(&tested);
    assert!(tested.status.success(), "{tested_text}");
    for line in [
        "ok: SmartBackendClients can be listed",
        " leads (Lease ",
        "ready endpoint(s) answer /readyz",
    ] {
        assert!(
            tested_text.contains(line),
            "helm test printed {line:?}: {tested_text}"
        );
    }

    // helm upgrade with a changed pod value and a second replica rolls the
    // pod; the lease hands the work over and the token Secret holds a
    // token that has not expired at every moment of the roll.
    let refreshed_at = status.last_refresh_time.clone();
    let first_pod = pod.metadata.name.clone().expect("pod name");
    let watch = FreshnessWatch::start(secrets.clone(), "app-token");
    let upgraded = helm(&[
        "upgrade",
        &release,
        CHART,
        "-n",
        &ns.name,
        "--reuse-values",
        "--set",
        "replicas=2",
        "--set",
        "podAnnotations.rolled=yes",
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    let names = ready_pod_names(&pods, &release, 2).await;
    assert!(!names.contains(&first_pod), "the pod was rolled: {names:?}");
    let leases: Api<Lease> = ns.api();
    let lease = format!("{release}-smart-backend-operator");
    let holder = || async {
        let lease = leases.get_opt(&lease).await.ok().flatten()?;
        lease.spec?.holder_identity
    };
    // The lease names the pod, and a suffix for the process.
    let leads = |name: &String, holder: &String| holder.starts_with(&format!("{name}-"));
    let leader = wait_for("a leader among the two", WAIT, holder, |h| {
        names.iter().any(|n| leads(n, h))
    })
    .await;
    let leader_pod = names
        .iter()
        .find(|n| leads(n, &leader))
        .expect("the leader's pod");
    pods.delete(leader_pod, &DeleteParams::default())
        .await
        .expect("delete the leader pod");
    let deleted = Instant::now();
    let next = wait_for("another replica to lead", WAIT, holder, |h| *h != leader).await;
    eprintln!(
        "leader pod deleted -> {next} leads: {:.1?}",
        deleted.elapsed()
    );
    let after = wait_for(
        "the client Ready under the new leader",
        WAIT,
        || async { sbcs.get_opt("app").await.ok().flatten() },
        |sbc| condition(sbc, "Ready").is_some_and(|c| c.status == "True"),
    )
    .await;
    assert_eq!(
        after.status.expect("status").last_refresh_time,
        refreshed_at,
        "no refresh was made by the upgrade or the failover (the token was good)"
    );
    let samples = watch.stop().await;
    eprintln!("token Secret read {samples} times during the roll and the failover, always good");

    let uninstalled = helm(&["uninstall", &release, "-n", &ns.name, "--wait"]);
    assert!(uninstalled.status.success(), "{}", text(&uninstalled));
    // What the release did not own stays: the client, its key and its token.
    assert!(sbcs.get_opt("app").await.expect("get client").is_some());
    for kept in ["app-signing-key", "app-token"] {
        let secret = secrets.get_opt(kept).await.expect("get Secret");
        assert!(secret.is_some(), "{kept} is kept after helm uninstall");
    }
}

#[tokio::test]
async fn a_pod_that_cannot_sync_its_clients_stays_unready() {
    let ns = TestNamespace::new("node-unready").await;
    install_crd(&ns.client).await;
    let release = release_name("unready", &ns.name);
    install(&release, &ns.name, &chart_values(&ns.name, &[]));
    let pods: Api<Pod> = ns.api();
    let first = ready_operator_pod(&pods, &release).await;

    // Scale to none, take away the right to list SmartBackendClients in
    // the watched namespace, and start one pod again.
    let deployment = format!("{release}-smart-backend-operator");
    let deployments: Api<Deployment> = ns.api();
    scale(&deployments, &deployment, 0).await;
    let first_name = first.metadata.name.expect("pod name");
    wait_for(
        "the first pod to go",
        WAIT,
        || async { Some(pods.get_opt(&first_name).await.ok()?.is_none()) },
        |gone| *gone,
    )
    .await;
    let bindings: Api<RoleBinding> = ns.api();
    let binding = bindings
        .get(&deployment)
        .await
        .expect("the chart's RoleBinding");
    bindings
        .delete(&deployment, &DeleteParams::default())
        .await
        .expect("delete the RoleBinding");
    scale(&deployments, &deployment, 1).await;

    let running = wait_for(
        "a running operator pod",
        POD_READY,
        || async {
            operator_pods(&pods, &release).await?.into_iter().find(|p| {
                let statuses = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref());
                statuses
                    .into_iter()
                    .flatten()
                    .any(|c| c.started == Some(true))
            })
        },
        |_| true,
    )
    .await;
    let name = running.metadata.name.expect("pod name");
    // Three readiness probe periods (5 s each) with the process running.
    for _ in 0..15 {
        let pod = pods.get(&name).await.expect("the pod");
        assert!(
            !is_ready(&pod),
            "a pod that cannot list its clients is not Ready"
        );
        let restarts = pod
            .status
            .and_then(|s| s.container_statuses)
            .map_or(0, |c| c[0].restart_count);
        assert_eq!(
            restarts, 0,
            "the pod waits for its first sync instead of restarting"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The right restored, the watch syncs and the same pod turns Ready.
    let mut restored = binding;
    restored.metadata.resource_version = None;
    restored.metadata.uid = None;
    restored.metadata.creation_timestamp = None;
    restored.metadata.managed_fields = None;
    bindings
        .create(&PostParams::default(), &restored)
        .await
        .expect("restore the RoleBinding");
    let ready = ready_pod_names(&pods, &release, 1).await;
    assert_eq!(
        ready,
        vec![name],
        "the same pod turned Ready after its first sync"
    );
}
