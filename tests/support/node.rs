//! The test node (`tests/cluster/control-plane node up`): its address on
//! the pod network, a sandbox SMART server there, and what the runtime
//! enforces on a container's process.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};
use smart_backend_operator::sandbox::{Sandbox, SandboxClient, SandboxConfig, router};
use smart_backend_operator::smart::{DestinationPolicy, HttpClient, HttpPolicy};

pub const NODE: &str = "smart-node";
/// The node's taint; pods meant for it tolerate it.
pub const TAINT_KEY: &str = "smartbackend.dev/test-node";

pub fn toleration() -> Value {
    json!({"key": TAINT_KEY, "operator": "Exists"})
}

/// This host's address on the pod network, from the node's status. The
/// node must be up: a missing node fails the test.
pub async fn host_ip(client: &kube::Client) -> String {
    let node = Api::<Node>::all(client.clone())
        .get_opt(NODE)
        .await
        .expect("read the node")
        .unwrap_or_else(|| {
            panic!("no node {NODE}: start it with `tests/cluster/control-plane node up`")
        });
    node.status
        .and_then(|s| s.addresses)
        .into_iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .expect("the node's InternalIP")
}

/// The sandbox on `ip` (this host's pod-network address), reachable from
/// pods, with one client whose keys it fetches from `jwks_uri` (which may
/// be a pod's address). Returns its base URL.
pub async fn sandbox(ip: &str, client_id: &str, scope: &str, jwks_uri: String) -> String {
    sandbox_with(ip, client_id, scope, jwks_uri, Duration::from_secs(300)).await
}

/// [`sandbox`] with tokens of `lifetime`.
pub async fn sandbox_with(
    ip: &str,
    client_id: &str,
    scope: &str,
    jwks_uri: String,
    lifetime: Duration,
) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("listen on the pod network address");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let jwks_host = url::Url::parse(&jwks_uri)
        .expect("jwks_uri")
        .host_str()
        .expect("a host")
        .to_string();
    let http = HttpClient::new(HttpPolicy {
        allow_http: true,
        destinations: DestinationPolicy {
            allow_hosts: vec!["127.0.0.1".into(), jwks_host],
            block_private: false,
        },
        ..HttpPolicy::default()
    })
    .expect("HTTP client");
    let sandbox = Sandbox::new(
        SandboxConfig {
            base_url: base.clone(),
            token_lifetime: lifetime,
            clients: vec![SandboxClient {
                client_id: client_id.into(),
                jwks_uri: Some(jwks_uri),
                jwks: None,
                scopes: vec![scope.into()],
            }],
        },
        http,
    );
    tokio::spawn(async move { axum::serve(listener, router(sandbox)).await });
    base
}

/// What the kernel says of a process: its `/proc/PID/status` fields and
/// whether its root filesystem is mounted read-only.
#[derive(Debug)]
pub struct Confinement {
    pub uids: String,
    pub effective_capabilities: String,
    pub seccomp: String,
    pub no_new_privileges: String,
    pub read_only_root: bool,
}

pub fn confinement(pid: u32) -> Confinement {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    // Fields: id parent major:minor root mount-point options ...
    let read_only_root = mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&"/")
            && fields
                .get(5)
                .is_some_and(|o| o.split(',').any(|o| o == "ro"))
    });
    Confinement {
        uids: field("Uid"),
        effective_capabilities: field("CapEff"),
        seccomp: field("Seccomp"),
        no_new_privileges: field("NoNewPrivs"),
        read_only_root,
    }
}

/// The host PID of a running container, by the id in its pod status
/// (`containerd://<id>`), as the node's containerd reports it.
pub fn container_pid(container_id: &str) -> u32 {
    let id = container_id
        .strip_prefix("containerd://")
        .expect("a containerd container id");
    let socket = super::cluster::repo_root().join("target/control-plane/run/containerd.sock");
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("run ctr");
    let listing = String::from_utf8_lossy(&output.stdout);
    listing
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no running task {id} in:\n{listing}"))
}

/// Reads a token Secret every 200 ms in the background and fails the test
/// if it is ever missing, empty or expired.
pub struct FreshnessWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<usize, String>>,
}

impl FreshnessWatch {
    pub fn start(secrets: Api<Secret>, name: &'static str) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = 0;
            while !*stopped.borrow() {
                let secret = secrets
                    .get(name)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let data = secret.data.unwrap_or_default();
                let field = |key: &str| {
                    data.get(key)
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                };
                if field("access_token").is_none_or(|t| t.is_empty()) {
                    return Err(format!("{name} had no access token"));
                }
                let expires: Timestamp = field("expires_at")
                    .and_then(|e| e.parse().ok())
                    .ok_or(format!("{name} had no readable expires_at"))?;
                if expires <= Timestamp::now() {
                    return Err(format!("{name} held a token that expired at {expires}"));
                }
                samples += 1;
                let _ = tokio::time::timeout(Duration::from_millis(200), stopped.changed()).await;
            }
            Ok(samples)
        });
        Self { stop, task }
    }

    /// Stops and returns how many samples were good.
    pub async fn stop(self) -> usize {
        let _ = self.stop.send(true);
        let outcome = self.task.await.expect("the freshness watch");
        let samples = outcome.unwrap_or_else(|gap| panic!("a gap in token freshness: {gap}"));
        assert!(samples > 0, "the token Secret was read at least once");
        samples
    }
}

/// The first 16 hex digits of a token's SHA-256: what the workload logs
/// instead of the token.
pub fn short_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Prints "<hash> <ok|refused>" each time the token file in
/// /var/run/secrets/smart changes, after one FHIR call ($FHIR) with it.
pub const WORKLOAD: &str = r#"
last=""
while true; do
  token=$(cat /var/run/secrets/smart/access_token)
  hash=$(printf %s "$token" | sha256sum | cut -c1-16)
  if [ "$hash" != "$last" ]; then
    if wget -q -O /dev/null --header "Authorization: Bearer $token" "$FHIR/Patient"; then
      echo "$hash ok"
    else
      echo "$hash refused"
    fi
    last=$hash
  fi
  sleep 1
done
"#;

/// A pod on the test node under the restricted Pod Security profile,
/// running [`WORKLOAD`] against `fhir` as `service_account`, with `volume`
/// (named `token`) at /var/run/secrets/smart.
pub fn workload_pod(name: &str, service_account: &str, fhir: &str, volume: Value) -> Pod {
    let mut volume = volume;
    volume["name"] = json!("token");
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "dnsPolicy": "Default",
            "tolerations": [toleration()],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "app",
                "image": "localhost/busybox:node",
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", WORKLOAD],
                "env": [{"name": "FHIR", "value": fhir}],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/smart", "readOnly": true}]
            }],
            "volumes": [volume]
        }
    }))
    .expect("pod")
}
