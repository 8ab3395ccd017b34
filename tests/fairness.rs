//! One tenant cannot hurt another: a namespace full of clients whose token
//! endpoint accepts connections and never answers must not delay the
//! refreshes of another namespace's clients, and the hanging server is
//! paused by the circuit breaker instead of being retried by every client.
//! Reconciles never wait for a server's request slot (they come back
//! instead). The operator watches the whole cluster, as the chart's default
//! install does: one pool of workers for every tenant.

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

const NOISY: usize = 100;
const VICTIMS: usize = 5;
const WATCH_FOR: Duration = Duration::from_secs(75);

#[tokio::test]
async fn a_namespace_of_hanging_clients_does_not_delay_another_namespaces_refreshes() {
    let quiet = TestNamespace::new("fair-quiet").await;
    let quiet_name = quiet.name.clone();
    let _ = quiet_name;
    // A hanging request holds on for 10 s before it times out.
    let h = Harness::with("fair-noisy", |s| {
        s.namespaces.clear();
        s.http.request_timeout = Duration::from_secs(10);
    })
    .await;

    let hanging = FaultServer::start().await;
    hanging.serve_metadata("/fhir");
    hanging.on("/token", Behaviour::Hang);
    for i in 0..NOISY {
        let name = format!("noisy-{i}");
        h.apply(&name, json!({"fhirBaseUrl": hanging.url("/fhir"), "clientId": name, "scopes": ["system/Patient.rs"]}))
            .await;
    }

    let healthy = FaultServer::start().await;
    healthy.serve_metadata("/fhir");
    healthy.on("/token", Behaviour::token("t", 60, None));
    let victims: Api<SmartBackendClient> = quiet.api();
    for i in 0..VICTIMS {
        let sbc: SmartBackendClient = serde_json::from_value(json!({
            "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
            "metadata": {"name": format!("victim-{i}")},
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
    assert!(
        metrics.contains("smart_backend_server_breaker_opened_total 1"),
        "the hanging server was paused once: {}",
        metrics
            .lines()
            .filter(|l| l.contains("breaker"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The hanging server saw a handful of requests, not one per reconcile.
    let sent = hanging.requests("/token").len();
    assert!(
        sent < NOISY * 2,
        "{sent} requests reached the hanging server"
    );
    eprintln!(
        "victim refreshes: {refreshes}, latest {worst:?} after plan; hanging server got {sent}"
    );
}
