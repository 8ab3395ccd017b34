//! The key and token steps of a reconcile: find the signing key, take the
//! rotation's step, publish the JWKS, then keep the token fresh (with the
//! next key when this request is a rotation's trial).

use std::time::{Duration, SystemTime};

use super::Requeue;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType};

use super::conditions::State;
use super::discover::Discovered;
use super::draft::{Draft, Slot};
use super::key_ring::Ring;
use super::keys::{self, KeyRequest};
use super::reason::{Failure, Reason};
use super::secrets::{StoredToken, parse_rfc3339};
use super::validate::ValidSpec;
use super::{ClientMemory, Context, Target, rotate, token};
use crate::crd::{SmartBackendClient, SmartBackendClientStatus};
use crate::smart::{HttpClient, SigningKey};

/// Between generating a key and the first token request that uses it.
const KEY_PUBLICATION_DELAY: Duration = Duration::from_secs(1);

/// What the token step needs that the earlier steps found.
pub(super) struct Found<'a> {
    pub sbc: &'a SmartBackendClient,
    pub spec: &'a ValidSpec,
    pub previous: &'a SmartBackendClientStatus,
    pub http: &'a HttpClient,
    pub discovered: &'a Discovered,
    pub existing_token: Option<&'a Secret>,
    pub known_token: Option<StoredToken>,
}

pub(super) async fn key_and_token(
    ctx: &Context,
    target: &Target<'_>,
    found: Found<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Requeue, (Slot, Failure)> {
    let Found {
        sbc,
        spec,
        previous,
        discovered,
        ..
    } = found;
    let server_algorithms = discovered.config.as_ref().and_then(|c| {
        c.token_endpoint_auth_signing_alg_values_supported
            .as_deref()
    });
    let key_request = KeyRequest {
        source: &spec.key,
        algorithm: discovered.algorithm,
        explicit_algorithm: spec.algorithm,
        server_algorithms,
        kid: spec.kid.as_deref(),
    };
    let at_key = |failure| (Slot::Key, failure);
    let key = keys::resolve(ctx, target, &key_request, memory)
        .await
        .map_err(at_key)?;
    if key.generated {
        ctx.metrics.keys_generated.inc();
        ctx.metrics.write("key_secret");
        draft.events.push(Event {
            type_: EventType::Normal,
            reason: "KeyGenerated".into(),
            note: Some(format!(
                "generated a {} key (kid {}) in Secret {}; register its public JWKS (status.publicJwks or the operator's /jwks/{}/{}) with the EHR",
                key.signing.algorithm(),
                key.signing.kid(),
                key.secret_name,
                target.namespace,
                target.name
            )),
            action: "GenerateKey".into(),
            secondary: None,
        });
    }
    if key.regeneration_handled.is_some() {
        draft.fields.handled_key_regeneration = key.regeneration_handled.clone();
    }
    let observed = rotate::Observed {
        spec,
        previous,
        preferred: discovered.algorithm,
        server_algorithms,
        now: SystemTime::now(),
    };
    let rotation = rotate::advance(ctx, target, &key, &observed, draft, memory)
        .await
        .map_err(at_key)?;
    draft.revisit = rotation.revisit;
    record_key(
        ctx,
        target,
        sbc,
        &key.signing,
        &key.secret_name,
        &rotation.ring,
        rotation.note,
        draft,
    );
    draft.fields.token_endpoint = Some(discovered.token_endpoint.to_string());
    if key.generated {
        // Publish first, use after: the status (and so every replica's JWKS
        // endpoint) carries the new key before any server is asked to
        // verify a signature made with it.
        return Ok(Requeue::After(KEY_PUBLICATION_DELAY));
    }

    let at_token = |failure| (Slot::Token, failure);
    let mut trial_failed = false;
    if let Some(next) = &rotation.trial {
        // What the trial may mark as done that the working key still owes.
        let before = (
            memory.last_attempt_failed,
            memory.handled_refresh.clone(),
            draft.fields.handled_refresh_request.clone(),
        );
        match token::refresh(ctx, &inputs(target, &found, next), draft, memory).await {
            // The server's request slots were taken: nothing was tried.
            Ok(action) if draft.keep_status => return Ok(action),
            Ok(action) => {
                let ring = rotate::promote(ctx, target, &key, &rotation.ring, next, draft, memory)
                    .await
                    .map_err(at_key)?;
                let note = rotate::current_note(ctx, draft, &ring);
                record_key(ctx, target, sbc, next, &key.secret_name, &ring, note, draft);
                return Ok(sooner(action, draft));
            }
            // Not accepted, for whatever reason (a refusal, a 500, a body
            // that is not JSON): the trial backs off and the working key
            // refreshes now, as if no trial had been made.
            Err(failure) => {
                (memory.last_attempt_failed, memory.handled_refresh) = (before.0, before.1);
                draft.fields.handled_refresh_request = before.2;
                rotate::not_accepted(draft, previous, next, &failure);
                let note = rotate::current_note(ctx, draft, &rotation.ring);
                let (signing, name) = (&key.signing, &key.secret_name);
                record_key(ctx, target, sbc, signing, name, &rotation.ring, note, draft);
                trial_failed = true;
            }
        }
    }
    let action = token::refresh(ctx, &inputs(target, &found, &key.signing), draft, memory)
        .await
        .map_err(at_token)?;
    if trial_failed && draft.keep_status {
        // The working key found the server busy: its status stays, but the
        // trial's backoff must be written, or the next look tries again.
        draft.keep_status = false;
    }
    Ok(sooner(action, draft))
}

fn inputs<'a>(
    target: &'a Target<'a>,
    found: &'a Found<'a>,
    key: &'a SigningKey,
) -> token::Inputs<'a> {
    token::Inputs {
        target,
        spec: found.spec,
        http: found.http,
        token_endpoint: &found.discovered.token_endpoint,
        key,
        existing: found.existing_token,
        known: found.known_token.clone(),
        generation: found.sbc.metadata.generation,
        previous: found.previous,
        jwks_set: found.sbc.spec.signing.jwks_set.as_deref(),
    }
}

