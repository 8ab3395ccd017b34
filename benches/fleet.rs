//! Fleet and steady-state benchmarks: the operator binary (release build)
//! against the real control plane and the sandbox authorization server,
//! which verifies every assertion against the JWKS the operator hosts.
//!
//! Each scenario starts from a fresh control plane. It creates N
//! SmartBackendClients and measures the time from create to token Secret,
//! the wall time until all are Ready, the operator's peak RSS and CPU, and
//! API writes per client (from the operator's metrics, cross-checked with
//! the API server's `apiserver_request_total`). The steady-state scenario
//! then keeps 1,000 clients with 60-second tokens running and watches every
//! token Secret for one found past its refresh deadline or expiry. The
//! transit scenario signs with one OpenBao Transit key per client (a dev
//! server on loopback; `make signer-deps`) and reports its CPU and RSS.
//!
//! `make bench` runs it; `scripts/bench-report` turns the JSON results in
//! target/bench/fleet/ into BENCHMARKS.md. Choose scenarios with
//! FLEET_SCENARIOS (comma-separated names, default all) and the steady
//! window with FLEET_STEADY_SECONDS (default 600); FLEET_OPERATOR_ARGS adds
//! flags to the operator's, to measure a setting.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "fleet/transit.rs"]
mod transit;

#[path = "fleet/csi.rs"]
mod csi;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use smart_backend_operator::controller::Timing;
use smart_backend_operator::controller::decide::schedule::refresh_lead;
use smart_backend_operator::controller::decide::secret_data::{
    EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION, parse_rfc3339,
};
use smart_backend_operator::crd::SmartBackendClient;
use smart_backend_operator::sandbox::{Sandbox, SandboxClient, SandboxConfig, router};

const NAMESPACE: &str = "fleet";
const CREATE_CONCURRENCY: usize = 32;

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    clients: usize,
    algorithm: &'static str,
    token_lifetime: Duration,
    /// Steady-state window after all are Ready; None for a fleet run.
    steady: Option<Duration>,
    /// Keys in OpenBao Transit instead of generated ones.
    transit: bool,
    /// Tokens delivered by CSI (no Secret), and a leader change once all
    /// are Ready: how many token requests the new leader makes, and how
    /// soon every client has a token again.
    csi: bool,
}

fn scenarios() -> Vec<Scenario> {
    let steady = std::env::var("FLEET_STEADY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let fleet = |name, clients, algorithm| Scenario {
        name,
        clients,
        algorithm,
        token_lifetime: Duration::from_secs(3600),
        steady: None,
        transit: false,
        csi: false,
    };
    let all = vec![
        fleet("es384-100", 100, "ES384"),
        fleet("es384-1000", 1000, "ES384"),
        fleet("es384-5000", 5000, "ES384"),
        fleet("rs384-1000", 1000, "RS384"),
        Scenario {
            transit: true,
            ..fleet("transit-es384-1000", 1000, "ES384")
        },
        Scenario {
            name: "steady-1000",
            clients: 1000,
            algorithm: "ES384",
            token_lifetime: Duration::from_secs(60),
            steady: Some(Duration::from_secs(steady)),
            transit: false,
            csi: false,
        },
        Scenario {
            csi: true,
            ..fleet("csi-leader-change-1000", 1000, "ES384")
        },
    ];
    match std::env::var("FLEET_SCENARIOS") {
        Ok(chosen) if !chosen.is_empty() => {
            let names: Vec<&str> = chosen.split(',').map(str::trim).collect();
            all.into_iter()
                .filter(|s| names.contains(&s.name))
                .collect()
        }
        _ => all,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench
    // binaries without it, and this one restarts the control plane.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("fleet: runs only under `cargo bench` (make bench)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = support::cluster::repo_root().join("target/bench/fleet");
    std::fs::create_dir_all(&out).expect("results folder");
    for scenario in scenarios() {
        eprintln!("fleet: {} ...", scenario.name);
        let result = runtime.block_on(run(&scenario));
        let path = out.join(format!("{}.json", scenario.name));
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap())
            .expect("write result");
        eprintln!("{}", serde_json::to_string_pretty(&result).unwrap());
    }
    control_plane("down");
}

