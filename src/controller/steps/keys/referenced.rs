//! A key the user provides: read from the referenced Secret at each
//! refresh, checked against the server's algorithms, never written.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::controller::Context;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::model::memory::{KeyMemo, Recall};
use crate::controller::model::target::Target;
use crate::controller::steps::keys::{KeyRequest, ResolvedKey, api_failure, bind, failure};
use crate::crd::SIGNING_KEY_LABEL;
use crate::smart::{KeyError, PrivateKey};

pub(super) async fn referenced(
    ctx: &Context,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    secret_name: &str,
    key_name: &str,
    recall: Recall<'_>,
) -> Result<ResolvedKey, Failure> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), target.namespace);
    let secret = api
        .get_opt(secret_name)
        .await
        .map_err(|e| api_failure("get", target, secret_name, e))?
        .ok_or_else(|| {
            failure(Reason::KeySecretNotFound,
                format!(
                    "Secret {secret_name} (spec.signing.keySecretRef.name) does not exist in namespace {}: create it with the private key under the key {key_name:?}",
                    target.namespace
                ),
            )
        })?;
    let opted_in = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SIGNING_KEY_LABEL))
        .is_some_and(|v| v == "true");
    if !opted_in {
        return Err(failure(
            Reason::KeySecretNotOptedIn,
            format!(
                "Secret {secret_name} does not carry the label {SIGNING_KEY_LABEL}=true, so the operator does not sign with it: whoever owns the key labels it (kubectl -n {} label secret {secret_name} {SIGNING_KEY_LABEL}=true)",
                target.namespace
            ),
        ));
    }
    let data = secret.data.unwrap_or_default();
    let Some(bytes) = data.get(key_name) else {
        let present: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(failure(
            Reason::KeyInvalid,
            format!(
                "Secret {secret_name} has no key {key_name:?} (spec.signing.keySecretRef.key); it has: {}",
                if present.is_empty() {
                    "nothing".to_string()
                } else {
                    present.join(", ")
                }
            ),
        ));
    };
    let whose = format!("the key in Secret {secret_name} (key {key_name:?})");
    let key = PrivateKey::parse(&bytes.0).map_err(|e: KeyError| {
        failure(Reason::KeyInvalid, format!("{whose} cannot be used: {e}"))
    })?;
    let algorithm = request
        .explicit_algorithm
        .unwrap_or_else(|| key.algorithm());
    if request.explicit_algorithm.is_none()
        && let Some(offered) = request.server_algorithms
        && !offered.iter().any(|a| a == algorithm.as_str())
    {
        return Err(failure(
            Reason::KeyAlgorithmNotAccepted,
            format!(
                "{whose} is a {} key for {algorithm}, but the server accepts only {}: provide a key the server accepts",
                key.describe(),
                offered.join(", ")
            ),
        ));
    }
    let mut learned = KeyMemo::default();
    let (signing, _) = bind(
        recall,
        &mut learned,
        &bytes.0,
        key,
        Some(algorithm),
        request.kid,
        &whose,
    )?;
    Ok(ResolvedKey::new(signing, secret_name, learned))
}
