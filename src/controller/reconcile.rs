//! One reconcile of one SmartBackendClient, as named steps. Each step
//! records its condition in a [`Draft`]; the status is patched once at the
//! end, and only when it changed.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use url::Url;

use super::conditions::{self, State};
use super::discovery_cache::Source;
use super::keys::{self, KeyRequest};
use super::validate::{self, ValidSpec};
use super::{Context, Error, Settled, Target, WatchedClient, secrets, token};
use crate::crd::{FIELD_MANAGER, SmartBackendClient, SmartBackendClientStatus};
use crate::smart::discovery::{AlgorithmSource, SmartConfiguration};
use crate::smart::{HttpClient, HttpPolicy, SigningAlgorithm};

/// The status being built during a reconcile.
pub(super) struct Draft {
    pub discovered: Option<State>,
    pub key: Option<State>,
    pub token: Option<State>,
    /// A failure that is about the resource as a whole (bad spec, suspend).
    pub overall: Option<State>,
    pub fields: SmartBackendClientStatus,
    pub events: Vec<Event>,
    /// Nothing was evaluated (waiting out a backoff): leave the status as is.
    pub keep_status: bool,
    /// The Secrets the operator manages for the client, with the resource
    /// versions this reconcile read and wrote.
    pub own_secrets: Vec<(String, Vec<String>)>,
}

impl Draft {
    /// Notes a version at which one of the operator's own Secrets for this
    /// client was read or written.
    pub fn saw_own_secret(&mut self, name: &str, version: Option<String>) {
        let Some(version) = version else { return };
        match self.own_secrets.iter_mut().find(|(n, _)| n == name) {
            Some((_, versions)) => versions.push(version),
            None => self.own_secrets.push((name.to_string(), vec![version])),
        }
    }
}

