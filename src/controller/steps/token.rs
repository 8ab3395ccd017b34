//! The token step: decide whether the token in the Secret is still good,
//! and if not, obtain a new one and write it (one Secret write, no more).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Event;
use sha2::{Digest, Sha256};

use crate::controller::Context;
use crate::controller::decide::conditions::State;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::schedule;
use crate::controller::decide::scopes;
use crate::controller::decide::secret_data::{self, StoredToken, TokenSecretInput, rfc3339};
use crate::controller::decide::wait;
use crate::controller::decide::{self, TokenDue};
use crate::controller::model::memory::{KnownTokenSecret, PendingToken};
use crate::controller::model::memory::{Pending, Recall, TokenMemo};
use crate::controller::model::target::Target;
use crate::controller::steps::exchange;
use crate::crd::FIELD_MANAGER;

pub(in crate::controller) use crate::controller::steps::exchange::Inputs;

mod deliver;

/// The token Secret as this process last wrote or read it, when the watch
/// shows that version still and the resource's generation is the same.
pub(in crate::controller) fn known(
    ctx: &Context,
    recall: Recall<'_>,
    target: &Target<'_>,
    name: &str,
    generation: Option<i64>,
) -> Option<KnownTokenSecret> {
    let known = recall.token_secret?.clone();
    let version = ctx.own_secret_version(target.namespace, name)?;
    (known.name == name && known.version == version && known.generation == generation)
        .then_some(known)
}

/// The token Secret at `version`, holding `stored`, as memory keeps it.
fn known_at(
    inputs: &Inputs<'_>,
    version: Option<String>,
    stored: Option<StoredToken>,
) -> Option<KnownTokenSecret> {
    version
        .zip(stored)
        .map(|(version, stored)| KnownTokenSecret {
            name: inputs.spec.token_secret_name.clone(),
            version,
            generation: inputs.generation,
            stored,
        })
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

/// What the token step found and did, for one place to record.
pub(in crate::controller) enum Outcome {
    /// The server's request slots were all taken: nothing was tried, and
    /// nothing is to be written.
    Busy,
    /// The Secret holds a good token: the one it had, or one obtained and
    /// written now.
    Good(Good),
}

/// A good token in the Secret, and what the status says of it.
pub(in crate::controller) struct Good {
    pub expires_at: SystemTime,
    pub issued_at: SystemTime,
    /// Obtained by this reconcile (else kept from the Secret).
    pub new: bool,
    pub next_refresh: SystemTime,
    pub granted_scope: Option<String>,
    /// The TokenReady condition.
    pub state: State,
    pub events: Vec<Event>,
}

/// The token step's result and what it changes in the client's memory,
/// whatever the result: a token obtained but not written is kept even when
/// the step fails.
pub(in crate::controller) struct Step {
    pub result: Result<Outcome, Failure>,
    pub memo: TokenMemo,
}

impl Step {
    fn fail(failure: Failure, memo: TokenMemo) -> Self {
        Step {
            result: Err(failure),
            memo,
        }
    }
}

/// The token step: keep the token in the Secret while it is good, else
/// obtain one and write it. Reads the client's memory, never writes it:
/// what it learned comes back in [`Step::memo`].
pub(in crate::controller) async fn refresh(
    ctx: &Context,
    inputs: &Inputs<'_>,
    recall: Recall<'_>,
) -> Step {
    let Inputs {
        target,
        spec,
        key,
        previous,
        ..
    } = inputs;
    let timing = &ctx.settings.timing;
    let inputs_hash =
        secret_data::token_inputs_hash(spec, inputs.token_endpoint.as_str(), key.kid());
    // Where the token is kept: the Secret, or (CSI only) the leader's memory.
    let stored = if spec.to_secret {
        inputs
            .known
            .clone()
            .or_else(|| inputs.existing.and_then(secret_data::read_token_secret))
    } else {
        deliver::held(ctx, target)
    };
    let requested = wait::pending_refresh_request(recall.handled_refresh, target, previous);

    // A token attempt that failed is retried when its backoff ends, even if
    // the stored token is still good (a requested refresh, a scope change,
    // or a due refresh is still owed).
    let from_status = previous.consecutive_failures > 0
        && previous.conditions.iter().any(|c| {
            c.type_ == crate::controller::decide::conditions::TOKEN_READY && c.status == "False"
        });
    let last_attempt_failed = recall.last_attempt_failed.unwrap_or(from_status);
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
        return keep(ctx, inputs, stored, refresh_at).await;
    }
    tracing::debug!(client = target.name, namespace = target.namespace, why = ?due, "requesting a token");

    let stored_expires_at = stored.as_ref().map(|s| s.expires_at);
    obtain(
        ctx,
        inputs,
        recall,
        &inputs_hash,
        requested,
        stored_expires_at,
    )
    .await
}

