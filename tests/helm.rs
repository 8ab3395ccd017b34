//! The Helm chart: it lints, refuses bad values, installs into the real
//! control plane, grants least privilege (proven with `kubectl auth can-i`),
//! and the operator binary reconciles a client with exactly the identity
//! the chart gives it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::json;
use support::cluster::{self, TestNamespace, bin_dir, kubeconfig_path, repo_root};
use support::helm::{CHART, can_i, helm, install, release_name, text};
use support::oidc::{Client, OidcServer, Registration};
use support::operator::{Harness, install_crd};
use support::process::{Launch, OperatorProcess, free_port};

#[test]
fn the_chart_lints_with_default_and_production_values() {
    let default = helm(&["lint", CHART]);
    assert!(default.status.success(), "{}", text(&default));
    let production = helm(&[
        "lint",
        CHART,
        "--set",
        "watch.mode=namespaced",
        "--set",
        "watch.namespaces={team-a,team-b}",
        "--set",
        "replicas=2",
        "--set",
        "ingress.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    assert!(production.status.success(), "{}", text(&production));
}

#[test]
fn bad_values_fail_at_install_time_with_a_clear_message() {
    for (values, expected) in [
        (vec!["--set", "replicas=0"], "/replicas"),
        (vec!["--set", "watch.mode=namespaced"], "/watch/namespaces"),
        (vec!["--set", "watch.mode=everywhere"], "/watch/mode"),
        (vec!["--set", "typo=1"], "typo"),
        (
            vec!["--set", "vault.address=https://vault.example.org"],
            "vault.role is required",
        ),
        (
            vec!["--set", "aws.kms.endpoint=http://kms.internal"],
            "/aws/kms/endpoint",
        ),
    ] {
        let output = helm(&[&["template", "x", CHART], values.as_slice()].concat());
        assert!(!output.status.success(), "{values:?} must be refused");
        assert!(
            text(&output).contains(expected),
            "{values:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn the_public_jwks_url_and_the_selector_come_from_the_values() {
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "r", CHART];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = helm(&args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!render(&[]).contains("- --jwks-public-url"));
    assert!(
        render(&["ingress.enabled=true", "ingress.host=jwks.example.org"])
            .contains("- --jwks-public-url=https://jwks.example.org")
    );
    assert!(
        render(&["operator.jwksPublicUrl=https://keys.example.org/ops"])
            .contains("- --jwks-public-url=https://keys.example.org/ops")
    );
    assert!(!render(&[]).contains("--selector"));
    // Vault: off by default; on, a projected token with Vault's audience
    // (never the API server's) and the flags that name the server.
    assert!(!render(&[]).contains("--vault-address"));
    let vault = render(&[
        "vault.address=https://vault.example.org:8200",
        "vault.role=smart",
    ]);
    for expected in [
        "- --vault-address=https://vault.example.org:8200",
        "- --vault-role=smart",
        "audience: \"vault\"",
        "mountPath: /var/run/secrets/smartbackend.dev/vault",
    ] {
        assert!(vault.contains(expected), "{expected}: {vault}");
    }
    // AWS KMS: off by default; on, the flags that name the region and the
    // alias prefix (credentials come from the pod's standard chain).
    assert!(!render(&[]).contains("--aws-kms"));
    let kms = render(&["aws.kms.enabled=true", "aws.kms.region=eu-west-1"]);
    for expected in [
        "- --aws-kms\n",
        "- --aws-kms-alias-prefix=smartbackend",
        "- --aws-region=eu-west-1",
    ] {
        assert!(kms.contains(expected), "{expected}: {kms}");
    }
    // CSI delivery: off by default; on, the operator listens for node
    // plugins, and the plugin is the chart's one privileged container.
    assert!(!render(&[]).contains("--csi-listen-addr"));
    let csi = render(&["csi.enabled=true"]);
    for expected in [
        "- --csi-listen-addr=0.0.0.0:8443",
        "fieldPath: status.podIP",
        "kind: CSIDriver",
        "- audience: \"smartbackend.dev\"",
        "requiresRepublish: true",
        "- csi-node",
        "privileged: true",
        "mountPropagation: Bidirectional",
        "resources: [\"tokenreviews\"]",
        "app.kubernetes.io/component: csi-node",
    ] {
        assert!(csi.contains(expected), "{expected}: {csi}");
    }
    assert_eq!(
        csi.matches("privileged: true").count(),
        1,
        "only the plugin"
    );
    assert!(
        render(&["watch.selector=tier in (a\\,b)"]).contains("- \"--selector=tier in (a,b)\""),
        "{}",
        render(&["watch.selector=tier in (a\\,b)"])
    );
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated =
        std::fs::read_to_string(repo_root().join("crds/smartbackendclients.smartbackend.dev.yaml"))
            .unwrap();
    let in_chart = std::fs::read_to_string(
        repo_root()
            .join(CHART)
            .join("files/smartbackendclients.smartbackend.dev.yaml"),
    )
    .unwrap();
    assert_eq!(
        generated, in_chart,
        "copy crds/*.yaml into {CHART}/files/ (make crds does it)"
    );
}

#[tokio::test]
async fn every_rendered_object_including_the_crd_is_accepted_by_the_api_server() {
    let ns = TestNamespace::new("helm-render").await;
    let rendered = helm(&[
        "template",
        "r",
        CHART,
        "-n",
        &ns.name,
        "--set",
        "replicas=2",
        "--set",
        "ingress.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.ingressFrom[0].podSelector.matchLabels.role=monitoring",
        "--set",
        "csi.enabled=true",
    ]);
    assert!(rendered.status.success(), "{}", text(&rendered));
    let manifest = String::from_utf8_lossy(&rendered.stdout);
    let policy = manifest
        .split("\n---")
        .find(|doc| doc.contains("kind: NetworkPolicy"))
        .expect("a NetworkPolicy");
    assert!(
        policy.contains("app.kubernetes.io/name: smart-backend-operator-test"),
        "a restricted NetworkPolicy still lets the helm test pod in:\n{policy}"
    );
    // A dry-run Pod (the `helm test` hook) is checked against its
    // ServiceAccount, which a dry run does not create: make it for real.
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "r-smart-backend-operator-test"}}))
            .unwrap();
    ns.api::<ServiceAccount>()
        .create(&Default::default(), &sa)
        .await
        .expect("the test hook's ServiceAccount");
    let mut apply = Command::new(bin_dir().join("kubectl"))
        .args(["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"])
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(&rendered.stdout)
        .unwrap();
    let result = apply.wait_with_output().unwrap();
    let out = text(&result);
    assert!(result.status.success(), "{out}");
    for kind in [
        "customresourcedefinition",
        "deployment",
        "poddisruptionbudget",
        "ingress",
        "networkpolicy",
        "clusterrole",
        "pod/r-smart-backend-operator-test",
        "csidriver.storage.k8s.io/smartbackend.dev",
        "daemonset.apps/r-smart-backend-operator-csi-node",
    ] {
        assert!(out.contains(kind), "{kind} missing from:\n{out}");
    }
}

