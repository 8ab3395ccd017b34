//! One reconcile of one SmartBackendClient, as named steps. Each step
//! records its condition in a [`Draft`]; the status is patched once at the
//! end, and only when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::checked_time::after;
use crate::controller::decide::events;
use crate::controller::model::requeue::Requeue;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::decide::conditions::{self, State};
use crate::controller::decide::draft::{Draft, Slot};
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::schedule;
use crate::controller::decide::validate::ValidSpec;
use crate::controller::decide::wait;
use crate::controller::decide::{self, Gate};
use crate::controller::model::memory::{ClientMemory, KnownTokenSecret};
use crate::controller::model::target::Target;
use crate::controller::steps::discover;
use crate::controller::steps::key_and_token;
use crate::controller::steps::key_and_token::Ended;
use crate::controller::steps::token;
use crate::controller::watch::watched::WatchedClient;
use crate::controller::{Context, Error, Failed};
use crate::crd::{FIELD_MANAGER, SmartBackendClient, SmartBackendClientStatus};
use tracing::Instrument;

/// How long a client whose reconcile panicked waits before the next try.
const CONTAINED_RETRY: Duration = Duration::from_secs(300);

/// One reconcile, contained: a panic inside it becomes this client's
/// failure (an `InternalError` condition, a metric, a retry later), never
/// the end of the controller that runs every other client. Each outcome is
/// recorded as the client's next planned look, which liveness watches.
pub async fn reconcile(obj: Arc<WatchedClient>, ctx: Arc<Context>) -> Result<Action, Failed> {
    let started = Instant::now();
    let meta = obj.meta();
    // Within the namespace's share of the workers, or back in a moment
    // (before anything is allocated: a backlog is put off many times).
    let (Some(ns), Some(id), Some(name)) = (
        meta.namespace.as_deref(),
        meta.uid.as_deref(),
        meta.name.as_deref(),
    ) else {
        return Err(Failed {
            error: Error::MissingObjectKey("namespace, name or uid"),
            retry: schedule::ERROR_RETRY,
        });
    };
    // A term's first look at a settled client waits for its turn, so that
    // the clients due soonest are looked at first (unless its token Secret
    // is gone: then now).
    if !ctx.memory.knows(id) {
        let now = SystemTime::now();
        let status = obj.0.as_ref().ok().and_then(|sbc| sbc.status.as_ref());
        let token_secret = status.and_then(|s| s.token_secret_name.as_deref());
        let gone = token_secret.is_some_and(|s| ctx.own_secret_shown(ns, s) == Some(false));
        let status = status.filter(|_| !gone);
        if let Some(wait) = wait::first_look_wait(meta, status, ctx.term_started(now), now) {
            ctx.metrics.reconciles_unchanged.inc();
            ctx.progress.plan(id, ns, name, Some(after(now, wait)), now);
            return Ok(Action::requeue(wait));
        }
    }
    let _place = match ctx.workers.admit(ns, id, rand::random()) {
        Ok(place) => place,
        Err(wait) => {
            ctx.metrics.reconciles_deferred.inc();
            return Ok(Action::requeue(wait));
        }
    };
    let ids = Ids {
        name,
        namespace: ns,
        uid: id,
    };
    let span = tracing::info_span!("reconcile", namespace = ns, name);
    let reconciled = reconcile_client(&obj, &ctx, ids, started).instrument(span);
    let result = match crate::controller::steps::contain::caught(reconciled).await {
        Ok(result) => result,
        Err(panic) => Ok(contained(&obj, &ctx, ids, &panic).await),
    };
    let now = SystemTime::now();
    let next = match &result {
        Ok(requeue) => requeue.at(now),
        Err(failed) => Some(after(now, failed.retry)),
    };
    ctx.progress.plan(id, ns, name, next, now);
    result.map(Action::from)
}

