//! The token request itself: sign a fresh assertion, exchange it, and turn
//! what came back (a token, a refusal, the server's clock) into what the
//! token step and the status need.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType};
use url::Url;

use super::draft::Draft;
use super::reason::{self, Failure, Reason};
use super::secrets::{self, StoredToken};
use super::servers::Admission;
use super::validate::ValidSpec;
use super::{ClientMemory, Context, Target};
use crate::crd::SmartBackendClientStatus;
use crate::smart::{
    self, AccessToken, AssertionParams, HttpClient, HttpError, SigningKey, TokenError,
    TokenRequest, assertion,
};

pub(super) struct Inputs<'a> {
    pub target: &'a Target<'a>,
    pub spec: &'a ValidSpec,
    pub http: &'a HttpClient,
    pub token_endpoint: &'a Url,
    pub key: &'a SigningKey,
    /// The token Secret as read now; `None` when it does not exist or
    /// when `known` stands for it.
    pub existing: Option<&'a Secret>,
    /// What the token Secret holds, known without reading it.
    pub known: Option<StoredToken>,
    pub generation: Option<i64>,
    pub previous: &'a SmartBackendClientStatus,
    /// The shared JWK Set the client's keys also go into.
    pub jwks_set: Option<&'a str>,
}

/// Signs a fresh assertion (new jti) and exchanges it, holding a slot of the
/// authorization server's concurrency limit.
/// How a token request went, when it did not fail.
pub(super) enum Attempt {
    Got(AccessToken, SystemTime),
    /// The server's request slots were all taken: nothing was sent.
    Busy,
}

