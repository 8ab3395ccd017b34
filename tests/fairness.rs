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

use std::time::Duration;

use serde_json::json;
use support::cluster::TestNamespace;
use support::fault_server::{Behaviour, FaultServer};
use support::operator::Harness;
use support::victims::Victims;

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

    let victims = Victims::create(quiet.api(), VICTIMS, run.clone()).await;
    let report = victims.watch(WATCH_FOR).await;
    assert_eq!(report.with_tokens, VICTIMS, "every victim got a token");
    assert!(
        report.refreshes >= VICTIMS,
        "each victim refreshed at least once ({})",
        report.refreshes
    );
    let (refreshes, worst) = (report.refreshes, report.worst);
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
