//! The chaos soak: two operator replicas keep 1,000 clients with 60-second
//! tokens fresh, every client rotating its key, while the API server and
//! etcd restart, the token server drops and hangs connections, and the
//! leader is killed with SIGKILL (always in the middle of some rotations,
//! since a thousand clients rotate all the time). The token server is the
//! sandbox with a strict JWK Set cache: a key it has not fetched before its
//! cached set expires is refused, as a strict EHR would.
//!
//! It checks what a hospital would ask of it: no token Secret past expiry,
//! no key lost (every client ends Ready, signing with the key its Secret
//! holds, and never said KeyMissing), and no request refused by the server.
//! It prints the figures as JSON (also written to target/bench/chaos/) and
//! exits non-zero when one of those fails.
//!
//! `cargo bench --bench chaos` runs it; CHAOS_SECONDS sets the window
//! (default 1800), CHAOS_CLIENTS the clients (default 1000) and
//! CHAOS_FAULTS the kinds of fault (`apiserver,etcd,token,kill`, all by
//! default; one kind on its own shows what it costs). Not in CI:
//! it takes the machine for half an hour and restarts the control plane.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/observe.rs"]
mod observe;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;
use smart_backend_operator::crd::SmartBackendClient;
use smart_backend_operator::sandbox::{JwksCaching, Sandbox, SandboxClient, SandboxConfig, router};
use support::process::{Launch, OperatorProcess, free_port};

const NAMESPACE: &str = "chaos";
const LEASE: &str = "sbo-chaos";
/// The JWKS max-age the operators serve and the strict server keeps a set.
const JWKS_MAX_AGE: Duration = Duration::from_secs(60);
const ROTATE_EVERY: &str = "6m";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("chaos: runs only under `cargo bench --bench chaos`");
        return;
    }
    // The sandbox says why it refuses an assertion (and the kid).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "smart_backend_operator::sandbox=warn",
        ))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let window = Duration::from_secs(env_or("CHAOS_SECONDS", 1800));
    let clients = env_or("CHAOS_CLIENTS", 1000) as usize;
    let result = runtime.block_on(soak(window, clients));
    let out = support::cluster::repo_root().join("target/bench/chaos");
    std::fs::create_dir_all(&out).expect("results folder");
    let text = serde_json::to_string_pretty(&result).unwrap_or_default();
    std::fs::write(out.join("result.json"), &text).expect("write result");
    println!("{text}");
    control_plane("down");
    let failed = result["verdict"]["failed"].as_array().map_or(0, Vec::len);
    if failed > 0 {
        eprintln!("chaos: FAILED: {}", result["verdict"]["failed"]);
        std::process::exit(1);
    }
}

pub fn control_plane(verb: &str) {
    let script = support::cluster::repo_root().join("tests/cluster/control-plane");
    let status = Command::new(script)
        .arg(verb)
        .stdout(Stdio::null())
        .status()
        .expect("run the control-plane script");
    assert!(status.success(), "control-plane {verb} failed");
}

/// One operator replica, restarted after each kill.
struct Replica {
    name: &'static str,
    process: OperatorProcess,
    kills: u32,
    /// Times the process exited by itself and was started again, as the
    /// kubelet would.
    exits: u32,
}

impl Replica {
    fn start(name: &'static str, port: u16) -> Self {
        Self {
            name,
            process: spawn(name, port),
            kills: 0,
            exits: 0,
        }
    }

    fn kill_and_restart(&mut self) {
        self.process.kill();
        self.kills += 1;
        self.process = spawn(self.name, self.process.port);
    }

    /// Starts the replica again if it exited by itself; returns whether.
    fn restart_if_exited(&mut self) -> bool {
        if !self.process.exited() {
            return false;
        }
        self.exits += 1;
        self.process = spawn(self.name, self.process.port);
        true
    }
}