async fn reconcile_client(
    obj: &WatchedClient,
    ctx: &Context,
    ids: Ids<'_>,
    started: Instant,
) -> Result<Requeue, Failed> {
    if obj.meta().deletion_timestamp.is_some() {
        ctx.jwks.remove(ids.namespace, ids.name);
        if let Some(delivery) = &ctx.delivery {
            delivery.tokens.forget(ids.namespace, ids.name);
        }
        ctx.forget(ids.uid);
        return Ok(Requeue::OnChange);
    }
    // The client's memory: one snapshot, one commit, whatever the outcome.
    let mut memory = ctx.memory.take(ids.uid);
    let result = reconcile_with(obj, ctx, ids, &mut memory, started).await;
    // Errors of the operator's own back off per client, and a success
    // starts the count again.
    let result = result.map_err(|error| {
        let failures = memory.reconcile_failed();
        let backoff = schedule::after_error(failures, &ctx.settings.timing, rand::random());
        // Before the current token expires, whatever the count: the status
        // says when it does if this process has not written it.
        let expires = memory.token_expires_at().or_else(|| {
            let status = obj.0.as_ref().ok()?.status.as_ref()?;
            crate::controller::decide::secret_data::parse_rfc3339(
                status.token_expires_at.as_deref()?,
            )
        });
        let left = expires.and_then(|e| e.duration_since(SystemTime::now()).ok());
        let retry = schedule::error_retry_before_expiry(backoff, left);
        Failed { error, retry }
    });
    if result.is_ok() {
        memory.reconcile_succeeded();
    }
    ctx.memory.commit(ids.uid, memory);
    result
}

/// After a panic in `obj`'s reconcile: the failure is said on the object
/// (its other status fields and its Secrets are kept), counted and logged,
/// and what this process remembered of the client is dropped, since a step
/// may have left it half-updated. The panic's text goes to the log only.
async fn contained(obj: &WatchedClient, ctx: &Context, ids: Ids<'_>, what: &str) -> Requeue {
    ctx.metrics.reconcile_panics.inc();
    ctx.metrics
        .failure(Reason::InternalError.category(), "transient");
    tracing::error!(
        namespace = ids.namespace,
        name = ids.name,
        panic = %what,
        "a reconcile panicked; the failure stays with this resource and the others go on"
    );
    ctx.forget(ids.uid);
    let now = Timestamp::now();
    let message = format!(
        "the operator failed inside this resource's reconcile at {now} (a bug: please report it with the operator's log of that time); the existing Secrets are kept, other resources are not affected; retrying in {}s or when the resource changes",
        CONTAINED_RETRY.as_secs()
    );
    let meta = obj.meta();
    let mut status = obj
        .0
        .as_ref()
        .ok()
        .and_then(|sbc| sbc.status.clone())
        .unwrap_or_default();
    let ready = conditions::condition(
        conditions::READY,
        &State::failed(Reason::InternalError, message),
        meta.generation,
        &status.conditions,
        now,
    );
    status.conditions.retain(|c| c.type_ != conditions::READY);
    status.conditions.insert(0, ready);
    let api: Api<SmartBackendClient> = Api::namespaced(ctx.client.clone(), ids.namespace);
    if let Err(error) = patch_status(ctx, &api, ids.name, json!({ "status": status })).await {
        tracing::warn!(%error, namespace = ids.namespace, name = ids.name, "could not say InternalError on the resource");
    }
    Requeue::After(CONTAINED_RETRY)
}

/// Where the object is, for the reconcile proper.
#[derive(Clone, Copy)]
struct Ids<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

