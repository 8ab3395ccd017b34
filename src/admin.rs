//! The admin HTTP server every replica runs: `/healthz`, `/readyz` (ready
//! after the first watch sync), `/metrics` (Prometheus text) and
//! `/jwks/{namespace}/{name}`, each client's public JWK Set for `jwks_uri`
//! registration, and `/jwks/{namespace}/sets/{set}`, shared sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub mod serve;

use crate::controller::JwksDirectory;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub jwks: Arc<JwksDirectory>,
    pub ready: Arc<AtomicBool>,
    /// `Cache-Control: max-age` for JWKS responses, seconds. Key rotation
    /// must wait longer than this between publishing and switching keys.
    pub jwks_max_age: u64,
    /// Earliest expiry of the tokens this replica manages, for the gauge.
    pub earliest_expiry: Arc<dyn Fn() -> Option<SystemTime> + Send + Sync>,
    /// How long the oldest look the leader planned is overdue, and how
    /// long it has been stalled (`controller::progress`).
    #[allow(clippy::type_complexity)]
    pub overdue: Arc<dyn Fn() -> (Option<Duration>, Option<Duration>) + Send + Sync>,
    /// Liveness fails past this.
    pub progress_deadline: Duration,
}

/// The kubelet's probes alone, for a listener of their own: no pod can
/// crowd them out of the admin port's connections.
pub fn probes(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jwks/{namespace}/{name}", get(jwks))
        .route("/jwks/{namespace}/sets/{set}", get(jwks_set))
        .with_state(state)
}

/// Alive means making progress: a leader with a look overdue past the
/// deadline is stuck, whatever else still answers.
async fn healthz(State(state): State<AdminState>) -> Response {
    let (_, stalled) = (state.overdue)();
    match crate::controller::model::progress::verdict(stalled, state.progress_deadline) {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first watch sync",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let seconds = (state.earliest_expiry)().map(|t| match t.duration_since(SystemTime::now()) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    });
    state.metrics.set_earliest_expiry(seconds);
    let overdue = (state.overdue)().0.unwrap_or_default();
    state
        .metrics
        .oldest_overdue_seconds
        .set(overdue.as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn jwks(
    State(state): State<AdminState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    jwks_response(&state, state.jwks.get(&namespace, &name))
}

async fn jwks_set(
    State(state): State<AdminState>,
    Path((namespace, set)): Path<(String, String)>,
) -> Response {
    jwks_response(&state, state.jwks.get_set(&namespace, &set))
}

/// A JWK Set with the cache headers key rotation relies on, or 404.
///
/// Either closes its connection: the admin server closes a kept-alive
/// connection once it has been idle for its header timeout (hyper counts
/// the wait for the next request against it), and an EHR that reused its
/// pooled connection at that moment would see it closed before an answer
/// and could refuse the assertion it was checking. A JWK Set is fetched
/// once per max-age, so a new connection each time costs nothing.
fn jwks_response(state: &AdminState, body: Option<String>) -> Response {
    let mut response = match body {
        Some(body) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CACHE_CONTROL,
                    format!("public, max-age={}", state.jwks_max_age),
                ),
            ],
            body,
        )
            .into_response(),
        // Not cached: a key published a moment later must be seen at once.
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such client or set, or it has no key yet",
        )
            .into_response(),
    };
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}
