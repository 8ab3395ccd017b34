//! A key that stays in Vault / OpenBao Transit: its versions and public
//! keys are read from the key manager at each refresh; the version that
//! signs and the one published ahead of it are chosen by
//! [`decide::transit`](crate::controller::decide::transit) from the last
//! status. Nothing is written, and no Secret holds the key.

use crate::controller::Context;
use crate::controller::decide::reason::{self, Failure, Reason};
use crate::controller::decide::transit;
use crate::controller::steps::keys::{KeyRequest, ResolvedKey, failure};
use crate::smart::keys::read_public_key;
use crate::smart::signer::transit::wire::{KeyInfo, algorithm_of};
use crate::smart::{SignerError, SigningKey};

/// A key manager's failure as the Key condition says it. A refused login
/// or permission is forgotten, so the next try logs in again.
pub(in crate::controller) fn signer_failure(ctx: &Context, whose: &str, e: SignerError) -> Failure {
    if matches!(e, SignerError::PermissionDenied { .. })
        && let Some(vault) = &ctx.vault
    {
        vault.forget();
    }
    failure(reason::for_signer_error(&e), format!("{whose}: {e}"))
}

pub(super) async fn transit_key(
    ctx: &Context,
    request: &KeyRequest<'_>,
    key: &str,
) -> Result<ResolvedKey, Failure> {
    let whose = format!("the Transit key {key}");
    let Some(vault) = &ctx.vault else {
        return Err(failure(
            Reason::InvalidSpec,
            "spec.signing.vaultTransit: this operator is not configured for Vault or OpenBao (vault.address)".into(),
        ));
    };
    let session = vault.transit(key).await;
    let transit = session.map_err(|e| signer_failure(ctx, &whose, e))?;
    let info = transit
        .read_key()
        .await
        .map_err(|e| signer_failure(ctx, &whose, e))?;
    let algorithm = usable_algorithm(&info, request, &whose)?;
    let mut versions = Vec::with_capacity(info.public_keys.len());
    for (version, pem) in &info.public_keys {
        let (_, public) = read_public_key(pem.as_bytes()).map_err(|e| {
            failure(
                Reason::KeyManagerKeyUnusable,
                format!("{whose} version {version} has a public key that cannot be used: {e}"),
            )
        })?;
        versions.push((*version, public.thumbprint()));
    }
    let choice = transit::choose(&versions, info.latest_version, &request.previous.keys);
    let version = |v: u64| {
        transit
            .version_of(&info, Some(algorithm), Some(v), None)
            .map(SigningKey::transit)
            .map_err(|e| signer_failure(ctx, &whose, e))
    };
    let active = version(choice.active)?;
    let next = choice.next.map(version);
    let mut resolved = ResolvedKey::new(active, "", Default::default());
    resolved.next = next;
    resolved.transit = Some(key.to_string());
    Ok(resolved)
}

/// The algorithm the key's type signs with, checked against the spec and
/// the server's list.
fn usable_algorithm(
    info: &KeyInfo,
    request: &KeyRequest<'_>,
    whose: &str,
) -> Result<crate::smart::SigningAlgorithm, Failure> {
    let unusable = |problem: String| failure(Reason::KeyManagerKeyUnusable, problem);
    let Some(algorithm) = algorithm_of(&info.kind).filter(|_| info.supports_signing) else {
        return Err(unusable(format!(
            "{whose} is of type {}, which cannot sign ES384 or RS384: create a key of type ecdsa-p384 (ES384) or rsa-3072 (RS384)",
            info.kind
        )));
    };
    if let Some(wanted) = request.explicit_algorithm
        && wanted != algorithm
    {
        return Err(unusable(format!(
            "{whose} is of type {} and signs {algorithm}, but spec.signing.algorithm is {wanted}: remove the field or use a key of the other type",
            info.kind
        )));
    }
    if let Some(offered) = request.server_algorithms
        && !offered.iter().any(|a| a == algorithm.as_str())
    {
        return Err(failure(
            Reason::KeyAlgorithmNotAccepted,
            format!(
                "{whose} signs {algorithm}, but the server accepts only {}: use a Transit key of a type the server accepts",
                offered.join(", ")
            ),
        ));
    }
    Ok(algorithm)
}
