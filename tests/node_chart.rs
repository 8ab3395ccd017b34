//! The chart as users install it, on the test node, with the image built
//! from the Dockerfile (`make image`): the operator runs as a pod under
//! the restricted security context (checked on the process, as the kernel
//! sees it), reaches the API server with in-cluster config and a SMART
//! server on this host, generates a key and keeps a token Secret; an
//! upgrade to two replicas and the loss of the leader pod hand the work
//! over through the lease without an extra refresh.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use smart_backend_operator::crd::SmartBackendClient;
use support::cluster::{TestNamespace, wait_for};
use support::helm::{CHART, helm, install, release_name, text};
use support::node;
use support::operator::{WAIT, condition, install_crd};

const SCOPE: &str = "system/Patient.rs";
/// A pod from a local image starts in seconds; the first sync follows.
const POD_READY: Duration = Duration::from_secs(120);

/// The names of `count` Ready operator pods, none of them terminating.
async fn ready_pod_names(pods: &Api<Pod>, release: &str, count: usize) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release}");
    wait_for(
        &format!("{count} Ready operator pods"),
        POD_READY,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let ready: Vec<String> = list
                .items
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

async fn ready_operator_pod(pods: &Api<Pod>, release: &str) -> Pod {
    let name = ready_pod_names(pods, release, 1).await.remove(0);
    pods.get(&name).await.expect("the operator pod")
}

#[tokio::test]
async fn the_chart_runs_the_built_image_confined_and_it_keeps_a_token_secret() {
    let ns = TestNamespace::new("node-chart").await;
    install_crd(&ns.client).await;
    let ip = node::host_ip(&ns.client).await;
    let release = release_name("op", &ns.name);
    let started = Instant::now();
    install(
        &release,
        &ns.name,
        &[
            "image.repository=smart-backend-operator",
            "image.tag=dev",
            "image.pullPolicy=Never",
            "operator.insecureAllowHttp=true",
            &format!("operator.extraArgs={{--allow-host,{ip}}}"),
            "watch.mode=namespaced",
            &format!("watch.namespaces={{{}}}", ns.name),
            &format!("tolerations[0].key={}", node::TAINT_KEY),
            "tolerations[0].operator=Exists",
        ],
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

    // helm upgrade to two replicas rolls the pod; the lease hands the work
    // over, the token stays good throughout, and deleting the leader pod
    // hands over within the lease.
    let refreshed_at = status.last_refresh_time.clone();
    let upgraded = helm(&[
        "upgrade",
        &release,
        CHART,
        "-n",
        &ns.name,
        "--reuse-values",
        "--set",
        "replicas=2",
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    let leases: Api<Lease> = ns.api();
    let lease = format!("{release}-smart-backend-operator");
    let holder = || async {
        let lease = leases.get_opt(&lease).await.ok().flatten()?;
        lease.spec?.holder_identity
    };
    let names = ready_pod_names(&pods, &release, 2).await;
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

    let uninstalled = helm(&["uninstall", &release, "-n", &ns.name, "--wait"]);
    assert!(uninstalled.status.success(), "{}", text(&uninstalled));
    // What the release did not own stays: the client, its key and its token.
    assert!(sbcs.get_opt("app").await.expect("get client").is_some());
    for kept in ["app-signing-key", "app-token"] {
        let secret = secrets.get_opt(kept).await.expect("get Secret");
        assert!(secret.is_some(), "{kept} is kept after helm uninstall");
    }
}
