//! The leader's token-delivery listener: `GET /v1/namespaces/{ns}/clients/
//! {name}/token` with the pod's ServiceAccount token as the bearer. The API
//! server says whose token it is (a TokenReview for the delivery audience);
//! [`authorize::decide`] says whether that pod may have the client's token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::Delivery;
use super::authorize::{self, Caller, Decision};
use super::wire::Refusal;

/// How long a reviewed pod token is trusted without asking again: a pod
/// deleted within this time can still fetch its token.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Reviews remembered at once; beyond this the memory is emptied.
const MAX_REVIEWS: usize = 10_000;
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// A self-signed certificate for `host`, and the TLS acceptor serving it.
pub fn certificate(host: &str) -> anyhow::Result<(String, tokio_rustls::TlsAcceptor)> {
    let certified = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .map_err(|e| anyhow::anyhow!("making the token-delivery certificate for {host}: {e}"))?;
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    Ok((pem, tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Pod tokens the API server vouched for, by their SHA-256.
#[derive(Default)]
pub struct Reviews(Mutex<HashMap<[u8; 32], (Caller, Instant)>>);

impl Reviews {
    fn get(&self, key: &[u8; 32]) -> Option<Caller> {
        let reviews = self.0.lock().unwrap_or_else(|e| e.into_inner());
        reviews
            .get(key)
            .filter(|(_, at)| at.elapsed() < REVIEW_TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, key: [u8; 32], caller: Caller) {
        let mut reviews = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if reviews.len() >= MAX_REVIEWS {
            reviews.retain(|_, (_, at)| at.elapsed() < REVIEW_TTL);
            if reviews.len() >= MAX_REVIEWS {
                reviews.clear();
            }
        }
        reviews.insert(key, (caller, Instant::now()));
    }
}

#[derive(Clone)]
struct Served {
    delivery: Arc<Delivery>,
    client: kube::Client,
}

pub fn router(delivery: Arc<Delivery>, client: kube::Client) -> Router {
    Router::new()
        .route(
            "/v1/namespaces/{namespace}/clients/{name}/token",
            get(token),
        )
        .with_state(Served { delivery, client })
}

fn answer(status: StatusCode, message: String) -> Response {
    let mut response = (status, axum::Json(Refusal { message })).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::MISDIRECTED_REQUEST {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    }
    response
}

async fn token(
    State(served): State<Served>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let delivery = &served.delivery;
    if !delivery.leading() {
        // 421: the plugin reads the Lease again, finding the leader.
        return answer(
            StatusCode::MISDIRECTED_REQUEST,
            "this replica does not lead; node plugins find the leader on the Lease".into(),
        );
    }
    let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.len() <= 16 * 1024)
    else {
        return answer(
            StatusCode::UNAUTHORIZED,
            "send the pod's ServiceAccount token for the delivery audience as the bearer".into(),
        );
    };
    let caller = match review(&served, bearer).await {
        Ok(caller) => caller,
        Err((status, message)) => return answer(status, message),
    };
    let entry = delivery.tokens.get(&namespace, &name);
    match authorize::decide(&caller, &namespace, &name, entry.as_ref()) {
        Decision::Deliver(token) => {
            let mut response = axum::Json(token).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            response
        }
        Decision::Refuse(message) => {
            tracing::info!(namespace, client = name, caller = ?caller, "refused a token to a pod: {message}");
            answer(StatusCode::FORBIDDEN, message)
        }
        Decision::Wait(message) => answer(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

/// Whose pod token this is, as the API server says (remembered briefly).
async fn review(served: &Served, bearer: &str) -> Result<Caller, (StatusCode, String)> {
    let key: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
    if let Some(caller) = served.delivery.reviews.get(&key) {
        return Ok(caller);
    }
    let audience = &served.delivery.settings.audience;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(bearer.to_string()),
            audiences: Some(vec![audience.clone()]),
        },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(served.client.clone());
    let reviewed = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the API server could not check the pod's token (TokenReview: {e}); the plugin tries again"),
            )
        })?;
    let status = reviewed.status.unwrap_or_default();
    let user = status.user.unwrap_or_default();
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .and_then(|v| v.first().cloned());
    let caller = (status.authenticated == Some(true))
        .then(|| authorize::caller(user.username.as_deref().unwrap_or_default(), pod))
        .flatten()
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                format!("the API server did not accept the pod's ServiceAccount token for the audience {audience:?}: the CSIDriver object's tokenRequests must name it"),
            )
        })?;
    served.delivery.reviews.put(key, caller.clone());
    Ok(caller)
}