pub async fn reconcile(obj: Arc<WatchedClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let meta = obj.meta();
    let name = meta.name.clone().ok_or(Error::MissingObjectKey("name"))?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let uid = meta.uid.clone().ok_or(Error::MissingObjectKey("uid"))?;
    if meta.deletion_timestamp.is_some() {
        ctx.jwks.remove(&namespace, &name);
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    if let Some(action) = settled_action(&ctx, &uid, &namespace, meta) {
        ctx.metrics.reconciles_unchanged.inc();
        ctx.metrics.observe_reconcile(started.elapsed());
        return Ok(action);
    }
    let api: Api<SmartBackendClient> = Api::namespaced(ctx.client.clone(), &namespace);
    let sbc = match &obj.0 {
        Ok(sbc) => sbc,
        Err(unreadable) => {
            let message = format!(
                "the resource cannot be read: {}; fix it with kubectl edit",
                unreadable.error
            );
            let status = json!({"status": {"conditions": [conditions::condition(
                conditions::READY, &State::failed("InvalidResource", message), meta.generation, &[], Timestamp::now())]}});
            patch_status(&ctx, &api, &name, status).await?;
            return Ok(Action::await_change());
        }
    };
    let cached = sbc.status.clone().unwrap_or_default();
    let previous = ctx.remember(&uid, |m| m.current_status(cached));
    let target = Target {
        name: &name,
        namespace: &namespace,
        uid: &uid,
        owner: owner_reference(&name, &uid),
        annotations: sbc.annotations().clone(),
        status_kid: previous.kid.as_deref(),
        handled_key_regeneration: previous.handled_key_regeneration.as_deref(),
    };
    let mut draft = Draft {
        discovered: None,
        key: None,
        token: None,
        overall: None,
        fields: previous.clone(),
        events: Vec::new(),
        keep_status: false,
        own_secrets: Vec::new(),
    };
    let action = steps(&ctx, sbc, &target, &previous, &mut draft).await;
    let status = if draft.keep_status {
        previous.clone()
    } else {
        finish(&mut draft, &previous, sbc.metadata.generation)
    };
    if status != previous {
        patch_status(&ctx, &api, &name, json!({"status": status})).await?;
        ctx.remember(&uid, |m| {
            m.written_status = Some((std::time::Instant::now(), status.clone()))
        });
    }
    let settled = settled(&status, &draft, &sbc.metadata);
    ctx.remember(&uid, |m| m.settled = settled);
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

fn owner_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: SmartBackendClient::api_version(&()).into_owned(),
        kind: SmartBackendClient::kind(&()).into_owned(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
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

/// The outcome worth remembering: a good token, nothing pending, and the
/// next refresh known.
fn settled(
    status: &SmartBackendClientStatus,
    draft: &Draft,
    reconciled: &ObjectMeta,
) -> Option<Settled> {
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::READY && c.status == "True");
    if !ready || draft.keep_status || !draft.token.as_ref().is_some_and(|t| t.ok) {
        return None;
    }
    Some(Settled {
        generation: reconciled.generation,
        requests: Settled::requests(reconciled),
        own_secrets: draft.own_secrets.clone(),
        until: secrets::parse_rfc3339(status.next_refresh_time.as_deref()?)?,
    })
}

/// When nothing the operator reads changed since the last settled outcome
/// (see [`Settled`]) and the next refresh is still ahead: the wait until it,
/// without an API request. Anything else is a full reconcile.
fn settled_action(ctx: &Context, uid: &str, namespace: &str, meta: &ObjectMeta) -> Option<Action> {
    let settled = ctx.remember(uid, |m| m.settled.take())?;
    let unchanged = settled.generation == meta.generation
        && settled.requests == Settled::requests(meta)
        && settled.own_secrets.iter().all(|(name, versions)| {
            ctx.own_secret_version(namespace, name)
                .is_some_and(|v| versions.contains(&v))
        });
    let wait = settled
        .until
        .duration_since(std::time::SystemTime::now())
        .ok()
        .filter(|w| !w.is_zero())?;
    if !unchanged {
        return None;
    }
    ctx.remember(uid, |m| m.settled = Some(settled));
    Some(Action::requeue(wait))
}

const TOKEN_PENDING: &str = "TokenPending";

/// Between generating a key and the first token request that uses it.
const KEY_PUBLICATION_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// A permanent problem: wait for a change to the resource, with a slow
/// safety retry in case the world changed instead (a Secret created, a
/// registration fixed).
fn wait_for_change(ctx: &Context) -> Action {
    Action::requeue(ctx.settings.timing.permanent_retry)
}

async fn steps(
    ctx: &Context,
    sbc: &SmartBackendClient,
    target: &Target<'_>,
    previous: &SmartBackendClientStatus,
    draft: &mut Draft,
) -> Action {
    let spec = match validate::validate(sbc, target.name, ctx.settings.http.allow_http) {
        Ok(spec) => spec,
        Err(invalid) => {
            draft.overall = Some(State::failed(
                "InvalidSpec",
                format!("{invalid}; the operator retries when the resource changes"),
            ));
            return wait_for_change(ctx);
        }
    };
    draft.fields.token_secret_name = Some(spec.token_secret_name.clone());
    if sbc.spec.suspend {
        draft.overall = Some(State::failed(
            "Suspended",
            "spec.suspend is true: nothing is refreshed, existing Secrets are kept",
        ));
        return Action::await_change();
    }

    // After a failure, wait out the backoff even though our own status write
    // (or any other event) triggers a reconcile sooner. A spec change or a
    // new refresh request ends the wait.
    if let Some(wait) = backoff_remaining(ctx, sbc, target, previous) {
        draft.keep_status = true;
        return Action::requeue(wait);
    }

    // The token Secret as this process last wrote or read it, when the watch
    // shows it unchanged since: then it is not read again.
    let known_token = token::known(
        ctx,
        target,
        &spec.token_secret_name,
        sbc.metadata.generation,
    );
    if let Some(known) = &known_token {
        draft.saw_own_secret(&spec.token_secret_name, Some(known.version.clone()));
    }
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), target.namespace);
    let read = match &known_token {
        Some(_) => Ok(None),
        None => secrets_api.get_opt(&spec.token_secret_name).await,
    };
    let existing_token = match read {
        Ok(secret) => secret,
        Err(error) => {
            draft.token = Some(State::failed(
                "TokenSecretUnavailable",
                format!("reading Secret {} failed: {error}", spec.token_secret_name),
            ));
            return Action::requeue(ctx.settings.timing.backoff_base);
        }
    };
    if let Some(secret) = &existing_token {
        draft.saw_own_secret(
            &spec.token_secret_name,
            secret.metadata.resource_version.clone(),
        );
    }
    if let Some(secret) = &existing_token
        && !secrets::is_owned_by(secret, target.uid)
    {
        draft.token = Some(State::failed(
            "TargetSecretConflict",
            format!(
                "Secret {} exists and was not written by the operator for this resource; it is left untouched: choose another spec.token.secretName, or delete that Secret",
                spec.token_secret_name
            ),
        ));
        return wait_for_change(ctx);
    }

    let http = match http_client(ctx, target.namespace, &spec).await {
        Ok(http) => http,
        Err(state) => {
            draft.discovered = Some(state);
            return wait_for_change(ctx);
        }
    };

    let Some(discovered) = discover(ctx, &http, &spec, draft).await else {
        return match &draft.discovered {
            Some(state) if state.reason == "DiscoveryUnavailable" => {
                let failures = previous.consecutive_failures + 1;
                let delay =
                    super::schedule::backoff(failures, None, &ctx.settings.timing, rand::random());
                draft.fields.consecutive_failures = failures;
                draft.fields.next_refresh_time =
                    Some(secrets::rfc3339_ceil(std::time::SystemTime::now() + delay));
                Action::requeue(delay)
            }
            _ => wait_for_change(ctx),
        };
    };

    let key_request = KeyRequest {
        source: &spec.key,
        algorithm: discovered.algorithm,
        explicit_algorithm: spec.algorithm,
        server_algorithms: discovered.config.as_ref().and_then(|c| {
            c.token_endpoint_auth_signing_alg_values_supported
                .as_deref()
        }),
        kid: spec.kid.as_deref(),
    };
    let key = match keys::resolve(ctx, target, &key_request).await {
        Ok(key) => key,
        Err(failure) => {
            let transient = failure.transient;
            draft.key = Some(failure.state);
            return if transient {
                Action::requeue(ctx.settings.timing.backoff_base)
            } else {
                wait_for_change(ctx)
            };
        }
    };
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
    for version in &key.own_secret_versions {
        draft.saw_own_secret(&key.secret_name, Some(version.clone()));
    }
    if key.regeneration_handled.is_some() {
        draft.fields.handled_key_regeneration = key.regeneration_handled.clone();
    }
    let jwks = key.signing.public_jwks().to_json();
    ctx.jwks.publish(target.namespace, target.name, &jwks);
    draft.key = Some(State::ok(
        "KeyReady",
        format!(
            "{} key, kid {}, in Secret {}",
            key.signing.algorithm(),
            key.signing.kid(),
            key.secret_name
        ),
    ));
    draft.fields.algorithm = Some(key.signing.algorithm());
    draft.fields.kid = Some(key.signing.kid().to_string());
    draft.fields.key_secret_name = Some(key.secret_name.clone());
    draft.fields.public_jwks = Some(jwks);
    draft.fields.token_endpoint = Some(discovered.token_endpoint.to_string());
    if key.generated {
        // Publish first, use after: the status (and so every replica's JWKS
        // endpoint) carries the new key before any server is asked to
        // verify a signature made with it.
        return Action::requeue(KEY_PUBLICATION_DELAY);
    }

    token::refresh(
        ctx,
        &token::Inputs {
            target,
            spec: &spec,
            http: &http,
            token_endpoint: &discovered.token_endpoint,
            key: &key.signing,
            existing: existing_token.as_ref(),
            known: known_token.map(|k| k.stored),
            generation: sbc.metadata.generation,
            previous,
        },
        draft,
    )
    .await
}

