//! One tenant cannot hurt another: a namespace of 500 clients whose token
//! endpoints (25 servers) accept connections and never answer must not
//! delay, for 5 minutes, any refresh of another namespace's 20 clients with
//! 60-second tokens by more than 5 s, nor let any of their tokens expire;
//! and the hanging servers are paused by circuit breakers instead of being
//! retried by every client. Reconciles never wait for a request slot (they
//! come back instead), and one namespace's requests hold at most half the
//! workers, however many servers it points at. The operator watches the
//! whole cluster, as the chart's default install does: one pool of workers
//! for every tenant (narrowed by a label selector to this test's clients).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::json;
use smart_backend_operator::controller::secrets::parse_rfc3339;
use smart_backend_operator::crd::SmartBackendClient;
use support::cluster::TestNamespace;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::Harness;

const NOISY: usize = 500;
const HANGING_SERVERS: usize = 25;
const VICTIMS: usize = 20;
const WATCH_FOR: Duration = Duration::from_secs(300);
/// The label that marks this test's clients.
const RUN: &str = "tests.smartbackend.dev/run";

#[tokio::test]
async fn a_namespace_of_hanging_clients_does_not_delay_another_namespaces_refreshes() {
    let quiet = TestNamespace::new("fair-quiet").await;
    // The operator watches the whole cluster (one controller, one pool of
    // workers for every namespace), but only this test's clients: other
    // test binaries run beside it. A hanging request holds on for 10 s
    // before it times out.
    let run = json!({RUN: quiet.name});
    let h = Harness::with("fair-noisy", |s| {
        s.namespaces.clear();
        s.selector = Some(format!("{RUN}={}", quiet.name));
        s.http.request_timeout = Duration::from_secs(10);
    })
    .await;

    let mut hanging = Vec::new();
    for _ in 0..HANGING_SERVERS {
        let server = FaultServer::start().await;
        server.serve_metadata("/fhir");
        server.on("/token", Behaviour::Hang);
        hanging.push(server);
    }
    for i in 0..NOISY {
        let name = format!("noisy-{i}");
        let server = &hanging[i % HANGING_SERVERS];
        h.apply_labelled(&name, run.clone(), json!({"fhirBaseUrl": server.url("/fhir"), "clientId": name, "scopes": ["system/Patient.rs"]}))
            .await;
    }

    let healthy = FaultServer::start().await;
    healthy.serve_metadata("/fhir");
    healthy.on("/token", Behaviour::token("t", 60, None));
    let victims: Api<SmartBackendClient> = quiet.api();
    for i in 0..VICTIMS {
        let sbc: SmartBackendClient = serde_json::from_value(json!({
            "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
            "metadata": {"name": format!("victim-{i}"), "labels": run.clone()},
            "spec": {"fhirBaseUrl": healthy.url("/fhir"), "clientId": format!("victim-{i}"),
                     "scopes": ["system/Patient.rs"], "token": {"refreshBefore": "45s"}},
        }))
        .unwrap();
        victims.create(&Default::default(), &sbc).await.unwrap();
    }

    // Every refresh of a victim is compared with the time its status
    // planned for it; every token Secret is checked against its expiry.
    let mut planned: HashMap<String, (String, String)> = HashMap::new();
    let mut refreshes = 0;
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < WATCH_FOR {
        for sbc in victims.list(&Default::default()).await.unwrap() {
            let name = sbc.metadata.name.clone().unwrap();
            let Some(status) = sbc.status else { continue };
            let (Some(last), Some(next), Some(expires)) = (
                status.last_refresh_time.clone(),
                status.next_refresh_time.clone(),
                status.token_expires_at.clone(),
            ) else {
                continue;
            };
            assert!(
                parse_rfc3339(&expires).unwrap() > std::time::SystemTime::now(),
                "{name}'s token expired"
            );
            if let Some((seen_last, seen_next)) = planned.get(&name)
                && *seen_last != last
            {
                let plan = parse_rfc3339(seen_next).unwrap();
                let done = parse_rfc3339(&last).unwrap();
                let late = done.duration_since(plan).unwrap_or_default();
                worst = worst.max(late);
                refreshes += 1;
                assert!(
                    late <= Duration::from_secs(5),
                    "{name} refreshed {late:?} after its plan"
                );
            }
            planned.insert(name, (last, next));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(planned.len(), VICTIMS, "every victim got a token");
    assert!(
        refreshes >= VICTIMS,
        "each victim refreshed at least once ({refreshes})"
    );
    let metrics = h.metrics().await;
    let opened: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smart_backend_server_breaker_opened_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        opened >= 1,
        "hanging servers were paused: {opened} breakers opened"
    );
    // The hanging servers saw a handful of requests each, not one per
    // reconcile.
    let sent: usize = hanging.iter().map(|s| s.requests("/token").len()).sum();
    assert!(sent < NOISY, "{sent} requests reached the hanging servers");
    eprintln!(
        "victim refreshes: {refreshes}, latest {worst:?} after plan; hanging servers got {sent} requests, \
         {opened} breakers opened"
    );
}
