//! The trust and discovery steps: which HTTP client to use (the shared one,
//! or one that trusts the resource's CA bundle), then where the token
//! endpoint is and which algorithm a generated key should have.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use url::Url;

use crate::controller::Context;
use crate::controller::decide::conditions::State;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::validate::ValidSpec;
use crate::controller::watch::ca_bundles::MAX_CA_BUNDLE;
use crate::controller::watch::discovery_cache::Source;
use crate::smart::discovery::{AlgorithmChoice, AlgorithmSource, SmartConfiguration};
use crate::smart::{HttpClient, HttpPolicy, SigningAlgorithm};

pub(in crate::controller) struct Discovered {
    pub token_endpoint: Url,
    pub algorithm: SigningAlgorithm,
    pub config: Option<Arc<SmartConfiguration>>,
    /// The Discovered condition.
    pub state: State,
}

/// TLS clients kept for CA bundles at once (each holds its roots, at most
/// [`MAX_CA_BUNDLE`] of PEM): a few MiB at the most.
const MAX_CA_CLIENTS: usize = 64;

/// The HTTP client for this resource: the shared one, or one that also
/// trusts the CA bundle the spec names.
pub(in crate::controller) async fn http_client(
    ctx: &Context,
    namespace: &str,
    spec: &ValidSpec,
) -> Result<HttpClient, Failure> {
    let Some((secret_name, key)) = &spec.ca_bundle else {
        return Ok(ctx.http.clone());
    };
    // From the bundle's watch; read directly only until it has listed.
    let secret = match ctx.ca_bundle(namespace, secret_name, key) {
        Some(watched) => watched,
        None => Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(secret_name)
            .await
            .map_err(|e| {
                Failure::api(
                    Reason::CaBundleUnavailable,
                    "get",
                    namespace,
                    secret_name,
                    &e,
                )
            })?
            .map(Arc::new),
    };
    let secret = secret.ok_or_else(|| {
            Failure::new(
                Reason::CaBundleNotFound,
                format!("Secret {secret_name} (spec.tls.caBundleSecretRef) does not exist in namespace {namespace}: create it with the CA certificates (PEM) under the key {key:?}"),
            )
        })?;
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .ok_or_else(|| {
            Failure::new(
                Reason::CaBundleInvalid,
                format!("Secret {secret_name} has no key {key:?} (spec.tls.caBundleSecretRef.key)"),
            )
        })?;
    let size = pem.0.len();
    if size == 0 || size > MAX_CA_BUNDLE {
        return Err(Failure::new(
            Reason::CaBundleInvalid,
            format!(
                "Secret {secret_name} key {key:?} (spec.tls.caBundleSecretRef) is empty or larger than {} KiB: put only the PEM CA certificates the server needs under that key",
                MAX_CA_BUNDLE / 1024
            ),
        ));
    }
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
        Failure::new(
            Reason::CaBundleInvalid,
            format!("Secret {secret_name} key {key:?}: {e}"),
        )
    })?;
    let mut clients = ctx.http_with_ca.lock().unwrap_or_else(|e| e.into_inner());
    if clients.len() >= MAX_CA_CLIENTS {
        // Rebuilt when next needed: a few milliseconds, against memory
        // that tenants could otherwise grow without end.
        clients.clear();
    }
    clients.insert(cache_key, client.clone());
    Ok(client)
}

