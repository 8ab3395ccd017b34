//! The key and token steps of a reconcile: find the signing key, take the
//! rotation's step, publish the JWKS, then keep the token fresh (with the
//! next key when this request is a rotation's trial).

use std::time::{Duration, SystemTime};

use crate::controller::decide::events::Happened;
use crate::controller::model::requeue::Requeue;
use k8s_openapi::api::core::v1::Secret;

use crate::controller::Context;
use crate::controller::decide::draft::{Draft, Slot};
use crate::controller::decide::reason::Failure;
use crate::controller::decide::secret_data::StoredToken;
use crate::controller::decide::validate::ValidSpec;
use crate::controller::model::memory::ClientMemory;
use crate::controller::model::target::Target;
use crate::controller::steps::discover::Discovered;
use crate::controller::steps::keys::{self, KeyRequest, ResolvedKey};
use crate::controller::steps::rotate;
use crate::controller::steps::token;
use crate::crd::{SmartBackendClient, SmartBackendClientStatus};
use crate::smart::{HttpClient, SigningKey};

mod record;
use record::{KeyShown, Tokens, record_key};

/// Between generating a key and the first token request that uses it.
const KEY_PUBLICATION_DELAY: Duration = Duration::from_secs(1);

/// What the token step needs that the earlier steps found.
pub(in crate::controller) struct Found<'a> {
    pub sbc: &'a SmartBackendClient,
    pub spec: &'a ValidSpec,
    pub previous: &'a SmartBackendClientStatus,
    pub http: &'a HttpClient,
    pub discovered: &'a Discovered,
    pub existing_token: Option<&'a Secret>,
    pub known_token: Option<StoredToken>,
}

/// How the steps ended when none failed.
pub(in crate::controller) enum Ended {
    /// The draft holds what was found: the status is composed from it.
    Evaluated {
        requeue: Requeue,
        /// When the rotation wants to look again, if before the refresh.
        revisit: Option<SystemTime>,
    },
    /// Nothing was evaluated (a backoff runs, or the server's request
    /// slots were taken): the status stays as it was.
    Deferred(Requeue),
}

impl Ended {
    pub fn evaluated(requeue: Requeue) -> Self {
        Ended::Evaluated {
            requeue,
            revisit: None,
        }
    }
}

