//! A key that stays in Vault / OpenBao Transit: its versions and public
//! keys are read from the key manager at each refresh; the version that
//! signs and the one published ahead of it are chosen by
//! [`decide::key_manager`](crate::controller::decide::key_manager) from the last
//! status. Nothing is written, and no Secret holds the key.

use std::collections::BTreeMap;

use super::remote::{accepted, signer_failure};
use crate::controller::Context;
use crate::controller::decide::key_manager;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::steps::keys::{KeyRequest, ResolvedKey, failure};
use crate::smart::SigningKey;
use crate::smart::keys::read_public_key;

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
    let algorithm = transit
        .algorithm_for(&info, request.explicit_algorithm)
        .map_err(|e| signer_failure(ctx, &whose, e))?;
    accepted(request, &whose, algorithm, "a Transit key of a type")?;
    // Each version's public key is read once: its kid for the choice, and
    // the key itself for the versions that sign or are published.
    let mut publics = BTreeMap::new();
    for (version, pem) in &info.public_keys {
        let (_, public) = read_public_key(pem.as_bytes()).map_err(|e| {
            failure(
                Reason::KeyManagerKeyUnusable,
                format!("{whose} version {version} has a public key that cannot be used: {e}"),
            )
        })?;
        let kid = public.thumbprint();
        publics.insert(*version, (public, kid));
    }
    let versions: Vec<(u64, String)> = publics
        .iter()
        .map(|(v, (_, kid))| (*v, kid.clone()))
        .collect();
    let choice = key_manager::choose(&versions, info.latest_version, &request.previous.keys);
    // choose() names only versions that have a public key.
    let version = |v: u64| {
        let (public, kid) = publics[&v].clone();
        SigningKey::remote(transit.signing(v, algorithm, public, kid))
    };
    let mut resolved = ResolvedKey::new(version(choice.active), "", Default::default());
    resolved.next = choice.next.map(|v| Ok(version(v)));
    resolved.key_manager = Some(format!("Transit key {key}"));
    Ok(resolved)
}