#[tokio::test]
async fn namespaced_install_is_least_privilege_and_its_identity_runs_the_operator() {
    let release_ns = TestNamespace::new("helm-op").await;
    let watched = TestNamespace::new("helm-team").await;
    let other = TestNamespace::new("helm-other").await;
    install_crd(&release_ns.client).await;
    let release = release_name("sbo", &release_ns.name);
    let watched_only = format!("watch.namespaces={{{}}}", watched.name);
    install(
        &release,
        &release_ns.name,
        &["watch.mode=namespaced", &watched_only],
    );

    let account = format!("{release}-smart-backend-operator");
    let sa = format!("system:serviceaccount:{}:{account}", release_ns.name);
    let w = watched.name.as_str();
    assert_eq!(
        can_i(
            &sa,
            &["watch", "smartbackendclients.smartbackend.dev", "-n", w]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &sa,
            &[
                "patch",
                "smartbackendclients.smartbackend.dev",
                "--subresource=status",
                "-n",
                w
            ]
        ),
        "yes"
    );
    assert_eq!(can_i(&sa, &["create", "secrets", "-n", w]), "yes");
    assert_eq!(
        can_i(&sa, &["create", "events.events.k8s.io", "-n", w]),
        "yes"
    );
    // Only its own Lease is read and patched; nothing is updated.
    let own_lease = format!("leases.coordination.k8s.io/{account}");
    assert_eq!(
        can_i(&sa, &["patch", &own_lease, "-n", &release_ns.name]),
        "yes"
    );
    assert_eq!(
        can_i(
            &sa,
            &[
                "patch",
                "leases.coordination.k8s.io/other",
                "-n",
                &release_ns.name
            ]
        ),
        "no"
    );
    assert_eq!(
        can_i(&sa, &["update", &own_lease, "-n", &release_ns.name]),
        "no"
    );
    assert_eq!(
        can_i(
            &sa,
            &[
                "update",
                "smartbackendclients.smartbackend.dev",
                "--subresource=status",
                "-n",
                w
            ]
        ),
        "no",
        "the status is patched, never replaced"
    );
    assert_eq!(
        can_i(&sa, &["list", "secrets", "--all-namespaces"]),
        "no",
        "no cluster-wide Secret access"
    );
    assert_eq!(can_i(&sa, &["get", "secrets", "-n", &other.name]), "no");
    assert_eq!(can_i(&sa, &["delete", "secrets", "-n", w]), "no");
    assert_eq!(
        can_i(
            &sa,
            &["update", "smartbackendclients.smartbackend.dev", "-n", w]
        ),
        "no",
        "spec is the user's"
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster::service_account_kubeconfig(&account, &release_ns.name, dir.path());

    let port = free_port();
    let jwks_uri = format!("http://127.0.0.1:{port}/jwks/{w}/billing");
    let server = OidcServer::start(
        &[Client {
            id: "billing",
            scope: "system/Patient.rs",
            key: None,
            registration: Registration::JwksUriAt(jwks_uri),
        }],
        &["system/Patient.rs"],
        300,
    );
    let _operator = OperatorProcess::spawn(&Launch {
        kubeconfig: &kubeconfig,
        watch_namespace: w,
        lease_namespace: &release_ns.name,
        lease_name: &account, // the chart's --lease-name, which its Role names
        lease_duration: Duration::from_secs(5),
        admin_port: port,
    });
    let harness = Harness {
        ns: watched,
        operator: None,
    };
    harness
        .apply("billing", json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "billing", "scopes": ["system/Patient.rs"]}))
        .await;
    let sbc = harness.wait_ready("billing").await;
    assert!(sbc.status.unwrap().token_expires_at.is_some());
    assert!(harness.secret("billing-token").await.is_some());
}
