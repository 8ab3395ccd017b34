//! The reconcile against a mocked API server: each scenario pins the exact
//! requests, in order (verb, path, field manager, force, what the body
//! carries), and answers them. Milliseconds each; the real control plane
//! is for the tests in `tests/`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use crate::controller::model::settings::Settings;
use crate::controller::steps::reconcile;
use crate::controller::watch::jwks::JwksDirectory;
use crate::controller::watch::watched::WatchedClient;
use crate::controller::{Context, Failed};
use crate::crd::{SmartBackendClient, SmartBackendClientSpec};
use crate::metrics::Metrics;

mod fixtures;
mod rotation_scenarios;
mod scenarios;

pub(in crate::controller) const NS: &str = "team";
pub(in crate::controller) const NAME: &str = "billing";
pub(in crate::controller) const UID: &str = "0b1e6d1e-0000-4000-8000-000000000001";

/// One request the reconcile made.
#[derive(Debug, Clone)]
pub(in crate::controller) struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Call {
    /// The request's `name=value` query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// Written under the operator's field manager.
    pub fn by_operator(&self) -> bool {
        self.param("fieldManager") == Some(crate::crd::FIELD_MANAGER)
    }
}

/// What the mocked API server expects next, and how it answers.
pub(in crate::controller) struct Expect {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub answer: Value,
    /// Answer with `answer` and the request's body laid over it, at a new
    /// resource version: what the API server does for a create, an apply
    /// or an update.
    pub echo: bool,
}

impl Expect {
    pub fn new(method: &'static str, path: impl Into<String>, status: u16, answer: Value) -> Self {
        Expect {
            method,
            path: path.into(),
            status,
            answer,
            echo: false,
        }
    }

    /// A write that succeeds: the object as written, over `base`.
    pub fn written(method: &'static str, path: impl Into<String>, base: Value) -> Self {
        Expect {
            echo: true,
            ..Expect::new(method, path, 200, base)
        }
    }
}

/// `over` laid over `base`, objects merged key by key.
fn overlay(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                overlay(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over.clone(),
    }
}

pub(in crate::controller) fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}")
}

pub(in crate::controller) fn secrets_path() -> String {
    format!("/api/v1/namespaces/{NS}/secrets")
}

pub(in crate::controller) fn status_path() -> String {
    format!("/apis/smartbackend.dev/v1alpha1/namespaces/{NS}/smartbackendclients/{NAME}/status")
}

pub(in crate::controller) fn events_path() -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
}

/// The Kubernetes "not found" answer.
pub(in crate::controller) fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": format!("{reason} (mocked)")})
}

/// A client of the mocked server's namespace, with its uid and generation.
pub(in crate::controller) fn client(spec: Value) -> SmartBackendClient {
    let spec: SmartBackendClientSpec = serde_json::from_value(spec).expect("a valid spec");
    let mut sbc = SmartBackendClient::new(NAME, spec);
    sbc.metadata.namespace = Some(NS.into());
    sbc.metadata.uid = Some(UID.into());
    sbc.metadata.generation = Some(1);
    sbc
}

/// What a scenario saw: the reconcile's outcome and every request, with
/// the ones no expectation was left for, and how many expected requests
/// never came.
pub(in crate::controller) struct Seen {
    pub result: Result<kube::runtime::controller::Action, Failed>,
    pub calls: Vec<Call>,
    pub unexpected: Vec<Call>,
    pub never_came: usize,
}

impl Seen {
    /// Every expected request came, in order, and no other.
    pub fn exactly(&self) {
        assert!(
            self.unexpected.is_empty(),
            "unexpected: {:#?}",
            self.unexpected
        );
        assert_eq!(
            self.never_came, 0,
            "expected requests that never came; saw {:#?}",
            self.calls
        );
    }
}

/// Runs one reconcile of `sbc` against the mocked API server, which
/// answers `expects` in order; panics on a request out of order.
pub(in crate::controller) async fn reconcile_once(
    sbc: SmartBackendClient,
    settings: Settings,
    expects: Vec<Expect>,
) -> Seen {
    reconcile_holding(sbc, settings, expects, |_| ()).await
}

/// As [`reconcile_once`], with `hold(context)` kept for the reconcile's
/// length (a server's request slot, say).
pub(in crate::controller) async fn reconcile_holding<H>(
    sbc: SmartBackendClient,
    settings: Settings,
    expects: Vec<Expect>,
    hold: impl FnOnce(&Context) -> H,
) -> Seen {
    let api = MockApi::new(settings);
    let held = hold(&api.ctx);
    let seen = api.reconcile(sbc, expects).await;
    drop(held);
    api.finish().await;
    seen
}

/// The script the mocked API server follows, and what it saw.
#[derive(Default)]
struct Script {
    expects: std::collections::VecDeque<Expect>,
    calls: Vec<Call>,
    unexpected: Vec<Call>,
    mismatch: Option<String>,
    versions: u64,
}

