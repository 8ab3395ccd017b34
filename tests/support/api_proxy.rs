//! A plain-HTTP proxy in front of the test control plane's API server that
//! injects faults into chosen requests: an answer the API server could give
//! (429 with Retry-After, 409), a request that reaches the API server but
//! whose answer is lost, or a request held until the test kills its sender.
//! Everything else is forwarded untouched, watches included, so the operator
//! behind it works against the real API server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;

/// What happens to a request that a rule matches.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answered by the proxy with this status (a Kubernetes Status body) and
    /// an optional Retry-After; the API server never sees the request.
    Answer {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Forwarded, so the API server acts on it, but the answer is replaced
    /// by a 504: the sender cannot know whether it took effect.
    LoseAnswer,
    /// Never forwarded and never answered.
    Hold,
}

/// Applies `fault` to the next `times` requests with this method whose path
/// ends with `path_suffix`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_suffix: String,
    pub fault: Fault,
    pub times: usize,
}

/// One request the proxy saw, and whether a rule caught it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

pub struct ApiProxy {
    shared: Arc<Mutex<Shared>>,
    pub addr: SocketAddr,
    token_file: PathBuf,
}

struct Upstream {
    base: String,
    http: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
}

impl ApiProxy {
    /// Starts the proxy in front of the API server named by the test
    /// kubeconfig.
    pub async fn start() -> Self {
        let run = super::cluster::repo_root().join("target/control-plane/run");
        let kubeconfig = std::fs::read_to_string(run.join("admin.kubeconfig"))
            .expect("the control plane's kubeconfig (is it up?)");
        let base = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server in kubeconfig")
            .to_string();
        let ca = std::fs::read(run.join("ca.crt")).expect("the control plane's CA");
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .no_proxy()
            .build()
            .expect("proxy HTTP client");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let upstream = Arc::new(Upstream {
            base,
            http,
            shared: shared.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let addr = super::serve_on_loopback(app).await;
        Self {
            shared,
            addr,
            token_file: run.join("admin-token"),
        }
    }

    pub fn add(&self, rule: Rule) {
        self.shared.lock().unwrap().rules.push(rule);
    }

    /// Drops every rule; requests already held stay held.
    pub fn clear(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// The requests a rule caught, in order.
    pub fn faulted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.fault.is_some())
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// Rules with requests still to catch.
    pub fn unspent(&self) -> Vec<Rule> {
        self.shared
            .lock()
            .unwrap()
            .rules
            .iter()
            .filter(|r| r.times > 0)
            .cloned()
            .collect()
    }

    /// A kube client that talks to the API server through this proxy.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        let token = std::fs::read_to_string(&self.token_file).expect("admin token");
        config.auth_info.token = Some(token.trim().to_string().into());
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("client through the proxy")
    }

    /// Writes a kubeconfig for a process that should go through the proxy.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("through-proxy.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{}\n\
             users:\n- name: admin\n  user:\n    tokenFile: {}\ncontexts:\n- name: proxy\n  context: {{cluster: proxy, user: admin, namespace: default}}\n\
             current-context: proxy\n",
            self.addr,
            self.token_file.display()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

fn matching_fault(shared: &Mutex<Shared>, method: &str, path: &str) -> Option<Fault> {
    let mut shared = shared.lock().unwrap();
    let fault = shared
        .rules
        .iter_mut()
        .find(|r| r.times > 0 && r.method == method && path.ends_with(&r.path_suffix))
        .map(|rule| {
            rule.times -= 1;
            rule.fault.clone()
        });
    shared.seen.push(Seen {
        method: method.to_string(),
        path: path.to_string(),
        fault: fault.clone(),
    });
    fault
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let fault = matching_fault(&upstream.shared, method.as_str(), &path);
    match fault {
        Some(Fault::Answer {
            status,
            retry_after,
        }) => return status_answer(status, retry_after),
        Some(Fault::Hold) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return status_answer(504, None);
        }
        Some(Fault::LoseAnswer) | None => {}
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or(path);
    let mut outgoing = upstream
        .http
        .request(method, format!("{}{path_and_query}", upstream.base));
    for (name, value) in request.headers() {
        if name != "host" {
            outgoing = outgoing.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return plain(502, format!("proxy: {e}")),
    };
    if matches!(fault, Some(Fault::LoseAnswer)) {
        return status_answer(504, None);
    }
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut response = Response::new(Body::from_stream(
        answer
            .bytes_stream()
            .map(|chunk| Ok::<Bytes, Infallible>(chunk.unwrap_or_default())),
    ));
    *response.status_mut() = status;
    for (name, value) in &headers {
        let hop_by_hop = ["content-length", "transfer-encoding", "connection"];
        if !hop_by_hop.contains(&name.as_str()) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// An answer shaped as the API server shapes its errors.
fn status_answer(code: u16, retry_after: Option<u64>) -> Response {
    let reason = match code {
        409 => "Conflict",
        429 => "TooManyRequests",
        _ => "Timeout",
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": format!("injected by the test proxy: {reason}"),
        "reason": reason, "code": code,
    });
    let mut response = plain(code, body.to_string());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

fn plain(code: u16, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    response
}
