//! API-server faults and operator crashes, against the real control plane
//! through a fault-injecting proxy: conflicts and rate limits are retried, a
//! token obtained while the API server refuses writes is written later
//! instead of minting another, a key whose create answer was lost is
//! adopted, and an operator process killed mid-reconcile (after creating a
//! key, before writing status; after minting a token, before writing it)
//! keeps the key it made when restarted.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use smart_backend_operator::controller::decide::secret_data::{KID_ANNOTATION, PRIVATE_KEY_FILE};
use smart_backend_operator::crd::SmartBackendClient;
use smart_backend_operator::runtime::{LeaderElection, Operator};
use support::api_proxy::{ApiProxy, Fault, Rule};
use support::cluster::{TestNamespace, kubeconfig_path, wait_for};
use support::fault_server::{Behaviour, FaultServer};
use support::operator::{Harness, WAIT, install_crd, start_operator, test_settings};
use support::process::{Launch, OperatorProcess, free_port};

fn token(value: &str) -> Behaviour {
    Behaviour::token(value, 600, None)
}

fn rule(method: &'static str, path_suffix: &str, fault: Fault, times: usize) -> Rule {
    Rule {
        method,
        path_suffix: path_suffix.to_string(),
        fault,
        times,
    }
}

fn answer(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Answer {
        status,
        retry_after,
    }
}

/// The Secrets in the namespace that hold a private key.
async fn key_secrets(api: &Api<Secret>) -> Vec<Secret> {
    api.list(&Default::default())
        .await
        .expect("list secrets")
        .items
        .into_iter()
        .filter(|s| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(PRIVATE_KEY_FILE))
        })
        .collect()
}

fn kid_of(secret: &Secret) -> String {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KID_ANNOTATION))
        .cloned()
        .expect("the key Secret names its kid")
}

fn status_kid(sbc: &SmartBackendClient) -> Option<String> {
    sbc.status.as_ref().and_then(|s| s.kid.clone())
}

