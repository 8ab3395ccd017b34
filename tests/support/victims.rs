//! Healthy clients watched while something else goes on: every refresh is
//! compared with the time the status planned for it, and every token with
//! its expiry. The proof that one tenant does not hurt another.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use kube::api::Api;
use serde_json::{Value, json};
use smart_backend_operator::controller::decide::secret_data::parse_rfc3339;
use smart_backend_operator::crd::SmartBackendClient;

use super::fault_server::{Behaviour, FaultServer};

/// How late a refresh may come after its plan.
pub const MAX_LATE: Duration = Duration::from_secs(5);

/// Clients with 60-second tokens from a server of their own.
pub struct Victims {
    pub api: Api<SmartBackendClient>,
    pub count: usize,
    pub server: FaultServer,
}

/// What the watch saw.
#[derive(Debug)]
pub struct Report {
    pub refreshes: usize,
    pub worst: Duration,
    pub with_tokens: usize,
}

impl Victims {
    /// Creates `count` clients (`victim-0` ...) with `labels` in `api`'s
    /// namespace, refreshing 45 s before their 60-second tokens expire.
    pub async fn create(api: Api<SmartBackendClient>, count: usize, labels: Value) -> Self {
        let server = FaultServer::start().await;
        server.serve_metadata("/fhir");
        server.on("/token", Behaviour::token("t", 60, None));
        for i in 0..count {
            let sbc: SmartBackendClient = serde_json::from_value(json!({
                "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
                "metadata": {"name": format!("victim-{i}"), "labels": labels.clone()},
                "spec": {"fhirBaseUrl": server.url("/fhir"), "clientId": format!("victim-{i}"),
                         "scopes": ["system/Patient.rs"], "token": {"refreshBefore": "45s"}},
            }))
            .unwrap();
            api.create(&Default::default(), &sbc).await.unwrap();
        }
        Self { api, count, server }
    }

    /// Watches the clients for `duration`; panics on a refresh more than
    /// [`MAX_LATE`] after its plan or on an expired token.
    pub async fn watch(&self, duration: Duration) -> Report {
        let mut planned: HashMap<String, (String, String)> = HashMap::new();
        let mut refreshes = 0;
        let mut worst = Duration::ZERO;
        let started = Instant::now();
        while started.elapsed() < duration {
            for sbc in self.api.list(&Default::default()).await.unwrap() {
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
                    parse_rfc3339(&expires).unwrap() > SystemTime::now(),
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
                    assert!(late <= MAX_LATE, "{name} refreshed {late:?} after its plan");
                }
                planned.insert(name, (last, next));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Report {
            refreshes,
            worst,
            with_tokens: planned.len(),
        }
    }
}
