//! The one HTTP client the protocol uses, with the safety rules built in:
//! HTTPS unless explicitly allowed, no redirects, connect and total timeouts,
//! and a cap on how much of a response is read.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use url::Url;

use super::destination::{DestinationPolicy, GuardedResolver};
pub use super::trust::TlsProblem;

mod text;
pub use text::{bounded_text, redact_userinfo};
use text::{human_size, source_chain};

/// How outbound requests are made. The defaults suit production.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Plain `http://` URLs are refused unless this is set (development only).
    pub allow_http: bool,
    pub connect_timeout: Duration,
    /// Covers the whole exchange, so a slow-drip body cannot hold a request open.
    pub request_timeout: Duration,
    /// Responses longer than this are cut off with an error.
    pub max_body_bytes: usize,
    /// Extra trust anchors (PEM) for servers behind a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Which hosts and addresses may be contacted (SSRF guard).
    pub destinations: DestinationPolicy,
    /// An egress proxy for every request. Proxies named in the environment
    /// (HTTPS_PROXY and the like) are ignored: a proxy resolves the target's
    /// name itself, so the address rules can no longer see the addresses,
    /// and that must be a decision, not an accident of the environment.
    pub proxy: Option<Url>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self {
            allow_http: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_body_bytes: 1024 * 1024,
            extra_roots_pem: None,
            destinations: DestinationPolicy::default(),
            proxy: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url} presented a certificate that is not accepted: {reason}")]
    Tls {
        url: String,
        problem: TlsProblem,
        reason: String,
    },
    #[error(
        "{url} is plain http; use https (plain http is allowed only with --insecure-allow-http, for development)"
    )]
    InsecureScheme { url: String },
    #[error("{url} is not an http(s) URL")]
    UnsupportedScheme { url: String },
    #[error("{url} carries a user name or password; remove the user:password@ part")]
    CredentialsInUrl { url: String },
    #[error("{url} is refused: {reason}")]
    DestinationRefused { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("could not connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "the response from {url} is larger than {}, the most the operator reads; check that the URL points at the SMART server",
        human_size(.limit)
    )]
    TooLarge { url: String, limit: usize },
    #[error("request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("the CA bundle could not be read: {0}")]
    CaBundle(String),
    #[error("the HTTP client could not be built: {0}")]
    Build(String),
}

impl HttpError {
    /// Network trouble that may pass (as opposed to a URL that can never work).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Timeout { .. }
                | HttpError::Connect { .. }
                | HttpError::Request { .. }
                | HttpError::TooLarge { .. }
        )
    }
}

/// A response read in full (up to the cap). Redirects come back as they are.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    /// The server's `Date` header, for noticing a skewed clock.
    pub date: Option<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The server's clock minus this host's, in whole seconds, from the
    /// `Date` header, against the middle of the exchange. `Date` has a
    /// resolution of one second, so a difference of a second or two is
    /// noise.
    pub fn clock_skew(&self, sent_at: SystemTime, received_at: SystemTime) -> Option<i64> {
        let server = httpdate::parse_http_date(self.date.as_deref()?.trim()).ok()?;
        let rtt = received_at.duration_since(sent_at).unwrap_or_default();
        let local = sent_at + rtt / 2;
        Some(match server.duration_since(local) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        })
    }
}

/// Requests over plain http (when allowed) go through a client that holds
/// no trust store; https ones through a client built on first use, which
/// trusts the system roots (read once per process) and the policy's extra
/// roots. Clones share both.
#[derive(Clone, Debug)]
pub struct HttpClient {
    plain: Option<reqwest::Client>,
    proxy: Option<reqwest::Proxy>,
    tls: Arc<OnceLock<Result<reqwest::Client, String>>>,
    extra_roots: Arc<Vec<reqwest::Certificate>>,
    /// Which roots it trusts beyond the system's, as a fingerprint.
    trust: Arc<str>,
    policy: HttpPolicy,
}

impl HttpClient {
    pub fn new(policy: HttpPolicy) -> Result<Self, HttpError> {
        let extra_roots = match &policy.extra_roots_pem {
            Some(pem) => super::trust::parse_bundle(pem).map_err(HttpError::CaBundle)?,
            None => Vec::new(),
        };
        let proxy = match &policy.proxy {
            Some(url) => Some(reqwest::Proxy::all(url.as_str()).map_err(|e| {
                HttpError::Build(format!(
                    "the proxy {} is not usable: {e}",
                    redact_userinfo(url)
                ))
            })?),
            None => None,
        };
        let plain = match policy.allow_http {
            true => Some(
                super::trust::without_roots(builder(&policy, proxy.as_ref()))
                    .build()
                    .map_err(|e| HttpError::Build(e.to_string()))?,
            ),
            false => None,
        };
        let trust = match &policy.extra_roots_pem {
            Some(pem) => super::secret::fingerprint(pem),
            None => "system".to_string(),
        };
        Ok(Self {
            trust: trust.into(),
            plain,
            proxy,
            tls: Arc::new(OnceLock::new()),
            extra_roots: Arc::new(extra_roots),
            policy,
        })
    }