#[tokio::test]
async fn conflicts_rate_limits_and_lost_answers_are_retried_with_one_key_and_one_token() {
    let proxy = ApiProxy::start().await;
    let h = Harness::through("api-faults", proxy.client()).await;
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("only"));
    let ns = format!("/namespaces/{}", h.ns.name);
    // The key's create reaches the API server but its answer is lost; the
    // first status writes conflict and are rate limited; the first token
    // Secret writes are rate limited and conflict.
    proxy.add(rule("POST", &format!("{ns}/secrets"), Fault::LoseAnswer, 1));
    let status = format!("{ns}/smartbackendclients/c/status");
    proxy.add(rule("PATCH", &status, answer(409, None), 1));
    proxy.add(rule("PATCH", &status, answer(429, Some(1)), 1));
    let token_secret = format!("{ns}/secrets/c-token");
    proxy.add(rule("PATCH", &token_secret, answer(429, Some(1)), 1));
    proxy.add(rule("PATCH", &token_secret, answer(409, None), 1));

    h.apply(
        "c",
        json!({"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]}),
    )
    .await;
    let sbc = h.wait_ready("c").await;

    assert!(
        proxy.unspent().is_empty(),
        "faults never reached: {:?}",
        proxy.unspent()
    );
    let keys = key_secrets(&h.secrets()).await;
    assert_eq!(keys.len(), 1, "exactly one key Secret");
    assert_eq!(
        status_kid(&sbc).as_deref(),
        Some(kid_of(&keys[0]).as_str()),
        "status publishes the key whose create answer was lost"
    );
    let stored = h.secret("c-token").await.expect("token Secret");
    assert_eq!(Harness::value(&stored, "access_token"), "only");
    assert_eq!(
        server.requests("/token").len(),
        1,
        "the token refused by the API server was written later, not minted again"
    );
}

/// One operator process whose API requests go through the proxy (or
/// straight to the API server), with a short lease so a restart after a
/// kill takes over quickly.
fn spawn_operator(ns: &str, kubeconfig: &std::path::Path) -> OperatorProcess {
    OperatorProcess::spawn(&Launch {
        kubeconfig,
        watch_namespace: ns,
        lease_namespace: ns,
        lease_name: "sbo-crash",
        lease_duration: Duration::from_secs(2),
        admin_port: free_port(),
    })
}

fn held(proxy: &ApiProxy, method: &str, path_suffix: &str) -> bool {
    proxy.faulted().iter().any(|s| {
        s.method == method && s.path.ends_with(path_suffix) && matches!(s.fault, Some(Fault::Hold))
    })
}

async fn keys_generated(port: u16) -> Option<u64> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("smart_backend_keys_generated_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_killed_operator_adopts_the_key_it_made_and_makes_no_second_one() {
    let ns = TestNamespace::new("crash").await;
    install_crd(&ns.client).await;
    let secrets: Api<Secret> = ns.api();
    let sbcs: Api<SmartBackendClient> = ns.api();
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    server.on("/token", token("after-crash"));
    let proxy = ApiProxy::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let through_proxy = proxy.write_kubeconfig(dir.path());
    let prefix = format!("/namespaces/{}", ns.name);

    // Kill point 1: the key Secret is created, the status write that would
    // publish it never completes.
    let status = format!("{prefix}/smartbackendclients/c/status");
    proxy.add(rule("PATCH", &status, Fault::Hold, usize::MAX));
    let mut operator = spawn_operator(&ns.name, &through_proxy);
    let client = json!({
        "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
        "metadata": {"name": "c"},
        "spec": {"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]},
    });
    sbcs.patch(
        "c",
        &PatchParams::apply("e2e-tests"),
        &Patch::Apply(&client),
    )
    .await
    .expect("apply the client");
    wait_for(
        "a key Secret created and the status write after it held",
        WAIT,
        || async { Some((key_secrets(&secrets).await, held(&proxy, "PATCH", &status))) },
        |(keys, held)| keys.len() == 1 && *held,
    )
    .await;
    let first_generated = keys_generated(operator.port).await;
    operator.kill();
    let made = key_secrets(&secrets).await.remove(0);
    assert_eq!(first_generated, Some(1), "the killed process made one key");
    let published = sbcs.get("c").await.expect("client");
    assert_eq!(status_kid(&published), None, "the kill came before status");

    // Kill point 2: restarted, the operator publishes the key and mints a
    // token, but the token Secret write never completes.
    proxy.clear();
    let token_secret = format!("{prefix}/secrets/c-token");
    proxy.add(rule("PATCH", &token_secret, Fault::Hold, usize::MAX));
    let mut operator = spawn_operator(&ns.name, &through_proxy);
    wait_for(
        "a token minted and its Secret write held",
        WAIT,
        || async {
            Some((
                server.requests("/token").len(),
                held(&proxy, "PATCH", &token_secret),
            ))
        },
        |(tokens, held)| *tokens == 1 && *held,
    )
    .await;
    let second_generated = keys_generated(operator.port).await;
    operator.kill();
    assert_eq!(second_generated, Some(0), "the restart made no key");

    // Restarted straight against the API server, it finishes the job.
    let operator = spawn_operator(&ns.name, &kubeconfig_path());
    let ready = wait_for(
        "c to become Ready after two crashes",
        WAIT,
        || async { sbcs.get_opt("c").await.ok().flatten() },
        |sbc| support::operator::condition(sbc, "Ready").is_some_and(|c| c.status == "True"),
    )
    .await;
    assert_eq!(keys_generated(operator.port).await, Some(0));
    let keys = key_secrets(&secrets).await;
    assert_eq!(keys.len(), 1, "still exactly one key Secret");
    assert_eq!(keys[0].metadata.uid, made.metadata.uid, "the same Secret");
    assert_eq!(keys[0].data, made.data, "the same key, byte for byte");
    assert_eq!(status_kid(&ready), Some(kid_of(&made)));
    let stored = secrets.get("c-token").await.expect("token Secret");
    assert_eq!(Harness::value(&stored, "access_token"), "after-crash");
    // The token minted before the second kill was never written and is
    // lost with the process; one more is minted, no others.
    assert_eq!(server.requests("/token").len(), 2);
}

/// A replica told to stop before its watch of SmartBackendClients first
/// listed (here: the list never answers) stops at once instead of waiting
/// for a list that the shutdown itself cut off.
#[tokio::test]
async fn an_operator_stopped_before_its_first_list_stops() {
    let proxy = ApiProxy::start().await;
    let ns = TestNamespace::new("api-faults-stop").await;
    install_crd(&ns.client).await;
    let list = format!("/namespaces/{}/smartbackendclients", ns.name);
    proxy.add(rule("GET", &list, Fault::Hold, usize::MAX));
    let operator = start_operator(proxy.client(), test_settings(&ns.name))
        .await
        .expect("start the operator");
    wait_for(
        "the controller's list to be held",
        WAIT,
        || async { Some(held(&proxy, "GET", &list)) },
        |held| *held,
    )
    .await;
    // Generous: a stop without the cut-off list takes milliseconds; before
    // the fix it never ended.
    let stopped = tokio::time::timeout(Duration::from_secs(30), operator.stop()).await;
    assert!(
        stopped.is_ok(),
        "the operator still waits for its first list 30 s after it was told to stop"
    );
    stopped.unwrap().expect("a clean stop");
}

/// Liveness means progress: a leader whose reconcile hangs (here its status
/// write is never answered) while a refresh is due fails /healthz once the
/// refresh is overdue past the deadline, and says why; an HTTP server that
/// still answers is not enough.
#[tokio::test]
async fn a_leader_that_makes_no_progress_fails_liveness_and_says_why() {
    let proxy = ApiProxy::start().await;
    let ns = TestNamespace::new("api-faults-stall").await;
    install_crd(&ns.client).await;
    let mut settings = test_settings(&ns.name);
    settings.progress_deadline = Duration::from_secs(3);
    let operator = start_operator(proxy.client(), settings)
        .await
        .expect("start the operator");
    let healthz = format!("http://{}/healthz", operator.admin_addr);
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    // Four-second tokens: a refresh is due about every second.
    server.on("/token", Behaviour::token("t", 4, None));
    let sbcs: Api<SmartBackendClient> = ns.api();
    let body = json!({
        "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
        "metadata": {"name": "c"},
        "spec": {"fhirBaseUrl": server.url("/fhir"), "clientId": "c", "scopes": ["system/Patient.rs"]},
    });
    sbcs.patch("c", &PatchParams::apply("e2e-tests"), &Patch::Apply(&body))
        .await
        .unwrap();
    wait_for(
        "a first token",
        WAIT,
        || async { Some(server.requests("/token").len()) },
        |n| *n >= 2,
    )
    .await;
    let answer = reqwest::get(&healthz).await.unwrap();
    assert!(answer.status().is_success(), "alive while refreshing");
    // From now on every status write hangs: the reconcile never ends.
    let status = format!("/namespaces/{}/smartbackendclients/c/status", ns.name);
    proxy.add(rule("PATCH", &status, Fault::Hold, usize::MAX));
    let (code, why) = wait_for(
        "liveness to fail",
        WAIT,
        || async {
            let answer = reqwest::get(&healthz).await.ok()?;
            Some((answer.status().as_u16(), answer.text().await.ok()?))
        },
        |(code, _)| *code == 503,
    )
    .await;
    assert_eq!(code, 503);
    assert!(why.contains("no progress") && why.contains("3s"), "{why}");
    operator.kill();
}

/// A replica that starts while the API server does not answer (here the
/// Lease's reads fail three times) waits and joins the election when it
/// answers, instead of exiting and leaving a crash-loop backoff between the
/// cluster and a leader; its admin server answers meanwhile.
#[tokio::test]
async fn a_replica_started_while_the_api_server_is_down_joins_the_election_later() {
    let proxy = ApiProxy::start().await;
    let ns = TestNamespace::new("api-faults-lease").await;
    install_crd(&ns.client).await;
    let lease = "/leases/sbo-late";
    proxy.add(rule("GET", lease, answer(500, None), 3));
    let election = LeaderElection {
        lease_name: "sbo-late".into(),
        namespace: ns.name.clone(),
        identity: "late-replica".into(),
        duration: Duration::from_secs(4),
    };
    let operator = Operator::start(
        proxy.client(),
        test_settings(&ns.name),
        "127.0.0.1:0".parse().unwrap(),
        Some(election),
    )
    .await
    .expect("a replica starts while the Lease cannot be read");
    let healthz = format!("http://{}/healthz", operator.admin_addr);
    let answer = reqwest::get(&healthz)
        .await
        .expect("the admin server answers");
    assert!(
        answer.status().is_success(),
        "alive while waiting for the API server"
    );
    wait_for(
        "the replica to lead",
        WAIT,
        || async { Some(operator.metrics.leader.get()) },
        |leading| *leading == 1,
    )
    .await;
    let refused = proxy
        .faulted()
        .iter()
        .filter(|s| s.method == "GET" && s.path.ends_with(lease))
        .count();
    assert_eq!(refused, 3, "the Lease was read through the outage");
    operator.stop().await.expect("a clean stop");
}