async fn reconcile_with(
    obj: &WatchedClient,
    ctx: &Context,
    ids: Ids<'_>,
    memory: &mut ClientMemory,
    started: Instant,
) -> Result<Requeue, Error> {
    let Ids {
        name,
        namespace,
        uid,
    } = ids;
    let meta = obj.meta();
    let version_of = |secret: &str| ctx.own_secret_version(namespace, secret);
    if let Some(wait) = wait::settled_wait(memory, meta, SystemTime::now(), version_of) {
        let action = Requeue::After(wait);
        ctx.metrics.reconciles_unchanged.inc();
        ctx.metrics.observe_reconcile(started.elapsed());
        return Ok(action);
    }
    let api: Api<SmartBackendClient> = Api::namespaced(ctx.client.clone(), namespace);
    let sbc = match &obj.0 {
        Ok(sbc) => sbc,
        Err(unreadable) => {
            let message = format!(
                "the resource cannot be read: {}; fix it with kubectl edit",
                unreadable.error
            );
            let status = json!({"status": {"conditions": [conditions::condition(
                conditions::READY, &State::failed(Reason::InvalidResource, message), meta.generation, &[], Timestamp::now())]}});
            patch_status(ctx, &api, name, status).await?;
            return Ok(Requeue::OnChange);
        }
    };
    let cached = sbc.status.clone().unwrap_or_default();
    let previous = memory.current_status(cached);
    let target = Target {
        name,
        namespace,
        uid,
        owner: crate::controller::model::target::owner_reference(name, uid),
        annotations: sbc.annotations().clone(),
        status_kid: previous.kid.as_deref(),
        handled_key_regeneration: previous.handled_key_regeneration.as_deref(),
    };
    let mut draft = Draft::new(&previous);
    let ended = match steps(ctx, sbc, &target, &previous, &mut draft, memory).await {
        Ok(ended) => ended,
        Err((slot, failure)) => {
            let failure = failure.with_grant_advice(ctx.settings.secret_grant.as_ref(), namespace);
            ctx.metrics
                .failure(failure.reason.category(), failure.reason.class().as_str());
            let timing = &ctx.settings.timing;
            let now = SystemTime::now();
            Ended::evaluated(draft.fail(slot, failure, &previous, timing, now, rand::random()))
        }
    };
    let (action, status, revisit) = match ended {
        Ended::Deferred(requeue) => (requeue, None, None),
        Ended::Evaluated { requeue, revisit } => {
            let status = draft.finish(&previous, sbc.metadata.generation, SystemTime::now());
            (requeue, Some(status), revisit)
        }
    };
    if let Some(status) = status.as_ref().filter(|s| **s != previous) {
        patch_status(ctx, &api, name, json!({"status": status})).await?;
        memory.wrote_status(status.clone());
    }
    let seen = memory.take_seen();
    let token_ok = draft.token.as_ref().is_some_and(|t| t.ok);
    let settled = status
        .filter(|_| token_ok)
        .and_then(|status| wait::settled(&status, revisit, &sbc.metadata, seen));
    memory.settle(settled);
    if !draft.events.is_empty() {
        let reference = sbc.object_ref(&());
        let recorder = ctx.recorder();
        for event in &draft.events {
            match recorder.publish(event, &reference).await {
                Ok(()) => ctx.metrics.write("event"),
                Err(error) => tracing::debug!(%error, "publishing an event failed"),
            }
        }
    }
    ctx.metrics.observe_reconcile(started.elapsed());
    Ok(action)
}

async fn patch_status(
    ctx: &Context,
    api: &Api<SmartBackendClient>,
    name: &str,
    body: serde_json::Value,
) -> Result<(), Error> {
    let mut patch = json!({"apiVersion": SmartBackendClient::api_version(&()), "kind": SmartBackendClient::kind(&())});
    if let (Some(p), Some(b)) = (patch.as_object_mut(), body.as_object()) {
        p.extend(b.clone());
    }
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    ctx.metrics.write("status");
    Ok(())
}

/// A failure and the condition it belongs to.
type StepFailure = (Slot, Failure);

fn at(slot: Slot) -> impl FnOnce(Failure) -> StepFailure {
    move |failure| (slot, failure)
}

