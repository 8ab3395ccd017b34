//! The chart's default install is least privilege: SmartBackendClients are
//! watched in every namespace, but Secrets are readable and writable only
//! in namespaces that opted in. The operator binary runs with exactly the
//! chart's identity (a token of its ServiceAccount): a client in an
//! opted-in namespace gets its token; a client elsewhere gets `Forbidden`
//! with the one command that lets the operator in, and once a namespace
//! admin runs it, the client gets its token without a restart.
//!
//! Its own test binary: the operator here watches the whole cluster, so it
//! must not run beside other tests' operators.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{self, TestNamespace, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::helm::{CHART, can_i, helm, install, release_name, text};
use support::operator::{Harness, condition, install_crd};
use support::process::{Launch, OperatorProcess, free_port};

#[tokio::test]
async fn the_default_install_touches_secrets_only_where_a_namespace_opted_in() {
    let release_ns = TestNamespace::new("def-op").await;
    let team = TestNamespace::new("def-team").await;
    let other = TestNamespace::new("def-other").await;
    install_crd(&release_ns.client).await;
    let release = release_name("sbd", &release_ns.name);
    let opted_in = format!("secrets.namespaces={{{}}}", team.name);
    let notes = install(&release, &release_ns.name, &[&opted_in]);
    // The install's notes say how a namespace opts in.
    let cluster_role = format!(
        "{}-{release}-smart-backend-operator-secrets",
        release_ns.name
    );
    assert!(
        notes.contains(&format!(
            "kubectl create rolebinding {cluster_role} -n <namespace>"
        )) && notes.contains(&format!("(now: {})", team.name)),
        "{notes}"
    );

    let account = format!("{release}-smart-backend-operator");
    let sa = format!("system:serviceaccount:{}:{account}", release_ns.name);
    let (t, o) = (team.name.clone(), other.name.clone());
    let (t, o) = (t.as_str(), o.as_str());
    let clients = "smartbackendclients.smartbackend.dev";
    assert_eq!(can_i(&sa, &["list", clients, "--all-namespaces"]), "yes");
    assert_eq!(
        can_i(&sa, &["list", "secrets", "--all-namespaces"]),
        "no",
        "no cluster-wide Secret access by default"
    );
    assert_eq!(can_i(&sa, &["get", "secrets", "-n", o]), "no");
    assert_eq!(can_i(&sa, &["create", "secrets", "-n", o]), "no");
    assert_eq!(can_i(&sa, &["create", "secrets", "-n", t]), "yes");
    assert_eq!(can_i(&sa, &["watch", "secrets", "-n", t]), "yes");
    assert_eq!(can_i(&sa, &["delete", "secrets", "-n", t]), "no");
    assert_eq!(
        can_i(&sa, &["update", clients, "-n", t]),
        "no",
        "spec is the user's"
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster::service_account_kubeconfig(&account, &release_ns.name, dir.path());
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", Behaviour::token("t", 600, None));
    // As the chart runs it: every namespace, the Secrets ClusterRole and
    // the ServiceAccount named.
    let _operator = OperatorProcess::spawn_with(
        &Launch {
            kubeconfig: &kubeconfig,
            watch_namespace: "",
            lease_namespace: &release_ns.name,
            lease_name: &account, // the chart's --lease-name, which its Role names
            lease_duration: Duration::from_secs(5),
            admin_port: free_port(),
        },
        &[
            ("SBO_SECRETS_CLUSTER_ROLE", &cluster_role),
            ("SBO_SERVICE_ACCOUNT", &account),
        ],
    );
    let spec = |id: &str| json!({"fhirBaseUrl": server.url("/fhir"), "clientId": id, "scopes": ["system/Patient.rs"]});

    let team = Harness {
        ns: team,
        operator: None,
    };
    team.apply("a", spec("a")).await;
    team.wait_ready("a").await;
    assert!(team.secret("a-token").await.is_some());

    let other = Harness {
        ns: other,
        operator: None,
    };
    other.apply("b", spec("b")).await;
    let sbc = other
        .wait_condition("b", "TokenReady", "False", Some("Forbidden"))
        .await;
    let message = condition(&sbc, "TokenReady").unwrap().message.clone();
    let command = format!(
        "kubectl create rolebinding {cluster_role} -n {o} --clusterrole={cluster_role} --serviceaccount={}:{account}",
        release_ns.name
    );
    assert!(
        message.contains(&format!("may not get secrets in namespace {o}"))
            && message.contains(&command),
        "{message}"
    );
    assert!(other.secret("b-token").await.is_none());

    // The namespace admin runs the command the condition gives.
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    let granted = cluster::kubectl(&args);
    assert!(granted.status.success(), "{}", text(&granted));
    assert_eq!(can_i(&sa, &["create", "secrets", "-n", o]), "yes");
    // The namespace's Secret watch lists within its backoff (at most 30 s)
    // and wakes the client; the operator is not restarted.
    wait_for(
        "b to be Ready after the RoleBinding",
        Duration::from_secs(90),
        || async { other.sbcs().get_opt("b").await.ok().flatten() },
        |sbc| condition(sbc, "Ready").is_some_and(|c| c.status == "True"),
    )
    .await;
    assert!(other.secret("b-token").await.is_some());

    let uninstalled = helm(&["uninstall", &release, "-n", &release_ns.name]);
    assert!(uninstalled.status.success(), "{}", text(&uninstalled));
}

#[test]
fn cluster_wide_secret_access_is_an_explicit_value() {
    let rendered = helm(&[
        "template",
        "r",
        CHART,
        "-n",
        "ops",
        "--set",
        "secrets.clusterWide=true",
    ]);
    assert!(rendered.status.success(), "{}", text(&rendered));
    let out = String::from_utf8_lossy(&rendered.stdout);
    assert!(out.contains("--secret-access=cluster"), "{out}");
    assert!(
        out.contains(
            "kind: ClusterRoleBinding\nmetadata:\n  name: ops-r-smart-backend-operator-secrets"
        ),
        "{out}"
    );
    let default = helm(&["template", "r", CHART, "-n", "ops"]);
    let out = String::from_utf8_lossy(&default.stdout);
    assert!(!out.contains("--secret-access=cluster"), "{out}");
    assert!(
        out.contains("--secrets-cluster-role=ops-r-smart-backend-operator-secrets"),
        "{out}"
    );
    assert!(
        !out.contains(
            "kind: ClusterRoleBinding\nmetadata:\n  name: ops-r-smart-backend-operator-secrets"
        ),
        "the Secrets ClusterRole is not bound cluster-wide by default"
    );
}