/// The Key condition, the key fields of the status and the published JWKS.
#[allow(clippy::too_many_arguments)]
fn record_key(
    ctx: &Context,
    target: &Target<'_>,
    sbc: &SmartBackendClient,
    signing: &SigningKey,
    secret_name: &str,
    ring: &Ring,
    note: Option<String>,
    draft: &mut Draft,
) {
    let jwks = ring.published().to_json();
    let jwks_set = sbc.spec.signing.jwks_set.clone();
    ctx.jwks.publish(
        target.namespace,
        target.name,
        super::Published {
            jwks: jwks.clone(),
            set: jwks_set.clone(),
        },
    );
    let mut message = format!(
        "{} key, kid {}, in Secret {secret_name}",
        signing.algorithm(),
        signing.kid(),
    );
    if let Some(note) = note {
        message = format!("{message}; {note}");
    }
    draft.set(Slot::Key, State::ok(Reason::KeyReady, message));
    draft.fields.algorithm = Some(signing.algorithm());
    draft.fields.kid = Some(signing.kid().to_string());
    draft.fields.key_secret_name = Some(secret_name.to_string());
    draft.fields.public_jwks = Some(jwks);
    draft.fields.keys = ring.status();
    draft.fields.jwks_uri = ctx.settings.jwks_public_url.as_ref().map(|base| {
        super::jwks::public_uri(base, target.namespace, target.name, jwks_set.as_deref())
    });
}

/// The token step's requeue, or sooner when the rotation wants to look
/// again first. A good token's requeue is its next refresh time.
fn sooner(action: Requeue, draft: &Draft) -> Requeue {
    let refresh = draft
        .fields
        .next_refresh_time
        .as_deref()
        .and_then(parse_rfc3339);
    match (draft.revisit, refresh) {
        (Some(revisit), Some(refresh)) if revisit < refresh => {
            let wait = revisit
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            Requeue::After(wait.max(Duration::from_secs(1)))
        }
        _ => action,
    }
}
