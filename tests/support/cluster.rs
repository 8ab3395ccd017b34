//! Connection to the real control plane started by
//! `tests/cluster/control-plane up`, a fresh namespace per test, and waits
//! that explain themselves when they time out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The admin kubeconfig that `control-plane up` writes.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/control-plane/run/admin.kubeconfig"))
}

/// Directory holding the kubectl and helm the harness built.
pub fn bin_dir() -> PathBuf {
    repo_root().join("target/control-plane/bin")
}

const NOT_UP: &str = "the test control plane is not running: start it with `tests/cluster/control-plane up` \
     (or run `make test`, which does)";

/// A client for the test control plane. Fails (never skips) when it is not up.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{NOT_UP} ({}: {e})", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{NOT_UP} ({e})"));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("{NOT_UP} ({e})"));
    if let Err(e) = client.apiserver_version().await {
        panic!("{NOT_UP} (the API server did not answer: {e})");
    }
    client
}

/// A uniquely named namespace, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"smartbackend.dev/test": "true"}}
        }))
        .expect("namespace");
        Api::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        Self { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; kubectl does the same job synchronously.
        let _ = Command::new(bin_dir().join("kubectl"))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", kubeconfig_path())
            .output();
    }
}

/// Polls `get` until `done` holds, or panics after `timeout` showing the
/// last state seen (as YAML, Secret values withheld) and `what` was awaited.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut get: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: Serialize,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = get().await;
        if let Some(value) = &current
            && done(value)
        {
            return current.expect("checked above");
        }
        if tokio::time::Instant::now() >= deadline {
            let shown = current
                .and_then(|v| serde_json::to_value(&v).ok())
                .map(|mut v| {
                    withhold_secret_data(&mut v);
                    serde_yaml::to_string(&v).unwrap_or_default()
                })
                .unwrap_or_else(|| "(absent)".into());
            panic!("timed out after {timeout:?} waiting for {what}; last state:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replaces every value under a `data` or `stringData` map (a Secret's keys
/// and tokens) with its length, wherever it is nested.
fn withhold_secret_data(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if let ("data" | "stringData", serde_json::Value::Object(entries)) =
                    (key.as_str(), &mut *inner)
                {
                    for entry in entries.values_mut() {
                        let len = entry.as_str().map_or(0, str::len);
                        *entry = format!("({len} characters withheld)").into();
                    }
                } else {
                    withhold_secret_data(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(withhold_secret_data),
        _ => {}
    }
}

/// Waits until the CustomResourceDefinition `name` is Established.
pub async fn wait_established(client: &Client, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(
        &format!("CRD {name} to be Established"),
        Duration::from_secs(60),
        || async { api.get_opt(name).await.ok().flatten() },
        |crd| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await;
}

/// Waits until the object is gone (404).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Clone + DeserializeOwned + std::fmt::Debug + Serialize,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return,
            Ok(Some(obj)) if tokio::time::Instant::now() >= deadline => {
                panic!(
                    "timed out after {timeout:?} waiting for {name} to be deleted; it is still:\n{}",
                    serde_yaml::to_string(&obj).unwrap_or_default()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs the harness's kubectl against the test control plane.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect(
            "run kubectl from target/control-plane/bin (built by tests/cluster/control-plane up)",
        )
}

pub async fn delete_cluster_object<K>(api: &Api<K>, name: &str)
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// A kubeconfig that acts as a ServiceAccount and nothing else: a token from
/// the TokenRequest API, written into `dir`.
pub fn service_account_kubeconfig(account: &str, namespace: &str, dir: &Path) -> PathBuf {
    let token = kubectl(&["create", "token", account, "-n", namespace, "--duration=1h"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster["server"].as_str(), "certificate-authority": cluster["certificate-authority"].as_str()}}],
        "users": [{"name": "operator", "user": {"token": String::from_utf8_lossy(&token.stdout).trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator", "namespace": namespace}}],
        "current-context": "c"
    });
    let path = dir.join(format!("{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}