/// The steps, in order. The first that fails ends the reconcile; its
/// failure becomes a condition and a retry time in one place
/// ([`Draft::fail`]).
async fn steps(
    ctx: &Context,
    sbc: &SmartBackendClient,
    target: &Target<'_>,
    previous: &SmartBackendClientStatus,
    draft: &mut Draft,
    memory: &mut ClientMemory,
) -> Result<Ended, StepFailure> {
    // After a failure, wait out the backoff even though our own status write
    // (or any other event) triggers a reconcile sooner. A spec change or a
    // new refresh request ends the wait.
    let backoff = wait::Backoff {
        generation: sbc.metadata.generation,
        now: SystemTime::now(),
        just_granted: ctx.secrets_just_granted(target.uid),
    };
    let backoff = wait::backoff_remaining(memory, target, previous, backoff);
    let spec = match decide::gate(sbc, target.name, backoff, ctx.settings.rules()) {
        Gate::BackingOff(wait) => return Ok(Ended::Deferred(Requeue::After(wait))),
        Gate::Invalid(failure) => return Err((Slot::Overall, failure)),
        Gate::Suspended(spec, state) => {
            draft.fields.token_secret_name = Some(spec.token_secret_name.clone());
            draft.set(Slot::Overall, state);
            return Ok(Ended::evaluated(Requeue::OnChange));
        }
        Gate::Go(spec) => spec,
    };
    draft.fields.token_secret_name = Some(spec.token_secret_name.clone());

    // The token Secret as this process last wrote or read it, when the watch
    // shows it unchanged since: then it is not read again.
    let (known_token, existing_token) = observe_token_secret(ctx, target, &spec, sbc, memory)
        .await
        .map_err(at(Slot::Token))?;
    decide::token_target(existing_token.as_ref(), &spec.token_secret_name, target.uid)
        .map_err(at(Slot::Token))?;

    let http = discover::http_client(ctx, target.namespace, &spec)
        .await
        .map_err(at(Slot::Discovered))?;
    let Some(discovered) = discover::discover(ctx, &http, &spec, target.namespace)
        .await
        .map_err(at(Slot::Discovered))?
    else {
        // The namespace has its share of requests in flight.
        return Ok(Ended::Deferred(
            crate::controller::fairness::servers::come_back_shortly(),
        ));
    };
    draft.set(Slot::Discovered, discovered.state.clone());
    let issuer = match &spec.metadata {
        crate::smart::MetadataSource::Issuer(url) => Some(url.as_str()),
        _ => discovered.config.as_ref().and_then(|c| c.issuer.as_deref()),
    };
    decide::audience(
        spec.audience.as_deref(),
        &discovered.token_endpoint,
        issuer,
        ctx.settings.allow_custom_audience,
    )
    .map_err(at(Slot::Overall))?;
    if let Some(event) = events::endpoint_moved(previous, &discovered.token_endpoint) {
        draft.events.push(event);
    }

    let found = key_and_token::Found {
        sbc,
        spec: &spec,
        previous,
        http: &http,
        discovered: &discovered,
        existing_token: existing_token.as_ref(),
        known_token: known_token.map(|k| k.stored),
    };
    key_and_token::key_and_token(ctx, target, found, draft, memory).await
}

/// The token Secret: as this process last wrote or read it, when the watch
/// shows it unchanged since (no request), else as the API server has it.
/// Either way its version is recorded in the client's memory.
async fn observe_token_secret(
    ctx: &Context,
    target: &Target<'_>,
    spec: &ValidSpec,
    sbc: &SmartBackendClient,
    memory: &mut ClientMemory,
) -> Result<(Option<KnownTokenSecret>, Option<Secret>), Failure> {
    if !spec.to_secret {
        // CSI only: no token Secret to read.
        return Ok((None, None));
    }
    let name = &spec.token_secret_name;
    let generation = sbc.metadata.generation;
    if let Some(known) = token::known(ctx, memory.recall(), target, name, generation) {
        memory.saw_own_secret(name, Some(known.version.clone()));
        return Ok((Some(known), None));
    }
    let existing = Api::<Secret>::namespaced(ctx.client.clone(), target.namespace)
        .get_opt(name)
        .await
        .map_err(|error| {
            Failure::api(
                Reason::TokenSecretUnavailable,
                "get",
                target.namespace,
                name,
                &error,
            )
        })?;
    if let Some(secret) = &existing {
        memory.saw_own_secret(name, secret.metadata.resource_version.clone());
    }
    Ok((None, existing))
}