/// The key step, the rotation's step and the token step, composed: each
/// returns what it found and did, and this is the one place that records
/// it in the draft (conditions, status fields, events) and in the client's
/// memory.
pub(in crate::controller) async fn key_and_token(
    ctx: &Context,
    target: &Target<'_>,
    found: Found<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Ended, (Slot, Failure)> {
    let (sbc, previous) = (found.sbc, found.previous);
    let at_key = |failure| (Slot::Key, failure);
    let (key, rotation) = key_step(ctx, target, &found, draft, memory).await?;
    if key.generated {
        // Publish first, use after: the status (and so every replica's JWKS
        // endpoint) carries the new key before any server is asked to
        // verify a signature made with it.
        return Ok(Ended::evaluated(Requeue::After(KEY_PUBLICATION_DELAY)));
    }

    let authority = found.discovered.token_endpoint.authority();
    let mut tokens = Tokens::default();
    let mut revisit = rotation.revisit;
    if let Some(next) = &rotation.trial {
        let trial = token::refresh(ctx, &inputs(target, &found, next), memory.recall()).await;
        match trial.result {
            // The server's request slots were taken: nothing was tried.
            Ok(token::Outcome::Busy) => {
                tokens.learn(ctx, memory, trial.memo, authority);
                return Ok(Ended::Deferred(
                    crate::controller::fairness::servers::come_back_shortly(),
                ));
            }
            Ok(token::Outcome::Good(good)) => {
                tokens.learn(ctx, memory, trial.memo, authority);
                let mut promoted =
                    rotate::promote(ctx, target, &key, &rotation, next, memory.recall())
                        .await
                        .map_err(at_key)?;
                memory.learn_key(std::mem::take(&mut promoted.learned));
                draft.events.push(promoted.event);
                draft.fields.key_rotation = Some(promoted.status);
                let note =
                    rotate::current_note(ctx, draft.fields.key_rotation.as_ref(), &promoted.ring);
                let shown = KeyShown::new(&key, next, &promoted.ring, note);
                record_key(ctx, target, sbc, shown, draft);
                let next_refresh = good.next_refresh;
                tokens.record(draft, good);
                return Ok(evaluated(next_refresh, promoted.revisit));
            }
            // Not accepted, for whatever reason (a refusal, a 500, a body
            // that is not JSON): the trial backs off and the working key
            // refreshes now, as if no trial had been made.
            Err(failure) => {
                tokens.learn(ctx, memory, trial.memo.of_failed_trial(), authority);
                let refused =
                    rotate::not_accepted(&rotation, previous, next, &failure, SystemTime::now());
                draft.events.push(refused.event);
                draft.fields.key_rotation = Some(refused.status);
                revisit = Some(refused.again);
                let note =
                    rotate::current_note(ctx, draft.fields.key_rotation.as_ref(), &rotation.ring);
                let shown = KeyShown::new(&key, &key.signing, &rotation.ring, note);
                record_key(ctx, target, sbc, shown, draft);
                tokens.trial_failed = true;
            }
        }
    }
    let mut step =
        token::refresh(ctx, &inputs(target, &found, &key.signing), memory.recall()).await;
    if let Err(refused) = &step.result
        && rotation.trial.is_none()
        && let Some(back) = rotate::fallback_key(&rotation.ring, refused)
    {
        // The server refused the key it accepted at the promotion: ask
        // again with the retiring key, and if that brings a token, it
        // signs again.
        let refused = refused.clone();
        tokens.learn(ctx, memory, step.memo.of_failed_trial(), authority);
        step = token::refresh(ctx, &inputs(target, &found, &back), memory.recall()).await;
        if let Ok(token::Outcome::Good(_)) = &step.result {
            tokens.learn(ctx, memory, std::mem::take(&mut step.memo), authority);
            let mut fell = rotate::fall_back(
                ctx,
                target,
                &key,
                &rotation,
                previous,
                &back,
                &refused,
                memory.recall(),
            )
            .await
            .map_err(at_key)?;
            memory.learn_key(std::mem::take(&mut fell.learned));
            draft.events.push(fell.event);
            draft.fields.key_rotation = Some(fell.status);
            revisit = Some(fell.again);
            let note = rotate::current_note(ctx, draft.fields.key_rotation.as_ref(), &fell.ring);
            let shown = KeyShown::new(&key, &back, &fell.ring, note);
            record_key(ctx, target, sbc, shown, draft);
        } else if step.result.is_err() {
            // Both keys refused: the signing key's refusal is the news.
            step.result = Err(refused);
        }
    }
    tokens.learn(ctx, memory, step.memo, authority);
    match step.result {
        Ok(token::Outcome::Busy) if tokens.trial_failed => {
            // The working key found the server busy: its condition stays,
            // but the trial's backoff is written, or the next look tries
            // again at once.
            Ok(Ended::Evaluated {
                requeue: crate::controller::fairness::servers::come_back_shortly(),
                revisit,
            })
        }
        Ok(token::Outcome::Busy) => Ok(Ended::Deferred(
            crate::controller::fairness::servers::come_back_shortly(),
        )),
        Ok(token::Outcome::Good(good)) => {
            let next_refresh = good.next_refresh;
            tokens.record(draft, good);
            Ok(evaluated(next_refresh, revisit))
        }
        Err(mut failure) => {
            if let Some(value) = tokens.handled {
                draft.fields.handled_refresh_request = Some(value);
            }
            if let Some(note) = &tokens.clock_note {
                failure.message = format!("{note}; {}", failure.message);
            }
            Err((Slot::Token, failure))
        }
    }
}

/// The key and the rotation's step: resolved, stepped, and recorded (the
/// Key condition, the key fields, the published JWKS, their events).
async fn key_step(
    ctx: &Context,
    target: &Target<'_>,
    found: &Found<'_>,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<(ResolvedKey, rotate::Rotation), (Slot, Failure)> {
    let Found {
        sbc,
        spec,
        previous,
        discovered,
        ..
    } = *found;
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
        previous,
    };
    let at_key = |failure| (Slot::Key, failure);
    let mut key = keys::resolve(ctx, target, &key_request, memory.recall())
        .await
        .map_err(at_key)?;
    memory.learn_key(std::mem::take(&mut key.learned));
    if key.generated {
        ctx.metrics.keys_generated.inc();
        ctx.metrics.write("key_secret");
        draft.events.push(Happened::KeyGenerated.event(format!(
            "generated a {} key (kid {}) in Secret {}; register its public JWKS (status.publicJwks or the operator's /jwks/{}/{}) with the EHR",
            key.signing.algorithm(),
            key.signing.kid(),
            key.secret_name,
            target.namespace,
            target.name
        )));
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
    let mut rotation = rotate::advance(ctx, target, &key, &observed, memory.recall())
        .await
        .map_err(at_key)?;
    memory.learn_key(std::mem::take(&mut rotation.learned));
    draft.events.append(&mut rotation.events);
    draft.fields.key_rotation = rotation.status.clone();
    let shown = KeyShown::new(&key, &key.signing, &rotation.ring, rotation.note.clone());
    record_key(ctx, target, sbc, shown, draft);
    draft.fields.token_endpoint = Some(discovered.token_endpoint.to_string());
    Ok((key, rotation))
}

/// The requeue after a good token: its next refresh, or the rotation's next
/// look when that comes first.
fn evaluated(next_refresh: SystemTime, revisit: Option<SystemTime>) -> Ended {
    let look = revisit.map_or(next_refresh, |r| r.min(next_refresh));
    let wait = look.duration_since(SystemTime::now()).unwrap_or_default();
    Ended::Evaluated {
        requeue: Requeue::After(wait.max(Duration::from_secs(1))),
        revisit,
    }
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