/// Time left before the retry that the last failure scheduled, if that
/// failure is still current (same generation, no new refresh request).
fn backoff_remaining(
    ctx: &Context,
    sbc: &SmartBackendClient,
    target: &Target<'_>,
    previous: &SmartBackendClientStatus,
) -> Option<std::time::Duration> {
    if previous.consecutive_failures == 0 || previous.observed_generation != sbc.metadata.generation
    {
        return None;
    }
    if token::pending_refresh_request(ctx, target, previous).is_some() {
        return None;
    }
    let retry_at = secrets::parse_rfc3339(previous.next_refresh_time.as_deref()?)?;
    retry_at
        .duration_since(std::time::SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

/// The HTTP client for this resource: the shared one, or one that also
/// trusts the CA bundle the spec names.
async fn http_client(
    ctx: &Context,
    namespace: &str,
    spec: &ValidSpec,
) -> Result<HttpClient, State> {
    let Some((secret_name, key)) = &spec.ca_bundle else {
        return Ok(ctx.http.clone());
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(secret_name)
        .await
        .map_err(|e| State::failed("CaBundleUnavailable", format!("reading Secret {secret_name} failed: {e}")))?
        .ok_or_else(|| {
            State::failed(
                "CaBundleNotFound",
                format!("Secret {secret_name} (spec.tls.caBundleSecretRef) does not exist in namespace {namespace}"),
            )
        })?;
    let pem = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .ok_or_else(|| {
            State::failed(
                "CaBundleInvalid",
                format!("Secret {secret_name} has no key {key:?}"),
            )
        })?;
    let cache_key = crate::smart::secret::fingerprint(&pem.0);
    if let Some(client) = ctx
        .http_with_ca
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        return Ok(client.clone());
    }
    let client = HttpClient::new(HttpPolicy {
        extra_roots_pem: Some(pem.0),
        ..ctx.settings.http.clone()
    })
    .map_err(|e| {
        State::failed(
            "CaBundleInvalid",
            format!("Secret {secret_name} key {key:?}: {e}"),
        )
    })?;
    ctx.http_with_ca
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, client.clone());
    Ok(client)
}

pub(super) struct Discovered {
    pub token_endpoint: Url,
    pub algorithm: SigningAlgorithm,
    pub config: Option<Arc<SmartConfiguration>>,
}

/// Finds the token endpoint and the algorithm for a generated key.
async fn discover(
    ctx: &Context,
    http: &HttpClient,
    spec: &ValidSpec,
    draft: &mut Draft,
) -> Option<Discovered> {
    // Both set: nothing to discover.
    if let (Some(endpoint), Some(algorithm)) = (&spec.token_endpoint, spec.algorithm) {
        draft.discovered = Some(State::ok(
            "Configured",
            "spec.tokenEndpoint and spec.signing.algorithm are set; discovery is skipped",
        ));
        return Some(Discovered {
            token_endpoint: endpoint.clone(),
            algorithm,
            config: None,
        });
    }
    let scopes: Vec<String> = spec.scope.split(' ').map(str::to_string).collect();
    match ctx.discovery.get(http, &spec.fhir_base_url).await {
        Ok((config, source)) => {
            let choice = match config.choose_algorithm(spec.algorithm) {
                Ok(choice) => choice,
                Err(error) => {
                    draft.discovered = Some(State::failed(
                        "NoSupportedAlgorithm",
                        format!(
                            "{error}; if the server does accept RS384 or ES384, set spec.signing.algorithm"
                        ),
                    ));
                    return None;
                }
            };
            let token_endpoint = spec
                .token_endpoint
                .clone()
                .unwrap_or_else(|| config.token_endpoint.clone());
            let how = match choice.source {
                AlgorithmSource::Explicit => "set in spec.signing.algorithm",
                AlgorithmSource::ServerMetadata => "the server's first supported choice",
                AlgorithmSource::DefaultWithoutServerList => {
                    "the default: the server lists no algorithms"
                }
            };
            let mut message = format!(
                "token endpoint {token_endpoint}; {} ({how})",
                choice.algorithm
            );
            let warnings = config.warnings(&scopes, Some(choice));
            if !warnings.is_empty() {
                let list: Vec<String> = warnings.iter().map(ToString::to_string).collect();
                message.push_str(&format!("; warnings: {}", list.join("; ")));
            }
            if let Source::StaleAfterError(why) = source {
                message.push_str(&format!(
                    "; using the cached configuration because re-discovery failed: {why}"
                ));
            }
            draft.discovered = Some(State::ok("Discovered", message));
            Some(Discovered {
                token_endpoint,
                algorithm: choice.algorithm,
                config: Some(config),
            })
        }
        Err(error) if spec.token_endpoint.is_some() => {
            // The endpoint is configured; metadata was only wanted for the
            // algorithm. RS384 is the one every SMART server must accept.
            let algorithm = spec.algorithm.unwrap_or(SigningAlgorithm::RS384);
            draft.discovered = Some(State::ok(
                "Configured",
                format!(
                    "spec.tokenEndpoint is set; discovery failed ({error}), so {algorithm} is used"
                ),
            ));
            spec.token_endpoint.clone().map(|endpoint| Discovered {
                token_endpoint: endpoint,
                algorithm,
                config: None,
            })
        }
        Err(error) => {
            let reason = if error.is_transient() {
                "DiscoveryUnavailable"
            } else {
                "DiscoveryFailed"
            };
            draft.discovered = Some(State::failed(reason, error.to_string()));
            None
        }
    }
}

/// Composes Ready from the other conditions and fills in the status.
fn finish(
    draft: &mut Draft,
    previous: &SmartBackendClientStatus,
    generation: Option<i64>,
) -> SmartBackendClientStatus {
    let now = Timestamp::now();
    let mut status = draft.fields.clone();
    status.observed_generation = generation;
    let mut list = Vec::new();
    for (type_, state) in [
        (conditions::DISCOVERED, &draft.discovered),
        (conditions::KEY_READY, &draft.key),
        (conditions::TOKEN_READY, &draft.token),
    ] {
        match state {
            Some(state) => list.push(conditions::condition(
                type_,
                state,
                generation,
                &previous.conditions,
                now,
            )),
            None => {
                if let Some(old) = previous.conditions.iter().find(|c| c.type_ == type_) {
                    list.push(old.clone());
                }
            }
        }
    }
    // Ready is True only when every other condition is: evaluated now, or
    // carried over from the last reconcile.
    let effective = |state: &Option<State>, type_: &str| -> Option<State> {
        state.clone().or_else(|| {
            previous
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| State {
                    ok: c.status == "True",
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
        })
    };
    let parts = [
        effective(&draft.discovered, conditions::DISCOVERED),
        effective(&draft.key, conditions::KEY_READY),
        effective(&draft.token, conditions::TOKEN_READY),
    ];
    let first_failure = draft
        .overall
        .clone()
        .or_else(|| parts.iter().flatten().find(|s| !s.ok).cloned());
    let ready = match first_failure {
        Some(mut failed) => {
            if let (Some(expires), Some(secret)) =
                (&status.token_expires_at, &status.token_secret_name)
                && secrets::parse_rfc3339(expires).is_some_and(|t| t > std::time::SystemTime::now())
                && !failed.message.contains("stays valid")
            {
                failed.message.push_str(&format!(
                    "; the token in Secret {secret} stays valid until {expires}"
                ));
            }
            failed
        }
        None => match &parts[2] {
            Some(token) => token.clone(),
            None => State::failed(TOKEN_PENDING, "the first token is requested in a moment"),
        },
    };
    let previous_ready = previous
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY);
    // TokenPending is the normal moment between a new key and its first
    // token, not worth a Warning.
    if !ready.ok
        && ready.reason != TOKEN_PENDING
        && previous_ready.is_none_or(|c| c.reason != ready.reason)
    {
        draft.events.push(Event {
            type_: EventType::Warning,
            reason: ready.reason.clone(),
            note: Some(ready.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    list.insert(
        0,
        conditions::condition(
            conditions::READY,
            &ready,
            generation,
            &previous.conditions,
            now,
        ),
    );
    status.conditions = list;
    status
}