pub(super) async fn request(
    ctx: &Context,
    inputs: &Inputs<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Attempt, Failure> {
    let authority = inputs.token_endpoint.authority().to_string();
    let _permit = match ctx
        .servers
        .admit(&authority, inputs.target.namespace, Instant::now())
    {
        Admission::Go(permit) => permit,
        Admission::Busy => return Ok(Attempt::Busy),
        Admission::Open { until, failures } => {
            let wait = until.saturating_duration_since(Instant::now());
            return Err(Failure {
                reason: Reason::ServerNotAnswering,
                message: format!(
                    "the last {failures} requests to {authority} timed out or were refused, so requests to it pause for {}s (for this namespace's clients of that server); check that the server is up and reachable from the operator",
                    wait.as_secs().max(1)
                ),
                retry_after: Some(wait),
            });
        }
    };
    let audience = inputs
        .spec
        .audience
        .clone()
        .unwrap_or_else(|| inputs.token_endpoint.to_string());
    let mut params = AssertionParams::new(&inputs.spec.client_id, &audience);
    params.jku = inputs.spec.jku.as_deref();
    let backdate = ctx.settings.clocks.assertion_backdate;
    params.backdate = backdate.min(MAX_BACKDATE);
    params.lifetime = assertion_lifetime(&ctx.settings.clocks);
    let issued_at = secrets::whole_second(SystemTime::now());
    let assertion = smart::assertion::sign(inputs.key, &params).map_err(|e| {
        Failure::new(
            Reason::SigningFailed,
            format!(
                "the assertion could not be signed with key kid {}: {e}; check the key",
                inputs.key.kid()
            ),
        )
    })?;
    let exchange = smart::token::exchange(
        inputs.http,
        &TokenRequest {
            token_endpoint: inputs.token_endpoint,
            scope: &inputs.spec.scope,
            assertion: &assertion,
            extra_params: &inputs.spec.extra_params,
        },
    )
    .await;
    if let Some(skew) = exchange.clock_skew {
        observe_clock(ctx, inputs, skew, draft, memory);
    }
    let result = exchange.result;
    let reached = !matches!(
        &result,
        Err(TokenError::Transport(
            HttpError::Timeout { .. } | HttpError::Connect { .. }
        ))
    );
    if ctx
        .servers
        .record(&authority, inputs.target.namespace, reached, Instant::now())
    {
        ctx.metrics.server_breaker_opened.inc();
        tracing::warn!(server = %authority, "token requests to this server pause: it stopped answering");
    }
    match &result {
        Ok(_) => ctx.metrics.token_request("success", "none"),
        Err(error) => ctx.metrics.token_request("failure", error.category()),
    }
    memory.last_attempt_failed = Some(result.is_err());
    match result {
        Ok(mut token) => {
            token.expires_at = secrets::whole_second(token.expires_at);
            Ok(Attempt::Got(token, issued_at))
        }
        Err(error) => Err(token_failure(ctx, inputs, &error)),
    }
}

/// How long an assertion is valid after it is signed, within what SMART
/// allows (`exp - iat` at most 300 s, `iat` backdated).
pub(super) fn assertion_lifetime(clocks: &super::Clocks) -> Duration {
    let backdate = clocks.assertion_backdate.min(MAX_BACKDATE);
    clocks
        .assertion_lifetime
        .clamp(Duration::from_secs(1), assertion::MAX_LIFETIME - backdate)
}

/// The most `iat` is backdated, whatever the flag says.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

/// Notes the server's clock: the gauge always, and past the threshold a
/// note on TokenReady and one Warning event until the clocks agree again.
fn observe_clock(
    ctx: &Context,
    inputs: &Inputs<'_>,
    skew: i64,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) {
    ctx.metrics.clock_skew_seconds.set(skew as f64);
    let threshold = ctx.settings.clocks.skew_warning.as_secs();
    let beyond = |s: i64| s.unsigned_abs() > threshold;
    let was = memory.clock_skew.replace(skew);
    draft.clock_note =
        beyond(skew).then(|| super::clock::note(skew, inputs.token_endpoint.authority()));
    if let Some(note) = &draft.clock_note
        && !was.is_some_and(beyond)
    {
        draft.events.push(Event {
            type_: EventType::Warning,
            reason: "ClockSkew".into(),
            note: Some(note.clone()),
            action: "RequestToken".into(),
            secondary: None,
        });
    }
}

/// The clock note from the last exchange, for reconciles that make none:
/// it stays on TokenReady while the last answer said the clocks disagree.
pub(super) fn remembered_clock_note(
    ctx: &Context,
    memory: &ClientMemory,
    inputs: &Inputs<'_>,
) -> Option<String> {
    let skew = memory.clock_skew?;
    (skew.unsigned_abs() > ctx.settings.clocks.skew_warning.as_secs())
        .then(|| super::clock::note(skew, inputs.token_endpoint.authority()))
}

/// A refused or failed token request, in words a person can act on.
fn token_failure(ctx: &Context, inputs: &Inputs<'_>, error: &TokenError) -> Failure {
    // The endpoint may have moved: look again next time (the old result
    // stays as a fallback).
    ctx.discovery.mark_stale(inputs.http, &inputs.spec.metadata);
    let previous = inputs.previous;
    let never_had_token =
        previous.last_refresh_time.is_none() && previous.token_expires_at.is_none();
    let reason = reason::for_token_error(error, never_had_token);
    let (spec, key) = (inputs.spec, inputs.key);
    let message = match reason {
        Reason::AwaitingRegistration => {
            let (namespace, name) = (inputs.target.namespace, inputs.target.name);
            let set = inputs.jwks_set;
            let jwks_url = match (&ctx.settings.jwks_public_url, set) {
                (Some(base), _) => super::jwks::public_uri(base, namespace, name, set),
                (None, Some(set)) => {
                    format!("the operator's /jwks/{namespace}/sets/{set}, once exposed")
                }
                (None, None) => format!("the operator's /jwks/{namespace}/{name}, once exposed"),
            };
            format!(
                "{error}: no token has been obtained yet, so the EHR probably does not know this client; ask its administrators to register client id {} for the client_credentials grant with the public key kid {} ({}) by JWKS URL ({jwks_url}) or by value (status.publicJwks), and the scopes {} (kubectl smart register {name} -n {namespace} prints all of it)",
                spec.client_id,
                key.kid(),
                key.algorithm(),
                spec.scope
            )
        }
        _ => {
            let mut message =
                smart::token::advice(error, &spec.client_id, key.kid(), inputs.token_endpoint);
            if let TokenError::Transport(http) = error
                && let Some((_, advice)) = reason::for_tls(http)
            {
                message = format!("{message}; {advice}");
            }
            message
        }
    };
    tracing::info!(
        namespace = inputs.target.namespace,
        name = inputs.target.name,
        reason = reason.as_str(),
        "token request failed"
    );
    Failure {
        reason,
        message,
        retry_after: error.retry_after(),
    }
}
