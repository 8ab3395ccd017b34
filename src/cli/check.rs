//! `check`: is a running installation healthy? Used by the chart's
//! `helm test` pod, and by hand from anywhere with a kubeconfig. It checks,
//! as the identity it runs with:
//! - the API server answers and SmartBackendClients can be listed (the CRD
//!   is installed and served);
//! - with `--lease`: a replica holds the leader Lease and renewed it within
//!   its duration (someone is writing tokens);
//! - with `--service`: the Service has ready endpoints, and each answers
//!   `/readyz` and `/healthz` (its JWKS cache is in sync).
//!
//! Each check is retried until `--timeout`; the command prints one line per
//! check and fails with what is wrong and what to look at.

use std::future::Future;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use crate::crd::SmartBackendClient;

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The namespace the operator runs in.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The leader Lease to check (leader election on).
    #[arg(long)]
    pub lease: Option<String>,
    /// The operator's Service; each ready endpoint must answer /readyz.
    #[arg(long)]
    pub service: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = super::run::duration)]
    pub timeout: Duration,
}

/// Who holds the Lease, or why nobody usefully does.
pub fn lease_holder(spec: Option<&LeaseSpec>, now: Timestamp) -> Result<String, String> {
    let spec = spec.ok_or("the Lease has no spec")?;
    let holder = spec
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
        .ok_or("no replica holds the Lease")?;
    let renewed = spec
        .renew_time
        .as_ref()
        .ok_or_else(|| format!("{holder} holds the Lease but never renewed it"))?
        .0;
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    let age = now.as_second() - renewed.as_second();
    if age > seconds {
        return Err(format!(
            "{holder} last renewed the Lease {age} s ago, more than its {seconds} s duration: that replica is gone or cannot reach the API server"
        ));
    }
    Ok(holder)
}

/// The admin addresses (`ip:port`) of the ready endpoints of a Service.
pub fn ready_endpoints(slices: &[EndpointSlice], port_name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                out.push(if address.contains(':') {
                    format!("[{address}]:{port}")
                } else {
                    format!("{address}:{port}")
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// An API error the way a person reads it: the server's message, not the
/// whole status structure.
fn api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

async fn clients_listed(client: &kube::Client, ns: &str) -> Result<String, String> {
    let api: Api<SmartBackendClient> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().limit(1))
        .await
        .map(|_| "SmartBackendClients can be listed (the CRD is served)".to_owned())
        .map_err(|e| {
            let e = api_error(&e);
            format!("listing SmartBackendClients in {ns} failed: {e}; is the CRD installed?")
        })
}

async fn lease_held(client: &kube::Client, ns: &str, name: &str) -> Result<String, String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("reading the Lease {ns}/{name} failed: {}", api_error(&e)))?;
    lease_holder(lease.spec.as_ref(), Timestamp::now())
        .map(|holder| format!("{holder} leads (Lease {ns}/{name})"))
        .map_err(|problem| format!("Lease {ns}/{name}: {problem}"))
}

async fn endpoints_answer(
    client: &kube::Client,
    http: &reqwest::Client,
    ns: &str,
    service: &str,
) -> Result<String, String> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| {
            let e = api_error(&e);
            format!("listing the endpoints of Service {ns}/{service} failed: {e}")
        })?;
    let endpoints = ready_endpoints(&slices.items, "admin");
    if endpoints.is_empty() {
        return Err(format!(
            "Service {ns}/{service} has no ready endpoint: see `kubectl -n {ns} describe pods` for the operator pods' readiness"
        ));
    }
    for endpoint in &endpoints {
        for path in ["/readyz", "/healthz"] {
            let url = format!("http://{endpoint}{path}");
            let response = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{url} did not answer: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                // Why, as the operator says it (a stall names how long the
                // oldest refresh has been overdue), cut to one line.
                let why = response.text().await.unwrap_or_default();
                let why: String = why
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                return Err(format!("{url} answered {status}: {why}"));
            }
        }
    }
    Ok(format!(
        "Service {ns}/{service}: {} ready endpoint(s) answer /readyz and /healthz",
        endpoints.len()
    ))
}

/// Runs `attempt` until it succeeds or the deadline passes; the last outcome.
async fn until_ok<F, Fut>(deadline: Instant, mut attempt: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    loop {
        let outcome = attempt().await;
        if outcome.is_ok() || Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration found (in-cluster or KUBECONFIG): {e}")
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + args.timeout;
    let ns = args.namespace.as_str();
    let mut outcomes = vec![until_ok(deadline, || clients_listed(&client, ns)).await];
    if let Some(name) = &args.lease {
        outcomes.push(until_ok(deadline, || lease_held(&client, ns, name)).await);
    }
    if let Some(name) = &args.service {
        outcomes.push(until_ok(deadline, || endpoints_answer(&client, &http, ns, name)).await);
    }
    for outcome in &outcomes {
        match outcome {
            Ok(line) => println!("ok: {line}"),
            Err(problem) => println!("FAILED: {problem}"),
        }
    }
    if outcomes.iter().any(Result::is_err) {
        anyhow::bail!("the installation in {ns} is not healthy (see FAILED above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
