//! Two operator processes against the real control plane: one leads and
//! writes; when it dies the other takes over within the lease duration, and
//! no token is minted twice for the same refresh. A leader stopped as
//! Kubernetes stops a pod releases the Lease on its way out.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;
use smart_backend_operator::smart::SigningAlgorithm;
use support::cluster::{TestNamespace, kubeconfig_path, wait_for};
use support::oidc::{Client, OidcServer, Registration};
use support::operator::{Harness, install_crd};
use support::process::{Launch, OperatorProcess, free_port};

const LEASE_SECONDS: u64 = 4;

struct Replica(OperatorProcess);

impl Replica {
    fn start(namespace: &str) -> Self {
        Self::with_lease(namespace, LEASE_SECONDS)
    }

    fn with_lease(namespace: &str, seconds: u64) -> Self {
        Replica(OperatorProcess::spawn(&Launch {
            kubeconfig: &kubeconfig_path(),
            watch_namespace: namespace,
            lease_namespace: namespace,
            lease_name: "sbo-test",
            lease_duration: Duration::from_secs(seconds),
            admin_port: free_port(),
        }))
    }

    async fn is_leader(&self) -> Option<bool> {
        let url = format!("http://127.0.0.1:{}/metrics", self.0.port);
        let body = reqwest::get(url).await.ok()?.text().await.ok()?;
        Some(body.lines().any(|l| l.trim() == "smart_backend_leader 1"))
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

async fn leader_index(replicas: &[Replica]) -> Option<usize> {
    let mut leaders = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        if r.is_leader().await == Some(true) {
            leaders.push(i);
        }
    }
    assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
    leaders.first().copied()
}

/// Waits until one of the replicas leads; its index.
async fn wait_for_leader(replicas: &[Replica]) -> usize {
    wait_for(
        "one replica to lead",
        Duration::from_secs(30),
        || async { leader_index(replicas).await },
        |_| true,
    )
    .await
}

#[tokio::test]
async fn the_other_replica_takes_over_within_the_lease_and_mints_nothing_twice() {
    let ns = TestNamespace::new("leader").await;
    install_crd(&ns.client).await;
    // A referenced key registered inline: the test does not depend on
    // which replica serves the JWKS.
    let key = support::signing_key(SigningAlgorithm::ES384);
    let pem = support::pem(&key).into_bytes();
    let secret = support::key_secret("client-key", pem, true);
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let server = OidcServer::start(
        &[Client {
            id: "c",
            scope: "system/Patient.rs",
            key: Some(&key),
            registration: Registration::Inline,
        }],
        &["system/Patient.rs"],
        300,
    );
    let mut replicas = vec![Replica::start(&ns.name), Replica::start(&ns.name)];
    let first = wait_for_leader(&replicas).await;

    let h = Harness { ns, operator: None };
    h.apply(
        "c",
        json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "c", "scopes": ["system/Patient.rs"],
               "signing": {"keySecretRef": {"name": "client-key", "key": "key.pem"}}}),
    )
    .await;
    h.wait_ready("c").await;
    assert_eq!(server.stats().await.0, 1);

    replicas[first].kill();
    let killed_at = Instant::now();
    let second = 1 - first;
    let mut took_over = false;
    while killed_at.elapsed() < Duration::from_secs(LEASE_SECONDS * 3) {
        if replicas[second].is_leader().await == Some(true) {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let takeover = killed_at.elapsed();
    assert!(took_over, "the surviving replica never took the lease");
    // The lease expires LEASE_SECONDS after its last renewal, which was at
    // most LEASE_SECONDS before the kill; allow a second of polling.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 1),
        "takeover took {takeover:?}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.stats().await.0,
        1,
        "the new leader found the token good and minted none"
    );

    h.annotate(
        "c",
        "smartbackend.dev/refresh-requested-at",
        "after-failover",
    )
    .await;
    let before = Harness::value(&h.secret("c-token").await.unwrap(), "access_token");
    wait_for(
        "a new token from the new leader",
        Duration::from_secs(30),
        || async { h.secrets().get_opt("c-token").await.ok().flatten() },
        |s| Harness::value(s, "access_token") != before,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.stats().await.0,
        2,
        "exactly one token for the one requested refresh"
    );
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_releases_the_lease() {
    let ns = TestNamespace::new("leader-release").await;
    install_crd(&ns.client).await;
    // A lease far longer than the test: only a release empties it.
    let mut replicas = vec![
        Replica::with_lease(&ns.name, 600),
        Replica::with_lease(&ns.name, 600),
    ];
    let first = wait_for_leader(&replicas).await;
    let leases = ns.api::<Lease>();
    let holder = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let held = holder(&leases.get("sbo-test").await.unwrap());
    assert!(held.is_some(), "the leader holds the Lease");

    assert!(
        replicas[first].0.terminate(),
        "the leader exits cleanly on SIGTERM"
    );
    let after = holder(&leases.get("sbo-test").await.unwrap());
    assert!(
        after.is_none(),
        "the Lease is released on the way out, not left to expire: holder {after:?} (was {held:?})"
    );
}