/// An operator context on a mocked API server, for one reconcile or
/// several in a row (what the first one remembered, the next one uses).
pub(in crate::controller) struct MockApi {
    pub ctx: Arc<Context>,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl MockApi {
    pub fn new(settings: Settings) -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, NS);
        let ctx = Arc::new(
            Context::new(
                client,
                settings,
                Arc::new(Metrics::default()),
                Arc::new(JwksDirectory::default()),
            )
            .expect("context"),
        );
        let script = Arc::new(Mutex::new(Script {
            versions: 100,
            ..Script::default()
        }));
        let server = {
            let script = script.clone();
            tokio::spawn(async move {
                while let Some((request, respond)) = handle.next_request().await {
                    let call = read(request).await;
                    let (code, answer) = script.lock().unwrap().answer(call);
                    let body = serde_json::to_vec(&answer).unwrap();
                    let response = Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap();
                    respond.send_response(response);
                }
            })
        };
        MockApi {
            ctx,
            script,
            server,
        }
    }

    /// One reconcile of `sbc`, the server answering `expects` in order.
    pub async fn reconcile(&self, sbc: SmartBackendClient, expects: Vec<Expect>) -> Seen {
        self.script.lock().unwrap().expects = expects.into();
        let obj = Arc::new(WatchedClient(Ok(sbc)));
        let reconciled = reconcile::reconcile(obj, self.ctx.clone());
        let result = tokio::time::timeout(Duration::from_secs(20), reconciled)
            .await
            .expect("the reconcile ends");
        let mut script = self.script.lock().unwrap();
        if let Some(said) = script.mismatch.take() {
            panic!("{said}; requests so far: {:#?}", script.calls);
        }
        Seen {
            result,
            calls: std::mem::take(&mut script.calls),
            unexpected: std::mem::take(&mut script.unexpected),
            never_came: std::mem::take(&mut script.expects).len(),
        }
    }

    /// The context (and with it the client) goes: the server ends.
    pub async fn finish(self) {
        drop(self.ctx);
        tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("the mocked server ends")
            .unwrap();
    }
}

impl Script {
    /// The answer to `call`: the next expectation's when it matches.
    fn answer(&mut self, call: Call) -> (u16, Value) {
        match self.expects.pop_front() {
            Some(expect) if expect.method == call.method && expect.path == call.path => {
                let mut answer = expect.answer;
                if expect.echo {
                    overlay(&mut answer, &call.body);
                    self.versions += 1;
                    answer["metadata"]["resourceVersion"] = json!(self.versions.to_string());
                }
                self.calls.push(call);
                (expect.status, answer)
            }
            Some(expect) => {
                let said = format!(
                    "expected {} {}, got {} {}",
                    expect.method, expect.path, call.method, call.path
                );
                self.mismatch.get_or_insert(said);
                self.unexpected.push(call);
                (500, status(500, "InternalError"))
            }
            None => {
                self.unexpected.push(call);
                (500, status(500, "InternalError"))
            }
        }
    }
}

async fn read(request: Request<Body>) -> Call {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Call {
        method,
        path,
        query,
        body,
    }
}

/// A token endpoint on loopback that grants every request, and how many
/// it has answered.
pub(in crate::controller) async fn token_server() -> (url::Url, Arc<Mutex<u32>>) {
    token_server_refusing(None).await
}

/// As [`token_server`], refusing (401 `invalid_client`) assertions signed
/// with the key `refused`.
pub(in crate::controller) async fn token_server_refusing(
    refused: Option<String>,
) -> (url::Url, Arc<Mutex<u32>>) {
    let count = Arc::new(Mutex::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(
            move |form: axum::Form<std::collections::HashMap<String, String>>| {
                let (counted, refused) = (counted.clone(), refused.clone());
                async move {
                    *counted.lock().unwrap() += 1;
                    let assertion = form.get("client_assertion").cloned().unwrap_or_default();
                    let kid = jsonwebtoken::decode_header(&assertion)
                        .ok()
                        .and_then(|h| h.kid);
                    if refused.is_some() && kid == refused {
                        let body =
                            json!({"error": "invalid_client", "error_description": "unknown key"});
                        return (http::StatusCode::UNAUTHORIZED, axum::Json(body));
                    }
                    let body = json!({
                        "access_token": "mocked-token",
                        "token_type": "bearer",
                        "expires_in": 300,
                        "scope": "system/Patient.rs"
                    });
                    (http::StatusCode::OK, axum::Json(body))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        url::Url::parse(&format!("http://{addr}/token")).unwrap(),
        count,
    )
}

/// Settings for loopback servers: plain http allowed.
pub(in crate::controller) fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.http.allow_http = true;
    settings.http.destinations = crate::smart::DestinationPolicy {
        allow_hosts: vec!["127.0.0.1".into()],
        block_private: false,
    };
    settings
}