/// A token is due: the one obtained earlier and not written (if still
/// usable), or a new one from the server; then written to the Secret.
/// `stored_expires_at`: when the token the Secret holds expires.
async fn obtain(
    ctx: &Context,
    inputs: &Inputs<'_>,
    recall: Recall<'_>,
    inputs_hash: &str,
    requested: Option<&str>,
    stored_expires_at: Option<SystemTime>,
) -> Step {
    let Inputs {
        target,
        spec,
        previous,
        ..
    } = inputs;
    let timing = &ctx.settings.timing;
    let mut memo = TokenMemo::default();
    let (token, issued_at) = match usable_pending(ctx, recall, inputs_hash) {
        Some(pending) => {
            memo.pending = Pending::Dropped;
            (pending.token, pending.issued_at)
        }
        None => {
            if recall.pending.is_some() {
                memo.pending = Pending::Dropped;
            }
            let exchange = exchange::request(ctx, inputs, stored_expires_at).await;
            if let Some(sent) = exchange.sent {
                memo.attempt_failed = Some(!sent.ok);
                memo.clock_skew = sent.clock_skew;
            }
            match exchange.result {
                Ok(exchange::Attempt::Got(token, issued_at)) => (token, issued_at),
                Ok(exchange::Attempt::Busy) => {
                    return Step {
                        result: Ok(Outcome::Busy),
                        memo,
                    };
                }
                Err(failure) => {
                    // The request was acted on; retries now follow the backoff.
                    memo.handled_request = requested.map(str::to_string);
                    return Step::fail(failure, memo);
                }
            }
        }
    };

    let next = schedule::refresh_at(
        issued_at,
        token.expires_at,
        spec.refresh_before,
        timing,
        stable_jitter(target.uid, issued_at),
    );
    deliver::put(ctx, target, spec, &token, issued_at, inputs_hash, next);
    if spec.to_secret
        && let Err(failure) = write(ctx, inputs, &token, issued_at, inputs_hash, &mut memo).await
    {
        return Step::fail(failure, memo);
    }

    let (state, events) = scopes::obtained(spec, previous, &token, next);
    if state.reason == Reason::ScopeNarrowed {
        ctx.metrics.scope_narrowed.inc();
    }
    memo.handled_request = requested.map(str::to_string);
    memo.expires_at = Some(token.expires_at);
    let good = Good {
        expires_at: token.expires_at,
        issued_at,
        new: true,
        next_refresh: next,
        granted_scope: token.scope.clone(),
        state,
        events,
    };
    Step {
        result: Ok(Outcome::Good(good)),
        memo,
    }
}

/// The stored token is good: nothing to request, and at most a metadata
/// write if the Secret template changed. The repair applies only the
/// fields this operator owns.
async fn keep(
    ctx: &Context,
    inputs: &Inputs<'_>,
    stored: &StoredToken,
    refresh_at: SystemTime,
) -> Step {
    let (spec, target) = (inputs.spec, inputs.target);
    let mut memo = TokenMemo::default();
    if let Some(existing) = inputs.existing {
        let mut version = existing.metadata.resource_version.clone();
        if secret_data::template_drifted(existing, spec) {
            let repaired =
                secret_data::repaired_token_secret(existing, spec, target.namespace, target.name);
            match apply_secret(ctx, target.namespace, &spec.token_secret_name, &repaired).await {
                Ok(written) => version = written,
                Err(error) => {
                    let failure = Failure::api(
                        Reason::TokenSecretWriteFailed,
                        "patch",
                        target.namespace,
                        &spec.token_secret_name,
                        &error,
                    );
                    return Step::fail(failure, memo);
                }
            }
        }
        memo.secret = known_at(inputs, version, Some(stored.clone()));
    }
    deliver::keep(ctx, target, spec, inputs.existing, stored, refresh_at);
    memo.expires_at = Some(stored.expires_at);
    let validity = format!(
        "token valid until {}; next refresh at {}",
        rfc3339(stored.expires_at),
        rfc3339(refresh_at)
    );
    let good = Good {
        expires_at: stored.expires_at,
        issued_at: stored.issued_at,
        new: false,
        next_refresh: refresh_at,
        granted_scope: stored.scope.clone(),
        state: scopes::token_state(&spec.scope, stored.scope.as_deref(), validity),
        events: Vec::new(),
    };
    Step {
        result: Ok(Outcome::Good(good)),
        memo,
    }
}

/// Writes the token Secret. A token that cannot be written is kept in
/// memory: the next attempt writes it instead of minting another.
async fn write(
    ctx: &Context,
    inputs: &Inputs<'_>,
    token: &crate::smart::AccessToken,
    issued_at: SystemTime,
    inputs_hash: &str,
    memo: &mut TokenMemo,
) -> Result<(), Failure> {
    let (target, spec) = (inputs.target, inputs.spec);
    let secret = secret_data::build_token_secret(&TokenSecretInput {
        spec,
        namespace: target.namespace,
        client_name: target.name,
        owner: target.owner.clone(),
        token,
        issued_at,
        inputs_hash,
    });
    match apply_secret(ctx, target.namespace, &spec.token_secret_name, &secret).await {
        Ok(version) => {
            memo.secret = known_at(inputs, version, secret_data::read_token_secret(&secret));
        }
        Err(error) => {
            // Keep the token: the next attempt writes it instead of minting another.
            memo.pending = Pending::Keep(PendingToken {
                token: token.clone(),
                issued_at,
                inputs_hash: inputs_hash.to_string(),
            });
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
    Ok(())
}

fn usable_pending(ctx: &Context, recall: Recall<'_>, inputs_hash: &str) -> Option<PendingToken> {
    let pending = recall.pending?;
    let usable = pending.inputs_hash == inputs_hash
        && pending.token.expires_at
            > crate::checked_time::after(
                SystemTime::now(),
                ctx.settings.timing.min_refresh_interval,
            );
    usable.then(|| pending.clone())
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