fn spawn(name: &str, port: u16) -> OperatorProcess {
    let kubeconfig = support::cluster::kubeconfig_path();
    let launch = Launch {
        kubeconfig: &kubeconfig,
        watch_namespace: NAMESPACE,
        lease_namespace: NAMESPACE,
        lease_name: LEASE,
        lease_duration: Duration::from_secs(10),
        admin_port: port,
    };
    let max_age = JWKS_MAX_AGE.as_secs().to_string();
    // CHAOS_RUST_LOG adds to what the replicas log, to study one fault.
    let mut log = "warn,smart_backend_operator::runtime=info".to_string();
    if let Ok(more) = std::env::var("CHAOS_RUST_LOG") {
        log = format!("{log},{more}");
    }
    OperatorProcess::spawn_args(
        &launch,
        // Leadership changes are logged, to read expiries against them.
        &[("POD_NAME", name), ("RUST_LOG", &log)],
        &[
            "--jwks-max-age",
            &max_age,
            "--rotation-margin",
            "15s",
            // The default floor, as in production: a 60-second token is
            // refreshed at half its life, not as soon as a floor allows.
            "--min-refresh-interval",
            "30s",
        ],
    )
}

async fn leader(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let lease = leases.get(LEASE).await.ok()?;
    lease.spec?.holder_identity
}

