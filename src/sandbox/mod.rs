//! A local SMART Backend Services authorization server for development and
//! demos. It is strict the way a real EHR is: it verifies each assertion's
//! signature against the client's registered JWKS (inline or fetched from
//! its jwks_uri, such as the operator's own endpoint), the exact audience,
//! a lifetime of at most five minutes, and refuses a replayed jti. Tokens it
//! issues open a small bearer-protected `/fhir/...` endpoint.

mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::smart::HttpClient;

/// One registered client.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClient {
    pub client_id: String,
    /// URL of the client's JWK Set (fetched on each token request).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The client's JWK Set, inline.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Scopes the client may be granted; empty means any.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClientsFile {
    pub clients: Vec<SandboxClient>,
}

/// Sandbox configuration.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Public base URL, e.g. http://127.0.0.1:9090; the token endpoint is
    /// `{base}/token` and the FHIR base `{base}/fhir`.
    pub base_url: String,
    pub token_lifetime: Duration,
    pub clients: Vec<SandboxClient>,
}

struct Issued {
    client_id: String,
    scope: String,
    expires_at: SystemTime,
}

/// How the sandbox keeps a JWK Set fetched from a client's jwks_uri.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwksCaching {
    /// A minute, fetched again at once for a kid it does not hold, so a
    /// new key works at its first use (the default).
    Lenient,
    /// For this long whatever the kid, as a strict EHR does: a key
    /// published after the last fetch is refused until the set expires.
    Strict(Duration),
}

pub struct Sandbox {
    config: SandboxConfig,
    http: HttpClient,
    caching: JwksCaching,
    /// Assertions refused as `invalid_client`.
    refused: std::sync::atomic::AtomicU64,
    seen_jti: Mutex<HashMap<String, SystemTime>>,
    tokens: Mutex<HashMap<String, Issued>>,
    /// JWK Sets fetched from jwks_uri, with when they were fetched.
    jwks_cache: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig, http: HttpClient) -> Arc<Self> {
        Self::with_caching(config, http, JwksCaching::Lenient)
    }

    /// As [`Sandbox::new`], keeping fetched JWK Sets as `caching` says.
    pub fn with_caching(
        config: SandboxConfig,
        http: HttpClient,
        caching: JwksCaching,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            http,
            caching,
            refused: Default::default(),
            seen_jti: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            jwks_cache: Mutex::new(HashMap::new()),
        })
    }

    /// How many assertions it refused as `invalid_client` so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn token_endpoint(&self) -> String {
        format!("{}/token", self.config.base_url.trim_end_matches('/'))
    }
}

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/.well-known/smart-configuration", get(metadata))
        .route("/fhir/.well-known/smart-configuration", get(metadata))
        .route("/token", post(token))
        .route("/fhir/{*path}", get(fhir))
        .with_state(sandbox)
}

async fn metadata(State(sandbox): State<Arc<Sandbox>>) -> Response {
    axum::Json(json!({
        "issuer": sandbox.config.base_url,
        "token_endpoint": sandbox.token_endpoint(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.rs", "system/*.read"],
        "capabilities": ["client-confidential-asymmetric"],
    }))
    .into_response()
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(sandbox): State<Arc<Sandbox>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some(crate::smart::token::CLIENT_ASSERTION_TYPE)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be jwt-bearer",
        );
    }
    let Some(assertion) = form.get("client_assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion is missing",
        );
    };
    let verified = match verify::assertion(&sandbox, assertion).await {
        Ok(v) => v,
        Err(reason) => {
            tracing::warn!(%reason, "refused a client assertion");
            sandbox
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &reason);
        }
    };
    let requested: Vec<&str> = form
        .get("scope")
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if let Some(bad) = requested.iter().find(|s| {
        !verified.client.scopes.is_empty() && !verified.client.scopes.iter().any(|a| a == *s)
    }) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("{bad} is not allowed for this client"),
        );
    }
    let token = format!("sandbox-{}", uuid::Uuid::new_v4().simple());
    let lifetime = sandbox.config.token_lifetime;
    let scope = requested.join(" ");
    let now = SystemTime::now();
    let mut tokens = sandbox.tokens.lock().unwrap_or_else(|e| e.into_inner());
    tokens.retain(|_, issued| issued.expires_at > now);
    tokens.insert(
        token.clone(),
        Issued {
            client_id: verified.client.client_id.clone(),
            scope: scope.clone(),
            expires_at: now + lifetime,
        },
    );
    drop(tokens);
    tracing::info!(client = %verified.client.client_id, %scope, "issued a token");
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime.as_secs(), "scope": scope}))
        .into_response()
}

async fn fhir(State(sandbox): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let tokens = sandbox.tokens.lock().unwrap_or_else(|e| e.into_inner());
    match bearer.and_then(|t| tokens.get(t)) {
        Some(issued) if issued.expires_at > SystemTime::now() => axum::Json(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"resource": {"resourceType": "Patient", "id": "example", "name": [{"family": "Chalmers", "given": ["Peter"]}]}}],
            "meta": {"tag": [{"code": format!("client:{} scope:{}", issued.client_id, issued.scope)}]}
        }))
        .into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer error=\"invalid_token\"")],
            axum::Json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})),
        )
            .into_response(),
    }
}