fn control_plane(verb: &str) {
    let script = support::cluster::repo_root().join("tests/cluster/control-plane");
    let status = Command::new(script)
        .arg(verb)
        .stdout(Stdio::null())
        .status()
        .expect("run the control-plane script");
    assert!(status.success(), "control-plane {verb} failed");
}

/// The operator binary, measured through /proc.
struct OperatorProcess {
    child: Child,
    admin: u16,
}

impl OperatorProcess {
    fn start(log: PathBuf, extra: &[String]) -> Self {
        Self::start_on(log, extra, support::process::free_port())
    }

    /// On a given admin port: the sandbox fetches the JWKS there.
    fn start_on(log: PathBuf, extra: &[String], admin: u16) -> Self {
        let log = std::fs::File::create(log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
            .args([
                "run",
                "--namespaces",
                NAMESPACE,
                "--insecure-allow-http",
                "--allow-host",
                "127.0.0.1",
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
                "--health-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            // FLEET_OPERATOR_ARGS: more flags, to measure a setting.
            .args(
                std::env::var("FLEET_OPERATOR_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("KUBECONFIG", support::cluster::kubeconfig_path())
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the operator");
        Self { child, admin }
    }

    fn proc_status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS:")
    }

    fn peak_rss_kib(&self) -> u64 {
        self.proc_status("VmHWM:")
    }

    /// User plus system CPU seconds used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) in parens.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks as f64 / clock_ticks_per_second()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .expect("operator metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        for _ in 0..300 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator did not become ready");
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Sums the samples of `metric` whose labels satisfy `keep`.
fn sum_metric(text: &str, metric: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric))
        .filter(|l| keep(l))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn label<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    line.find(&key)
        .map(|i| &line[i + key.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Writes the API server has served to the operator's objects: Secrets,
/// SmartBackendClient status, Events. (The bench's own creates of the
/// SmartBackendClients are on the main resource and are not counted.)
fn apiserver_operator_writes(text: &str) -> f64 {
    sum_metric(text, "apiserver_request_total{", |l| {
        let mutating = matches!(
            label(l, "verb"),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE"
        );
        let resource = label(l, "resource");
        let subresource = label(l, "subresource");
        mutating
            && (resource == "secrets"
                || resource == "events"
                || (resource == "smartbackendclients" && subresource == "status"))
    })
}

/// Single-object reads (GET) of Secrets: what the operator reads per reconcile.
fn apiserver_secret_reads(text: &str) -> f64 {
    sum_metric(text, "apiserver_request_total{", |l| {
        label(l, "verb") == "GET" && label(l, "resource") == "secrets"
    })
}

fn operator_writes(text: &str) -> f64 {
    sum_metric(text, "smart_backend_api_writes_total", |_| true)
}

fn operator_writes_by_kind(text: &str) -> BTreeMap<String, f64> {
    let mut by_kind = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("smart_backend_api_writes_total"))
    {
        if let Some((_, v)) = line.rsplit_once(' ') {
            *by_kind.entry(label(line, "kind").to_string()).or_default() +=
                v.parse::<f64>().unwrap_or(0.0);
        }
    }
    by_kind
}

fn successful_token_requests(text: &str) -> f64 {
    sum_metric(text, "smart_backend_token_requests_total", |l| {
        label(l, "result") == "success"
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn client_index(name: &str, suffix: &str) -> Option<usize> {
    name.strip_prefix("c-")?.strip_suffix(suffix)?.parse().ok()
}

fn rfc3339(value: Option<&String>) -> Option<SystemTime> {
    parse_rfc3339(value?)
}

#[derive(Default)]
struct Observed {
    created: HashMap<usize, Instant>,
    first_token: HashMap<usize, Instant>,
    ready: HashMap<usize, Instant>,
    /// Per client: the (issued, expires) of the token Secret last seen.
    tokens: HashMap<usize, (SystemTime, SystemTime)>,
    /// Refreshes seen in Secrets: seconds after the planned refresh time
    /// (negative when early).
    lateness: Vec<f64>,
    refreshes_seen: u64,
}

async fn start_sandbox(clients: usize, operator_admin: u16, lifetime: Duration) -> u16 {
    // The sandbox names its own URL in its metadata, so the port is chosen first.
    let port = support::process::free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let sandbox = Sandbox::new(
        SandboxConfig {
            base_url: base_url.clone(),
            token_lifetime: lifetime,
            clients: (0..clients)
                .map(|i| SandboxClient {
                    client_id: format!("c-{i}"),
                    jwks_uri: Some(format!(
                        "http://127.0.0.1:{operator_admin}/jwks/{NAMESPACE}/c-{i}"
                    )),
                    jwks: None,
                    scopes: Vec::new(),
                })
                .collect(),
        },
        support::local_http(),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind sandbox");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(sandbox)).await;
    });
    port
}

fn watch_token_secrets(client: kube::Client, observed: Arc<Mutex<Observed>>) {
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let secret = match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                _ => continue,
            };
            let Some(i) = secret
                .metadata
                .name
                .as_deref()
                .and_then(|n| client_index(n, "-token"))
            else {
                continue;
            };
            let annotations = secret.metadata.annotations.unwrap_or_default();
            let issued = rfc3339(annotations.get(ISSUED_AT_ANNOTATION));
            let expires = rfc3339(annotations.get(EXPIRES_AT_ANNOTATION));
            let mut seen = observed.lock().unwrap();
            seen.first_token.entry(i).or_insert_with(Instant::now);
            if let (Some(issued), Some(expires)) = (issued, expires) {
                if let Some((old_issued, old_expires)) = seen.tokens.get(&i).copied()
                    && old_issued != issued
                {
                    let planned = planned_refresh(old_issued, old_expires);
                    let late = match issued.duration_since(planned) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    seen.lateness.push(late);
                    seen.refreshes_seen += 1;
                }
                seen.tokens.insert(i, (issued, expires));
            }
        }
    });
}

/// When the operator plans to refresh a token (before jitter, which only
/// moves it earlier).
fn planned_refresh(issued: SystemTime, expires: SystemTime) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    expires - refresh_lead(lifetime, None, &Timing::default())
}

/// The refresh deadline: halfway from the planned refresh to expiry. A
/// token Secret still holding a token past it is late.
fn refresh_deadline(issued: SystemTime, expires: SystemTime) -> SystemTime {
    let planned = planned_refresh(issued, expires);
    planned + expires.duration_since(planned).unwrap_or_default() / 2
}

fn watch_ready(client: kube::Client, observed: Arc<Mutex<Observed>>) {
    let api: Api<SmartBackendClient> = Api::namespaced(client, NAMESPACE);
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let sbc = match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                _ => continue,
            };
            let ready = sbc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if let (true, Some(i)) = (
                ready,
                sbc.metadata
                    .name
                    .as_deref()
                    .and_then(|n| client_index(n, "")),
            ) {
                observed
                    .lock()
                    .unwrap()
                    .ready
                    .entry(i)
                    .or_insert_with(Instant::now);
            }
        }
    });
}

