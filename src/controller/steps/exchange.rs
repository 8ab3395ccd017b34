//! The token request itself: sign a fresh assertion, exchange it, and turn
//! what came back (a token, a refusal, the server's clock) into what the
//! token step and the status need.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::Event;
use url::Url;

use crate::controller::Context;
use crate::controller::decide::events::Happened;
use crate::controller::decide::reason::{self, Failure, Reason};
use crate::controller::decide::secret_data::{self, StoredToken};
use crate::controller::decide::validate::ValidSpec;
use crate::controller::fairness::servers::Admission;
use crate::controller::model::target::Target;
use crate::crd::SmartBackendClientStatus;
use crate::smart::{
    self, AccessToken, AssertionParams, HttpClient, HttpError, SigningKey, TokenError, TokenRequest,
};

pub(in crate::controller) struct Inputs<'a> {
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

/// How a token request went, when it did not fail.
pub(in crate::controller) enum Attempt {
    Got(AccessToken, SystemTime),
    /// The server's request slots were all taken: nothing was sent.
    Busy,
}

/// A request that reached the wire: whether it brought a token, and what
/// the answer's `Date` header said of the server's clock (its clock minus
/// this host's, in seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::controller) struct Sent {
    pub ok: bool,
    pub clock_skew: Option<i64>,
}

/// A token request's result, and the request if one was sent.
pub(in crate::controller) struct Exchange {
    pub result: Result<Attempt, Failure>,
    pub sent: Option<Sent>,
}

impl From<Result<Attempt, Failure>> for Exchange {
    fn from(result: Result<Attempt, Failure>) -> Self {
        Exchange { result, sent: None }
    }
}

/// Signs a fresh assertion (new jti) and exchanges it, holding a slot of the
/// authorization server's concurrency limit. `stored_expires_at`: when the
/// token the Secret holds expires (an open breaker lets a token through that
/// cannot wait).
pub(in crate::controller) async fn request(
    ctx: &Context,
    inputs: &Inputs<'_>,
    stored_expires_at: Option<SystemTime>,
) -> Exchange {
    let authority = inputs.token_endpoint.authority().to_string();
    let token_left = stored_expires_at.and_then(|at| at.duration_since(SystemTime::now()).ok());
    let _permit = match ctx.servers.admit(
        &authority,
        inputs.target.namespace,
        Instant::now(),
        token_left,
    ) {
        Admission::Go(permit) => permit,
        Admission::Busy => return Ok(Attempt::Busy).into(),
        Admission::Open { until, failures } => {
            let wait = until.saturating_duration_since(Instant::now());
            return Exchange::from(Err(Failure {
                reason: Reason::ServerNotAnswering,
                message: format!(
                    "the last {failures} requests to {authority} timed out or were refused, so requests to it pause for {}s (for this namespace's clients of that server whose token can wait that long); check that the server is up and reachable from the operator",
                    wait.as_secs().max(1)
                ),
                retry_after: Some(wait),
            }));
        }
    };
    let audience = inputs
        .spec
        .audience
        .clone()
        .unwrap_or_else(|| inputs.token_endpoint.to_string());
    let mut params = AssertionParams::new(&inputs.spec.client_id, &audience);
    params.jku = inputs.spec.jku.as_deref();
    params.backdate = ctx.settings.clocks.backdate();
    params.lifetime = ctx.settings.clocks.assertion_lifetime();
    let issued_at = secret_data::whole_second(SystemTime::now());
    let assertion = match inputs.key.sign_assertion(&params).await {
        Ok(assertion) => assertion,
        Err(e) => {
            let whose = format!(
                "the assertion could not be signed with key kid {}",
                inputs.key.kid()
            );
            return Exchange::from(Err(crate::controller::steps::keys::signer_failure(
                ctx, &whose, e,
            )));
        }
    };
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
        ctx.metrics.clock_skew_seconds.set(skew as f64);
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
    let sent = Some(Sent {
        ok: result.is_ok(),
        clock_skew: exchange.clock_skew,
    });
    let result = match result {
        Ok(mut token) => {
            token.expires_at = secret_data::whole_second(token.expires_at);
            Ok(Attempt::Got(token, issued_at))
        }
        Err(error) => Err(token_failure(ctx, inputs, &error)),
    };
    Exchange { result, sent }
}

/// What the server's clock means for TokenReady and the events, from the
/// skew its last answer showed (`now`) and the one before (`was`): past the
/// threshold, a note on TokenReady while it lasts and one Warning when it
/// begins. Pure.
pub(in crate::controller) fn clock_report(
    was: Option<i64>,
    now: Option<i64>,
    threshold: Duration,
    server: &str,
) -> (Option<String>, Option<Event>) {
    let beyond = |s: i64| s.unsigned_abs() > threshold.as_secs();
    let Some(skew) = now.filter(|s| beyond(*s)) else {
        return (None, None);
    };
    let note = crate::controller::decide::clock::note(skew, server);
    let event = (!was.is_some_and(beyond)).then(|| Happened::ClockSkew.event(note.clone()));
    (Some(note), event)
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
                (Some(base), _) => {
                    crate::controller::watch::jwks::public_uri(base, namespace, name, set)
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_past_the_threshold_is_a_note_while_it_lasts_and_one_warning() {
        let threshold = Duration::from_secs(60);
        let report = |was, now| clock_report(was, now, threshold, "ehr.example");
        // (was, now): note?, event?
        let cases = [
            (None, None, false, false),
            (None, Some(30), false, false),
            (None, Some(-90), true, true),
            (Some(10), Some(120), true, true),
            (Some(120), Some(125), true, false),
            (Some(-120), Some(90), true, false),
            (Some(120), Some(5), false, false),
            (Some(120), None, false, false),
        ];
        for (was, now, note, event) in cases {
            let (n, e) = report(was, now);
            assert_eq!(n.is_some(), note, "{was:?} -> {now:?}: note");
            assert_eq!(e.is_some(), event, "{was:?} -> {now:?}: event");
            if let Some(e) = e {
                assert_eq!(e.reason, "ClockSkew");
                assert_eq!(e.note, n);
            }
        }
    }
}