    /// What this client trusts (the system roots, plus a CA bundle's
    /// fingerprint): what was fetched through one trust must not be reused
    /// by a client that would not have trusted the server.
    pub fn trust_key(&self) -> &str {
        &self.trust
    }

    /// The client for `url`'s scheme (`check_url` has vetted the scheme).
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, HttpError> {
        if let ("http", Some(plain)) = (url.scheme(), &self.plain) {
            return Ok(plain);
        }
        self.tls
            .get_or_init(|| {
                super::trust::with_roots(
                    builder(&self.policy, self.proxy.as_ref()),
                    &self.extra_roots,
                )
                .https_only(true)
                .build()
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| HttpError::Build(e.clone()))
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// Refuses URLs this client must not fetch, before any connection.
    pub fn check_url(&self, url: &Url) -> Result<(), HttpError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            "http" => {
                return Err(HttpError::InsecureScheme {
                    url: url.to_string(),
                });
            }
            _ => {
                return Err(HttpError::UnsupportedScheme {
                    url: url.to_string(),
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::CredentialsInUrl {
                url: redact_userinfo(url),
            });
        }
        let host = url.host_str().unwrap_or_default();
        self.policy
            .destinations
            .check_host(host)
            .map_err(|reason| HttpError::DestinationRefused {
                url: url.to_string(),
                reason,
            })
    }

    pub async fn get(&self, url: &Url) -> Result<HttpResponse, HttpError> {
        self.get_at_most(url, self.policy.max_body_bytes).await
    }

    /// A GET whose answer may be at most `limit` bytes (and never more than
    /// the policy's cap).
    pub async fn get_at_most(&self, url: &Url, limit: usize) -> Result<HttpResponse, HttpError> {
        self.check_url(url)?;
        let request = self
            .client_for(url)?
            .get(url.clone())
            .header("accept", "application/json");
        self.send(url, request, limit.min(self.policy.max_body_bytes))
            .await
    }

    pub async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<HttpResponse, HttpError> {
        self.check_url(url)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client_for(url)?
            .post(url.clone())
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(url, request, self.policy.max_body_bytes).await
    }

    /// A JSON call to a key manager: a POST of `body`, or a GET without one,
    /// with its credential in `header` marked sensitive so that no debug
    /// output shows it.
    pub async fn json_call(
        &self,
        url: &Url,
        header: Option<(&'static str, &super::SecretString)>,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, HttpError> {
        self.check_url(url)?;
        let client = self.client_for(url)?;
        let mut request = match body {
            Some(body) => client.post(url.clone()).json(body),
            None => client.get(url.clone()),
        };
        request = request.header("accept", "application/json");
        if let Some((name, value)) = header {
            let mut value =
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    HttpError::Request {
                        url: url.to_string(),
                        reason: format!("the {name} credential is not a valid header value"),
                    }
                })?;
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        self.send(url, request, self.policy.max_body_bytes).await
    }

    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<HttpResponse, HttpError> {
        let classify = |e: reqwest::Error| {
            let url = url.to_string();
            if e.is_timeout() {
                HttpError::Timeout {
                    url,
                    timeout: self.policy.request_timeout,
                }
            } else if let Some(problem) = super::trust::certificate_problem(&e) {
                HttpError::Tls {
                    url,
                    problem,
                    reason: source_chain(&e),
                }
            } else if e.is_connect() {
                HttpError::Connect {
                    url,
                    reason: source_chain(&e),
                }
            } else {
                HttpError::Request {
                    url,
                    reason: source_chain(&e),
                }
            }
        };
        let mut response = request.send().await.map_err(classify)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (content_type, retry_after, location, date) = (
            header("content-type"),
            header("retry-after"),
            header("location"),
            header("date"),
        );
        let status = response.status().as_u16();
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(HttpError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > limit {
                return Err(HttpError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            content_type,
            retry_after,
            location,
            date,
            body,
        })
    }
}

/// What both clients share: no redirects, timeouts, the agent, and the
/// resolver that applies the destination policy.
fn builder(policy: &HttpPolicy, proxy: Option<&reqwest::Proxy>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(policy.connect_timeout)
        .timeout(policy.request_timeout)
        .user_agent(concat!(
            "smart-backend-operator/",
            env!("CARGO_PKG_VERSION")
        ))
        .dns_resolver(Arc::new(GuardedResolver {
            policy: Arc::new(policy.destinations.clone()),
        }));
    match proxy {
        Some(proxy) => builder.proxy(proxy.clone()),
        None => builder.no_proxy(),
    }
}

#[cfg(test)]
mod tests;