async fn apiserver_metrics(client: &kube::Client) -> String {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    client
        .request_text(request)
        .await
        .expect("API server metrics")
}

async fn run(scenario: &Scenario) -> serde_json::Value {
    control_plane("down");
    control_plane("up");
    let client = support::cluster::client().await;
    support::operator::install_crd(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
        )
        .await
        .expect("create namespace");

    let logs = support::cluster::repo_root().join("target/bench/fleet");
    let transit = match scenario.transit {
        true => Some(transit::TransitFleet::start(NAMESPACE, scenario.clients).await),
        false => None,
    };
    let mut extra = transit
        .as_ref()
        .map(|t| t.operator_args())
        .unwrap_or_default();
    if scenario.csi {
        extra.extend(csi::operator_args());
    }
    let log = logs.join(format!("{}.operator.log", scenario.name));
    let operator = OperatorProcess::start(log, &extra);
    let sandbox_port =
        start_sandbox(scenario.clients, operator.admin, scenario.token_lifetime).await;
    operator.wait_ready().await;

    let observed = Arc::new(Mutex::new(Observed::default()));
    watch_token_secrets(client.clone(), observed.clone());
    watch_ready(client.clone(), observed.clone());
    let api_before = apiserver_metrics(&client).await;
    let ops_before = operator.metrics().await;
    let cpu_before = operator.cpu_seconds();
    let rss_idle = operator.rss_kib();
    let key_manager_before = transit.as_ref().map(|t| t.usage());

    let sbcs: Api<SmartBackendClient> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let fhir = format!("http://127.0.0.1:{sandbox_port}/fhir");
    futures_util::stream::iter(0..scenario.clients)
        .map(|i| {
            let sbcs = sbcs.clone();
            let observed = observed.clone();
            let signing = match scenario.transit {
                true => json!({"vaultTransit": {"key": format!("c-{i}")}}),
                false => json!({"algorithm": scenario.algorithm}),
            };
            let delivery = if scenario.csi { "CSI" } else { "Secret" };
            let body = json!({
                "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
                "metadata": {"name": format!("c-{i}")},
                "spec": {
                    "fhirBaseUrl": fhir, "clientId": format!("c-{i}"),
                    "scopes": ["system/Patient.rs"],
                    "signing": signing,
                    "token": {"delivery": delivery},
                },
            });
            async move {
                let sbc: SmartBackendClient = serde_json::from_value(body).unwrap();
                sbcs.create(&PostParams::default(), &sbc)
                    .await
                    .expect("create SmartBackendClient");
                observed.lock().unwrap().created.insert(i, Instant::now());
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let created_in = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut peak_sampled = 0;
    while observed.lock().unwrap().ready.len() < scenario.clients && Instant::now() < deadline {
        peak_sampled = peak_sampled.max(operator.rss_kib());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_ready = observed.lock().unwrap().ready.len();
    let wall = {
        let seen = observed.lock().unwrap();
        seen.ready
            .values()
            .max()
            .map(|t| t.duration_since(started).as_secs_f64())
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_fleet = operator.cpu_seconds() - cpu_before;
    let api_after = apiserver_metrics(&client).await;
    let ops_after = operator.metrics().await;
    let rss_after_fleet = operator.rss_kib();
    let mut latencies: Vec<f64> = {
        let seen = observed.lock().unwrap();
        seen.created
            .iter()
            .filter_map(|(i, created)| {
                seen.first_token
                    .get(i)
                    .map(|t| t.saturating_duration_since(*created).as_secs_f64())
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let n = scenario.clients as f64;
    let op_writes = operator_writes(&ops_after) - operator_writes(&ops_before);
    let api_writes = apiserver_operator_writes(&api_after) - apiserver_operator_writes(&api_before);
    let mut result = json!({
        "scenario": scenario.name,
        "clients": scenario.clients,
        "algorithm": scenario.algorithm,
        "token_lifetime_seconds": scenario.token_lifetime.as_secs(),
        "ready": all_ready,
        "created_in_seconds": created_in.as_secs_f64(),
        "wall_until_all_ready_seconds": wall,
        "create_to_token_secret_seconds": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied(),
        },
        "operator": {
            "cpu_seconds": cpu_fleet,
            "peak_rss_mib": operator.peak_rss_kib() as f64 / 1024.0,
            "rss_idle_mib": rss_idle as f64 / 1024.0,
            "rss_after_mib": rss_after_fleet as f64 / 1024.0,
            "sampled_peak_rss_mib": peak_sampled as f64 / 1024.0,
        },
        "api_writes_per_client": {
            "operator_metrics": op_writes / n,
            "apiserver_request_total": api_writes / n,
            "by_kind": operator_writes_by_kind(&ops_after),
        },
        "secret_reads_per_client": (apiserver_secret_reads(&api_after) - apiserver_secret_reads(&api_before)) / n,
        "reconciles_per_client": (sum_metric(&ops_after, "smart_backend_reconciles_total", |_| true) - sum_metric(&ops_before, "smart_backend_reconciles_total", |_| true)) / n,
        "unchanged_reconciles_per_client": (sum_metric(&ops_after, "smart_backend_reconciles_unchanged_total", |_| true) - sum_metric(&ops_before, "smart_backend_reconciles_unchanged_total", |_| true)) / n,
        "token_requests_per_client": (successful_token_requests(&ops_after) - successful_token_requests(&ops_before)) / n,
        "reconciles_put_off_per_client": (sum_metric(&ops_after, "smart_backend_reconciles_deferred_total", |_| true) - sum_metric(&ops_before, "smart_backend_reconciles_deferred_total", |_| true)) / n,
    });

    if let (Some(t), Some((cpu, _))) = (&transit, key_manager_before) {
        let (cpu_after, rss) = t.usage();
        result["key_manager"] = json!({"cpu_seconds": cpu_after - cpu, "rss_mib": rss});
    }
    if let Some(window) = scenario.steady {
        result["steady"] = steady_state(&client, &operator, &observed, window).await;
    }
    if scenario.csi {
        let log = logs.join(format!("{}.new-leader.log", scenario.name));
        let admin = operator.admin;
        drop(operator);
        let (new_leader, measured) = csi::leader_change(scenario.clients, || {
            OperatorProcess::start_on(log, &extra, admin)
        })
        .await;
        result["leader_change"] = measured;
        drop(new_leader);
        return result;
    }
    drop(operator);
    result
}

async fn steady_state(
    client: &kube::Client,
    operator: &OperatorProcess,
    observed: &Arc<Mutex<Observed>>,
    window: Duration,
) -> serde_json::Value {
    // Let the first round of refreshes (all due together after the burst of
    // creates, then spread by jitter) settle before measuring.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let api_before = apiserver_metrics(client).await;
    let ops_before = operator.metrics().await;
    let cpu_before = operator.cpu_seconds();
    let rss_start = operator.rss_kib();
    let seen_before = {
        let mut seen = observed.lock().unwrap();
        seen.lateness.clear();
        seen.refreshes_seen
    };
    let started = Instant::now();
    let mut late: HashSet<(usize, SystemTime)> = HashSet::new();
    let mut expired: HashSet<(usize, SystemTime)> = HashSet::new();
    let mut rss_samples = Vec::new();
    let mut checks = 0u64;
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = SystemTime::now();
        checks += 1;
        for (i, (issued, expires)) in observed.lock().unwrap().tokens.iter() {
            if now > *expires {
                expired.insert((*i, *issued));
            } else if now > refresh_deadline(*issued, *expires) {
                late.insert((*i, *issued));
            }
        }
        if checks.is_multiple_of(10) {
            rss_samples.push(operator.rss_kib());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = operator.cpu_seconds() - cpu_before;
    let api_after = apiserver_metrics(client).await;
    let ops_after = operator.metrics().await;
    let refreshes = successful_token_requests(&ops_after) - successful_token_requests(&ops_before);
    let op_writes = operator_writes(&ops_after) - operator_writes(&ops_before);
    let api_writes = apiserver_operator_writes(&api_after) - apiserver_operator_writes(&api_before);
    let (mut lateness, refreshes_seen) = {
        let seen = observed.lock().unwrap();
        (seen.lateness.clone(), seen.refreshes_seen - seen_before)
    };
    lateness.sort_by(f64::total_cmp);
    json!({
        "window_seconds": elapsed,
        "refreshes": refreshes,
        "refreshes_seen_in_secrets": refreshes_seen,
        "refreshes_per_second": refreshes / elapsed,
        "cpu_seconds": cpu,
        "cpu_ms_per_refresh": 1000.0 * cpu / refreshes.max(1.0),
        "cpu_seconds_per_1000_refreshes": 1000.0 * cpu / refreshes.max(1.0),
        "rss_start_mib": rss_start as f64 / 1024.0,
        "rss_end_mib": operator.rss_kib() as f64 / 1024.0,
        "rss_samples_mib": rss_samples.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>(),
        "secret_reads_per_refresh": (apiserver_secret_reads(&api_after) - apiserver_secret_reads(&api_before)) / refreshes.max(1.0),
        "reconciles_per_refresh": (sum_metric(&ops_after, "smart_backend_reconciles_total", |_| true) - sum_metric(&ops_before, "smart_backend_reconciles_total", |_| true)) / refreshes.max(1.0),
        "unchanged_reconciles_per_refresh": (sum_metric(&ops_after, "smart_backend_reconciles_unchanged_total", |_| true) - sum_metric(&ops_before, "smart_backend_reconciles_unchanged_total", |_| true)) / refreshes.max(1.0),
        "api_writes_per_refresh": {
            "operator_metrics": op_writes / refreshes.max(1.0),
            "apiserver_request_total": api_writes / refreshes.max(1.0),
        },
        "refresh_lateness_seconds": {
            "p50": percentile(&lateness, 50.0),
            "p99": percentile(&lateness, 99.0),
            "max": lateness.last().copied(),
        },
        "secrets_seen_past_refresh_deadline": late.len(),
        "secrets_seen_expired": expired.len(),
        "checks": checks,
    })
}