/// Finds the token endpoint and the algorithm for a generated key; `None`
/// when a fetch was needed but the namespace's request slots were all taken
/// (come back shortly).
pub(in crate::controller) async fn discover(
    ctx: &Context,
    http: &HttpClient,
    spec: &ValidSpec,
    namespace: &str,
) -> Result<Option<Discovered>, Failure> {
    // Both set: nothing to discover.
    if let (Some(endpoint), Some(algorithm)) = (&spec.token_endpoint, spec.algorithm) {
        return Ok(Some(Discovered {
            token_endpoint: endpoint.clone(),
            algorithm,
            config: None,
            state: State::ok(
                Reason::Configured,
                "spec.tokenEndpoint and spec.signing.algorithm are set; discovery is skipped",
            ),
        }));
    }
    // A fetch holds one of the namespace's request slots, like a token
    // request: one tenant's hanging metadata URLs cannot hold every worker.
    let admit = || ctx.servers.admit_namespace(namespace);
    let Some(found) = ctx
        .discovery
        .get(http, &spec.metadata, admit)
        .await
        .transpose()
    else {
        return Ok(None);
    };
    // Only a fetch changes what the cache holds (and the prune loop).
    if let Ok((_, Source::Fresh)) = &found {
        ctx.metrics
            .discovery_cache_entries
            .set(ctx.discovery.len() as i64);
    }
    let discovered = match found {
        Ok((config, source)) => {
            let choice = config.choose_algorithm(spec.algorithm, None).map_err(|error| {
                Failure::new(
                    Reason::NoSupportedAlgorithm,
                    format!(
                        "{error}; if the server does accept RS384 or ES384, set spec.signing.algorithm"
                    ),
                )
            })?;
            let token_endpoint = spec
                .token_endpoint
                .clone()
                .unwrap_or_else(|| config.token_endpoint.clone());
            let mut message = discovered_message(spec, &config, &token_endpoint, choice, &source);
            // The skew seen when the document was fetched: said for as long
            // as the document is used, measured once.
            if let Some(skew) = config.clock_skew {
                if let Source::Fresh = source {
                    ctx.metrics.clock_skew_seconds.set(skew as f64);
                }
                if skew.unsigned_abs() > ctx.settings.clocks.skew_warning.as_secs() {
                    let server = spec.metadata.url().authority();
                    message = format!(
                        "{}; {message}",
                        crate::controller::decide::clock::note(skew, server)
                    );
                }
            }
            Ok(Discovered {
                token_endpoint,
                algorithm: choice.algorithm,
                config: Some(config),
                state: State::ok(Reason::Discovered, message),
            })
        }
        Err(error) => match &spec.token_endpoint {
            // The endpoint is configured; metadata was only wanted for the
            // algorithm of a generated key (a referenced key's own type
            // decides for it).
            Some(endpoint) => {
                let algorithm = spec.algorithm.unwrap_or(SigningAlgorithm::RS384);
                Ok(Discovered {
                    token_endpoint: endpoint.clone(),
                    algorithm,
                    config: None,
                    state: State::ok(
                        Reason::Configured,
                        format!(
                            "spec.tokenEndpoint is set; discovery failed ({error}), so a generated key is {algorithm} (set spec.signing.algorithm to choose)"
                        ),
                    ),
                })
            }
            None => Err(
                match error
                    .http_error()
                    .and_then(crate::controller::decide::reason::for_tls)
                {
                    Some((reason, advice)) => Failure::new(reason, format!("{error}; {advice}")),
                    None if error.is_transient() => {
                        Failure::new(Reason::DiscoveryUnavailable, error.to_string())
                    }
                    None => Failure::new(Reason::DiscoveryFailed, error.to_string()),
                },
            ),
        },
    };
    discovered.map(Some)
}

fn discovered_message(
    spec: &ValidSpec,
    config: &SmartConfiguration,
    token_endpoint: &Url,
    choice: AlgorithmChoice,
    source: &Source,
) -> String {
    let how = match choice.source {
        AlgorithmSource::Explicit => "set in spec.signing.algorithm",
        AlgorithmSource::ServerMetadata => "the server's first supported choice",
        AlgorithmSource::KeyType | AlgorithmSource::DefaultWithoutServerList => {
            "the server lists no algorithms: a referenced key's own type decides, a generated key uses this default"
        }
    };
    let mut message = format!(
        "token endpoint {token_endpoint} (from {}); {} ({how})",
        spec.metadata.describe(),
        choice.algorithm
    );
    let scopes: Vec<String> = spec.scope.split(' ').map(str::to_string).collect();
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
    message
}
