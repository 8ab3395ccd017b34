//! An operator started in-process for one test, watching only that test's
//! namespace, with timings shortened so tests run in seconds.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use smart_backend_operator::cli::run::Operator;
use smart_backend_operator::controller::{Settings, Timing};
use smart_backend_operator::crd::SmartBackendClient;
use smart_backend_operator::smart::HttpPolicy;

use super::cluster::{TestNamespace, wait_for};

pub const WAIT: Duration = Duration::from_secs(60);

/// Timings for tests: fast retries, a 1 s refresh floor.
pub fn test_settings(namespace: &str) -> Settings {
    Settings {
        namespaces: vec![namespace.to_string()],
        http: HttpPolicy {
            allow_http: true,
            destinations: super::loopback_destinations(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            ..HttpPolicy::default()
        },
        timing: Timing {
            min_refresh_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(3),
            permanent_retry: Duration::from_secs(60),
            ..Timing::default()
        },
        discovery_ttl: Duration::from_secs(60),
        concurrency: 8,
        per_server_concurrency: 4,
        instance: "e2e".into(),
        clocks: Default::default(),
        jwks_public_url: None,
        rotation: smart_backend_operator::controller::RotationTiming {
            jwks_max_age: Duration::from_secs(5),
            ..Default::default()
        },
        ..Settings::default()
    }
}

/// The operator in this process, without leader election, its admin server
/// on a free loopback port.
pub async fn start_operator(client: kube::Client, settings: Settings) -> anyhow::Result<Operator> {
    Operator::start(client, settings, "127.0.0.1:0".parse().unwrap(), None).await
}

/// Installs (or updates) the CRD from crds/ and waits until it is served.
pub async fn install_crd(client: &kube::Client) {
    let yaml = std::fs::read_to_string(
        super::cluster::repo_root().join("crds/smartbackendclients.smartbackend.dev.yaml"),
    )
    .expect("crds/ YAML");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("CRD YAML parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "smartbackendclients.smartbackend.dev";
    api.patch(
        name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    super::cluster::wait_established(client, name).await;
    let sbcs: Api<SmartBackendClient> = Api::all(client.clone());
    wait_for(
        "the SmartBackendClient type to be served",
        WAIT,
        || async { sbcs.list(&Default::default()).await.ok() },
        |_| true,
    )
    .await;
}

pub struct Harness {
    pub ns: TestNamespace,
    pub operator: Option<Operator>,
}

impl Harness {
    pub async fn new(prefix: &str) -> Self {
        Self::with(prefix, |_| {}).await
    }

    pub async fn with(prefix: &str, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start(prefix, None, adjust).await
    }

    /// An operator whose API requests go through `client` (a fault-injecting
    /// proxy); the test itself talks to the API server directly.
    pub async fn through(prefix: &str, client: kube::Client) -> Self {
        Self::start(prefix, Some(client), |_| {}).await
    }

    async fn start(
        prefix: &str,
        operator_client: Option<kube::Client>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let ns = TestNamespace::new(prefix).await;
        install_crd(&ns.client).await;
        let mut settings = test_settings(&ns.name);
        adjust(&mut settings);
        let operator = start_operator(
            operator_client.unwrap_or_else(|| ns.client.clone()),
            settings,
        )
        .await
        .expect("start operator");
        Self {
            ns,
            operator: Some(operator),
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.operator.as_ref().expect("operator running").admin_addr
        )
    }

    /// The operator's /metrics, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn jwks_uri(&self, name: &str) -> String {
        self.admin_url(&format!("/jwks/{}/{name}", self.ns.name))
    }

    pub async fn restart(&mut self, settings: Settings) {
        if let Some(op) = self.operator.take() {
            op.stop().await.expect("operator stopped cleanly");
        }
        self.operator = Some(
            start_operator(self.ns.client.clone(), settings)
                .await
                .expect("restart operator"),
        );
    }

    /// As [`Harness::restart`], serving on the same admin address, so that
    /// a JWKS URL registered with a server stays valid (as a Service's
    /// does in a cluster).
    pub async fn restart_in_place(&mut self, settings: Settings) {
        let op = self.operator.take().expect("operator running");
        let addr = op.admin_addr;
        op.stop().await.expect("operator stopped cleanly");
        self.operator = Some(
            Operator::start(self.ns.client.clone(), settings, addr, None)
                .await
                .expect("restart operator on the same address"),
        );
    }

    pub fn sbcs(&self) -> Api<SmartBackendClient> {
        self.ns.api()
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }

    /// Server-side applies a SmartBackendClient with this spec.
    pub async fn apply(&self, name: &str, spec: Value) {
        self.apply_labelled(name, Value::Null, spec).await
    }

    /// Applies `spec` suspended (nothing is generated or requested) and
    /// returns the resource's uid, for a test that prepares a Secret bound
    /// to it before the operator acts.
    pub async fn apply_suspended(&self, name: &str, mut spec: Value) -> String {
        spec["suspend"] = Value::Bool(true);
        self.apply(name, spec).await;
        let sbc = self.sbcs().get(name).await.expect("the resource exists");
        sbc.metadata.uid.expect("a uid")
    }

    /// Server-side applies a SmartBackendClient with these labels (an
    /// object, or null for none) and this spec.
    pub async fn apply_labelled(&self, name: &str, labels: Value, spec: Value) {
        let body = serde_json::json!({
            "apiVersion": "smartbackend.dev/v1alpha1",
            "kind": "SmartBackendClient",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        });
        self.sbcs()
            .patch(
                name,
                &PatchParams::apply("e2e-tests").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("apply SmartBackendClient {name}: {e}"));
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.sbcs()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// Waits until condition `type_` has `status` (and `reason`, if given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> SmartBackendClient {
        let api = self.sbcs();
        wait_for(
            &format!("{name} to have {type_}={status} {}", reason.unwrap_or("")),
            WAIT,
            || async { api.get_opt(name).await.ok().flatten() },
            |sbc| {
                condition(sbc, type_)
                    .is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
            },
        )
        .await
    }

    pub async fn wait_ready(&self, name: &str) -> SmartBackendClient {
        self.wait_condition(name, "Ready", "True", None).await
    }

    pub async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.expect("get secret")
    }

    pub async fn wait_secret(&self, name: &str) -> Secret {
        let api = self.secrets();
        wait_for(
            &format!("Secret {name}"),
            WAIT,
            || async { api.get_opt(name).await.ok().flatten() },
            |_| true,
        )
        .await
    }

    /// The value of one key of a Secret, as text.
    pub fn value(secret: &Secret, key: &str) -> String {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    }

    /// Reasons of the Events recorded for `name` in this namespace.
    /// Waits for an event with `reason` about `name`. Events are published
    /// right after the status write, so a test that saw the status may
    /// look a moment too early.
    pub async fn wait_event(&self, name: &str, reason: &str) {
        wait_for(
            &format!("a {reason} event about {name}"),
            WAIT,
            || async { Some(self.event_reasons(name).await) },
            |reasons| reasons.iter().any(|r| r == reason),
        )
        .await;
    }

    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.ns.api();
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }
}

pub fn condition<'a>(
    sbc: &'a SmartBackendClient,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sbc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.kill();
        }
    }
}
