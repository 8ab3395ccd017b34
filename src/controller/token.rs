//! The token step: decide whether the token in the Secret is still good,
//! and if not, obtain a new one and write it (one Secret write, no more).

use std::time::{Duration, SystemTime};

use super::Requeue;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use sha2::{Digest, Sha256};

use super::decide::{self, TokenDue};
use super::draft::Draft;
use super::exchange;
use super::reason::{Failure, Reason};
use super::schedule;
use super::scopes;
use super::secrets::{self, StoredToken, TokenSecretInput, rfc3339};
use super::wait;
use super::{ClientMemory, Context, KnownTokenSecret, PendingToken, Target};
use crate::crd::FIELD_MANAGER;
use crate::smart;

pub(super) use super::exchange::Inputs;

/// The token Secret as this process last wrote or read it, when the watch
/// shows that version still and the resource's generation is the same.
pub(super) fn known(
    ctx: &Context,
    memory: &ClientMemory,
    target: &Target<'_>,
    name: &str,
    generation: Option<i64>,
) -> Option<KnownTokenSecret> {
    let known = memory.token_secret()?.clone();
    let version = ctx.own_secret_version(target.namespace, name)?;
    (known.name == name && known.version == version && known.generation == generation)
        .then_some(known)
}

/// Remembers the token Secret at `version` as holding `stored`.
fn remember(
    memory: &mut ClientMemory,
    inputs: &Inputs<'_>,
    version: Option<String>,
    stored: Option<StoredToken>,
) {
    let known = version
        .zip(stored)
        .map(|(version, stored)| KnownTokenSecret {
            name: inputs.spec.token_secret_name.clone(),
            version,
            generation: inputs.generation,
            stored,
        });
    memory.know_token_secret(known);
}

/// A per-client number in [0, 1), stable across reconciles of the same
/// token, so the jittered refresh time does not move (and cause a status
/// write) every time the object is reconciled.
fn stable_jitter(uid: &str, issued_at: SystemTime) -> f64 {
    let secs = issued_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let digest = Sha256::new()
        .chain_update(uid.as_bytes())
        .chain_update(secs.to_be_bytes())
        .finalize();
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    f64::from(n) / (f64::from(u32::MAX) + 1.0)
}

fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

