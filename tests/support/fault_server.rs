//! An in-process HTTP server that misbehaves on demand: error statuses,
//! 429 with Retry-After, slow or oversized bodies, HTML pages, redirects and
//! broken metadata. It records every request so tests can count them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A status, headers and a body, sent at once.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// 200 with a body sent in `chunks` pieces, `delay` apart.
    SlowDrip { chunks: usize, delay: Duration },
    /// Accepts the request and never answers.
    Hang,
    /// Waits, then behaves as the inner behaviour.
    Delayed(Duration, Box<Behaviour>),
    /// As `signed` when the request's client assertion names key `kid` in
    /// its header, as `other` otherwise (a server that knows one key).
    ByKid {
        kid: String,
        signed: Box<Behaviour>,
        other: Box<Behaviour>,
    },
}

/// The `kid` in the header of the form's `client_assertion`, if any.
pub fn assertion_kid(form: &str) -> Option<String> {
    use base64::Engine;
    let assertion = url::form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == "client_assertion")?
        .1;
    let header = assertion.split('.').next()?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header["kid"].as_str().map(str::to_string)
}

impl Behaviour {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Behaviour::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A 200 token response: `value`, bearer, `expires_in` seconds, and the
    /// granted `scope` when given.
    pub fn token(value: &str, expires_in: u64, scope: Option<&str>) -> Self {
        let mut body = serde_json::json!({"access_token": value, "token_type": "Bearer", "expires_in": expires_in});
        if let Some(scope) = scope {
            body["scope"] = serde_json::json!(scope);
        }
        Behaviour::json(200, body)
    }

    pub fn with_header(self, name: &str, value: &str) -> Self {
        match self {
            Behaviour::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.into(), value.into()));
                Behaviour::Respond {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }

    pub fn html(status: u16) -> Self {
        Behaviour::Respond {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: b"<html><body><h1>Gateway error</h1><p>internal-host-42</p></body></html>"
                .to_vec(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Behaviour::Respond {
            status: 302,
            headers: vec![("location".into(), location.into())],
            body: Vec::new(),
        }
    }

    pub fn oversized(bytes: usize) -> Self {
        let mut body = b"{\"pad\":\"".to_vec();
        body.resize(bytes, b'x');
        body.extend_from_slice(b"\"}");
        Behaviour::Respond {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    routes: HashMap<String, Behaviour>,
    requests: Vec<Recorded>,
    /// Per path: (requests being handled now, the most ever at once).
    in_flight: HashMap<String, (usize, usize)>,
}

#[derive(Clone)]
pub struct FaultServer {
    shared: Arc<Mutex<Shared>>,
    pub addr: SocketAddr,
}

impl FaultServer {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let addr = super::serve_on_loopback(app).await;
        Self { shared, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn on(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), behaviour);
    }

    /// Serves a SMART configuration at `{base}/.well-known/smart-configuration`
    /// whose token endpoint is `/token` on this server.
    pub fn serve_metadata(&self, base_path: &str) {
        let doc = serde_json::json!({
            "token_endpoint": self.url("/token"),
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
            "grant_types_supported": ["client_credentials"],
            "capabilities": ["client-confidential-asymmetric"],
        });
        self.on(
            &format!("{base_path}/.well-known/smart-configuration"),
            Behaviour::json(200, doc),
        );
    }

    /// The most requests on `path` this server was ever handling at once.
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .in_flight
            .get(path)
            .map(|c| c.1)
            .unwrap_or(0)
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.shared
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn handle(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let behaviour = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(Recorded {
            method,
            path: path.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: std::time::Instant::now(),
        });
        let counts = shared.in_flight.entry(path.clone()).or_default();
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
        shared.routes.get(&path).cloned()
    };
    let kid = assertion_kid(&String::from_utf8_lossy(&body));
    let response = behave(behaviour, kid.as_deref()).await;
    if let Some(counts) = shared.lock().unwrap().in_flight.get_mut(&path) {
        counts.0 -= 1;
    }
    response
}

async fn behave(behaviour: Option<Behaviour>, kid: Option<&str>) -> Response {
    match behaviour {
        None => respond(404, &[], b"not found".to_vec()),
        Some(Behaviour::Respond {
            status,
            headers,
            body,
        }) => respond(status, &headers, body),
        Some(Behaviour::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            respond(504, &[], Vec::new())
        }
        Some(Behaviour::SlowDrip { chunks, delay }) => {
            let stream = futures_util::stream::unfold(0usize, move |sent| async move {
                if sent >= chunks {
                    return None;
                }
                tokio::time::sleep(delay).await;
                let piece = if sent == 0 {
                    "{\"access_token\":\""
                } else {
                    "x"
                };
                Some((Ok::<_, Infallible>(Bytes::from(piece)), sent + 1))
            });
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        Some(Behaviour::Delayed(_, inner)) => Box::pin(behave(Some(*inner), kid)).await,
        Some(Behaviour::ByKid {
            kid: known,
            signed,
            other,
        }) => {
            let chosen = if kid == Some(known.as_str()) {
                signed
            } else {
                other
            };
            Box::pin(behave(Some(*chosen), kid)).await
        }
    }
}

fn respond(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