async fn soak(window: Duration, clients: usize) -> serde_json::Value {
    control_plane("down");
    control_plane("up");
    let client = support::cluster::client().await;
    support::operator::install_crd(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}));
    namespaces
        .create(&PostParams::default(), &namespace.expect("namespace"))
        .await
        .expect("create namespace");

    // Two replicas behind one address for the JWKS, as a Service is.
    let ports = [free_port(), free_port()];
    let mut replicas = [
        Replica::start("replica-a", ports[0]),
        Replica::start("replica-b", ports[1]),
    ];
    let jwks = faults::balance(ports.to_vec()).await;

    // The token server behind a proxy that drops and hangs connections.
    let proxy_port = free_port();
    let sandbox_port = free_port();
    let sandbox = Sandbox::with_caching(
        SandboxConfig {
            base_url: format!("http://127.0.0.1:{proxy_port}"),
            token_lifetime: Duration::from_secs(60),
            clients: (0..clients)
                .map(|i| SandboxClient {
                    client_id: format!("c-{i}"),
                    jwks_uri: Some(format!("http://127.0.0.1:{jwks}/jwks/{NAMESPACE}/c-{i}")),
                    jwks: None,
                    scopes: Vec::new(),
                })
                .collect(),
        },
        support::local_http(),
        JwksCaching::Strict(JWKS_MAX_AGE),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", sandbox_port))
        .await
        .expect("bind sandbox");
    let served = router(sandbox.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, served).await;
    });
    let faulty = faults::proxy(proxy_port, sandbox_port).await;

    let seen = observe::watch(client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let sbcs: Api<SmartBackendClient> = Api::namespaced(client.clone(), NAMESPACE);
    let fhir = format!("http://127.0.0.1:{proxy_port}/fhir");
    futures_util::stream::iter(0..clients)
        .map(|i| {
            let body = json!({
                "apiVersion": "smartbackend.dev/v1alpha1", "kind": "SmartBackendClient",
                "metadata": {"name": format!("c-{i}")},
                "spec": {
                    "fhirBaseUrl": fhir, "clientId": format!("c-{i}"),
                    "scopes": ["system/Patient.rs"],
                    "signing": {"algorithm": "ES384", "rotation": {"every": ROTATE_EVERY}},
                },
            });
            let sbcs = sbcs.clone();
            async move {
                let sbc: SmartBackendClient = serde_json::from_value(body).expect("client");
                sbcs.create(&PostParams::default(), &sbc)
                    .await
                    .expect("create SmartBackendClient");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let ready_by = Instant::now() + Duration::from_secs(600);
    while seen.ready_count() < clients && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ready_at_start = seen.ready_count();
    eprintln!("chaos: {ready_at_start} of {clients} Ready; the soak starts");

    let cpu_before: Vec<f64> = replicas
        .iter()
        .map(|r| observe::cpu_seconds(&r.process))
        .collect();
    let refused_before = sandbox.refused();
    seen.start_counting();
    let kinds = std::env::var("CHAOS_FAULTS").ok();
    let mut plan = faults::Plan::over(window, kinds.as_deref());
    let started = Instant::now();
    let mut log = Vec::new();
    let mut peak_rss_mib = 0.0f64;
    let mut next_kill = plan.kill_every.unwrap_or_default();
    while started.elapsed() < window {
        let t = started.elapsed();
        for event in plan.due(t) {
            log.push(json!({"at": t.as_secs(), "fault": format!("{event:?}")}));
            eprintln!("chaos: {:>4} s {event:?}", t.as_secs());
            event.apply(&faulty).await;
        }
        if let Some(every) = plan.kill_every
            && t >= next_kill
        {
            next_kill += every;
            let holder = leader(&client).await.unwrap_or_default();
            if let Some(r) = replicas.iter_mut().find(|r| holder.starts_with(r.name)) {
                log.push(json!({"at": t.as_secs(), "fault": format!("SIGKILL {}", r.name)}));
                eprintln!("chaos: {:>4} s SIGKILL the leader {}", t.as_secs(), r.name);
                r.kill_and_restart();
            }
        }
        for r in &mut replicas {
            if r.restart_if_exited() {
                log.push(
                    json!({"at": t.as_secs(), "fault": format!("{} exited by itself", r.name)}),
                );
                eprintln!("chaos: {:>4} s {} exited by itself", t.as_secs(), r.name);
            }
        }
        for r in &replicas {
            peak_rss_mib = peak_rss_mib.max(observe::rss_mib(&r.process));
        }
        seen.check_expiry(&secrets).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    faults::Fault::TokenServerHealthy.apply(&faulty).await;
    // A calm minute and a half for what is in flight to settle.
    for _ in 0..90 {
        seen.check_expiry(&secrets).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu: f64 = replicas
        .iter()
        .zip(&cpu_before)
        .map(|(r, before)| (observe::cpu_seconds(&r.process) - before).max(0.0))
        .sum();
    let exits: u32 = replicas.iter().map(|r| r.exits).sum();
    let end = observe::final_state(&client, NAMESPACE, clients).await;
    let counts = seen.counts();
    let refused = sandbox.refused() - refused_before;
    let mut failed = Vec::new();
    if counts.expired > 0 {
        failed.push(format!(
            "{} token Secrets were seen past expiry",
            counts.expired
        ));
    }
    if exits > 0 {
        failed.push(format!("replicas exited by themselves {exits} times"));
    }
    if refused > 0 {
        failed.push(format!("the server refused {refused} requests"));
    }
    if counts.key_missing > 0 || end.lost_keys > 0 {
        failed.push(format!(
            "keys lost: {} KeyMissing conditions, {} clients not signing with their Secret's key",
            counts.key_missing, end.lost_keys
        ));
    }
    if end.ready < clients {
        failed.push(format!(
            "{} of {clients} clients Ready at the end",
            end.ready
        ));
    }
    json!({
        "window_seconds": window.as_secs(),
        "clients": clients,
        "token_lifetime_seconds": 60,
        "rotation_every": ROTATE_EVERY,
        "jwks_max_age_seconds": JWKS_MAX_AGE.as_secs(),
        "ready_at_start": ready_at_start,
        "faults": log,
        "leader_kills": replicas.iter().map(|r| r.kills).sum::<u32>(),
        "replica_exits": exits,
        "token_secrets_seen_expired": counts.expired,
        "expiries_by_10_seconds": counts.expired_by_10s,
        "expiries_the_watch_showed_that_a_read_found_renewed": counts.watch_behind,
        "token_secrets_seen_past_refresh_deadline": counts.late,
        "refreshes_seen": counts.refreshes,
        "rotations_seen": counts.rotations,
        "key_missing_conditions": counts.key_missing,
        "requests_refused_by_the_server": refused,
        "requests_failed_at_the_proxy": faulty.faulted(),
        "end": {"ready": end.ready, "lost_keys": end.lost_keys},
        "operators": {"cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib},
        "verdict": {"failed": failed},
    })
}