pub(super) async fn refresh(
    ctx: &Context,
    inputs: &Inputs<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Requeue, Failure> {
    let Inputs {
        target,
        spec,
        key,
        previous,
        ..
    } = inputs;
    let timing = &ctx.settings.timing;
    draft.clock_note = exchange::remembered_clock_note(ctx, memory, inputs);
    let inputs_hash = secrets::token_inputs_hash(spec, inputs.token_endpoint.as_str(), key.kid());
    let stored = inputs
        .known
        .clone()
        .or_else(|| inputs.existing.and_then(secrets::read_token_secret));
    let requested = wait::pending_refresh_request(memory, target, previous);

    // A token attempt that failed is retried when its backoff ends, even if
    // the stored token is still good (a requested refresh, a scope change,
    // or a due refresh is still owed).
    let from_status = previous.consecutive_failures > 0
        && previous
            .conditions
            .iter()
            .any(|c| c.type_ == super::conditions::TOKEN_READY && c.status == "False");
    let last_attempt_failed = memory.last_attempt_failed.unwrap_or(from_status);
    let refresh_at = stored.as_ref().map(|stored| {
        let jitter = stable_jitter(target.uid, stored.issued_at);
        let (issued, expires) = (stored.issued_at, stored.expires_at);
        schedule::refresh_at(issued, expires, spec.refresh_before, timing, jitter)
    });
    let due = decide::token_due(
        stored
            .as_ref()
            .map(|s| s.inputs_hash.as_str())
            .zip(refresh_at),
        &inputs_hash,
        requested.is_some(),
        last_attempt_failed,
        SystemTime::now(),
    );
    if let (TokenDue::Keep, Some(stored), Some(refresh_at)) = (due, &stored, refresh_at) {
        return keep(ctx, inputs, stored, refresh_at, draft, memory).await;
    }
    tracing::debug!(client = target.name, namespace = target.namespace, why = ?due, "requesting a token");

    let (token, issued_at) = match take_pending(ctx, memory, &inputs_hash) {
        Some(pending) => (pending.token, pending.issued_at),
        None => match exchange::request(ctx, inputs, draft, memory).await {
            Ok(exchange::Attempt::Got(token, issued_at)) => (token, issued_at),
            Ok(exchange::Attempt::Busy) => {
                // The server has its share of requests in flight: come back
                // in a moment without waiting here or touching the status.
                draft.keep_status = true;
                return Ok(super::servers::come_back_shortly());
            }
            Err(failure) => {
                // The request was acted on; retries now follow the backoff.
                if let Some(value) = requested {
                    memory.handled_refresh = Some(value.to_string());
                    draft.fields.handled_refresh_request = Some(value.to_string());
                }
                return Err(failure);
            }
        },
    };

    let secret = secrets::build_token_secret(&TokenSecretInput {
        spec,
        namespace: target.namespace,
        client_name: target.name,
        owner: target.owner.clone(),
        token: &token,
        issued_at,
        inputs_hash: &inputs_hash,
    });
    match apply_secret(ctx, target.namespace, &spec.token_secret_name, &secret).await {
        Ok(version) => {
            remember(memory, inputs, version, secrets::read_token_secret(&secret));
        }
        Err(error) => {
            // Keep the token: the next attempt writes it instead of minting another.
            let pending = PendingToken {
                token: token.clone(),
                issued_at,
                inputs_hash: inputs_hash.clone(),
            };
            memory.pending = Some(pending);
            let mut failure = Failure::api(
                Reason::TokenSecretWriteFailed,
                "patch",
                target.namespace,
                &spec.token_secret_name,
                &error,
            );
            failure.message = format!("a token was obtained, but {}", failure.message);
            return Err(failure);
        }
    }

    let next = schedule::refresh_at(
        issued_at,
        token.expires_at,
        spec.refresh_before,
        timing,
        stable_jitter(target.uid, issued_at),
    );
    if previous.token_expires_at.is_none() {
        draft.events.push(Event {
            type_: EventType::Normal,
            reason: "TokenIssued".into(),
            note: Some(format!(
                "first access token written to Secret {}",
                spec.token_secret_name
            )),
            action: "RequestToken".into(),
            secondary: None,
        });
    }
    let mut message = format!(
        "token valid until {}; next refresh at {}",
        rfc3339(token.expires_at),
        rfc3339(next)
    );
    if token.expires_in_defaulted {
        message.push_str(&format!(
            "; the server gave no expires_in, so {}s is assumed",
            smart::token::DEFAULT_EXPIRES_IN.as_secs()
        ));
    }
    let state = scopes::token_state(&spec.scope, token.scope.as_deref(), message);
    if state.reason == Reason::ScopeNarrowed {
        ctx.metrics.scope_narrowed.inc();
        let was_narrowed = previous
            .conditions
            .iter()
            .any(|c| c.type_ == super::conditions::TOKEN_READY && c.reason == "ScopeNarrowed");
        if !was_narrowed {
            draft.events.push(Event {
                type_: EventType::Warning,
                reason: Reason::ScopeNarrowed.as_str().into(),
                note: Some(state.message.clone()),
                action: "RequestToken".into(),
                secondary: None,
            });
        }
    }
    memory.expires_at = Some(token.expires_at);
    let fields = &mut draft.fields;
    fields.token_expires_at = Some(rfc3339(token.expires_at));
    fields.last_refresh_time = Some(rfc3339(issued_at));
    fields.next_refresh_time = Some(rfc3339(next));
    fields.granted_scopes = token.scope.clone();
    fields.consecutive_failures = 0;
    if let Some(value) = requested {
        memory.handled_refresh = Some(value.to_string());
        fields.handled_refresh_request = Some(value.to_string());
    }
    draft.token = Some(state);
    Ok(Requeue::After(until(next).max(Duration::from_secs(1))))
}

/// The stored token is good: nothing to request, and at most a metadata
/// write if the Secret template changed.
async fn keep(
    ctx: &Context,
    inputs: &Inputs<'_>,
    stored: &StoredToken,
    refresh_at: SystemTime,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Requeue, Failure> {
    let spec = inputs.spec;
    let drifted = inputs
        .existing
        .filter(|existing| secrets::template_drifted(existing, spec));
    if let Some(existing) = inputs.existing
        && drifted.is_none()
    {
        let version = existing.metadata.resource_version.clone();
        remember(memory, inputs, version, Some(stored.clone()));
    }
    if let Some(existing) = drifted {
        let mut updated = existing.clone();
        let labels = updated.metadata.labels.get_or_insert_default();
        labels.extend(spec.template.labels.clone());
        let annotations = updated.metadata.annotations.get_or_insert_default();
        annotations.extend(spec.template.annotations.clone());
        let desired = Secret {
            metadata: kube::api::ObjectMeta {
                name: updated.metadata.name.clone(),
                namespace: updated.metadata.namespace.clone(),
                labels: updated.metadata.labels.clone(),
                annotations: updated.metadata.annotations.clone(),
                owner_references: updated.metadata.owner_references.clone(),
                ..Default::default()
            },
            type_: updated.type_.clone(),
            data: updated.data.clone(),
            ..Secret::default()
        };
        let written = apply_secret(
            ctx,
            inputs.target.namespace,
            &spec.token_secret_name,
            &desired,
        )
        .await;
        match written {
            Ok(version) => {
                remember(memory, inputs, version, Some(stored.clone()));
            }
            Err(error) => {
                return Err(Failure::api(
                    Reason::TokenSecretWriteFailed,
                    "patch",
                    inputs.target.namespace,
                    &spec.token_secret_name,
                    &error,
                ));
            }
        }
    }
    memory.expires_at = Some(stored.expires_at);
    let fields = &mut draft.fields;
    fields.token_expires_at = Some(rfc3339(stored.expires_at));
    fields.next_refresh_time = Some(rfc3339(refresh_at));
    if fields.last_refresh_time.is_none() {
        fields.last_refresh_time = Some(rfc3339(stored.issued_at));
    }
    fields.granted_scopes = stored.scope.clone();
    fields.consecutive_failures = 0;
    let validity = format!(
        "token valid until {}; next refresh at {}",
        rfc3339(stored.expires_at),
        rfc3339(refresh_at)
    );
    draft.token = Some(scopes::token_state(
        &spec.scope,
        stored.scope.as_deref(),
        validity,
    ));
    Ok(Requeue::After(
        until(refresh_at).max(Duration::from_secs(1)),
    ))
}

fn take_pending(
    ctx: &Context,
    memory: &mut ClientMemory,
    inputs_hash: &str,
) -> Option<PendingToken> {
    let pending = memory.pending.take()?;
    let usable = pending.inputs_hash == inputs_hash
        && pending.token.expires_at
            > crate::checked_time::after(
                SystemTime::now(),
                ctx.settings.timing.min_refresh_interval,
            );
    usable.then_some(pending)
}

/// Applies the token Secret; returns the resource version it made.
async fn apply_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    secret: &Secret,
) -> Result<Option<String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let written = api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await?;
    ctx.metrics.write("token_secret");
    Ok(written.metadata.resource_version)
}
