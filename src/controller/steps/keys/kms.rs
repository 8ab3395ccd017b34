//! A key that stays in AWS KMS: the keys the namespace's aliases name are
//! read from KMS at each refresh (their public keys); which signs and which
//! is published ahead of it is chosen by
//! [`decide::key_manager::choose_named`](crate::controller::decide::key_manager::choose_named)
//! from the last status. Nothing is written, and no Secret holds the key.

use super::remote::{accepted, signer_failure};
use crate::controller::Context;
use crate::controller::decide::key_manager::{Named, choose_named};
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::model::target::Target;
use crate::controller::steps::keys::{KeyRequest, ResolvedKey, failure};
use crate::smart::SigningKey;
use crate::smart::signer::RemoteKey;

pub(super) async fn kms_key(
    ctx: &Context,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    key: &str,
    next: Option<&str>,
) -> Result<ResolvedKey, Failure> {
    let Some(session) = &ctx.kms else {
        return Err(failure(
            Reason::InvalidSpec,
            "spec.signing.awsKms: this operator is not configured for AWS KMS (aws.kms.enabled)"
                .into(),
        ));
    };
    let kms = session.kms().await;
    let alias = |name: &str| session.settings().alias(target.namespace, name);
    let (key_alias, next_alias) = (alias(key), next.map(alias));
    // A key's public half, usable for the spec's and the server's
    // algorithms; the key and the next one are read at once.
    let read = |alias: String, whose: String| async move {
        let key = kms.key(&alias, request.explicit_algorithm, None).await;
        let key = key.map_err(|e| signer_failure(ctx, &whose, e))?;
        accepted(request, &whose, key.algorithm(), "a KMS key of a spec")?;
        Ok::<_, Failure>(key)
    };
    let whose = format!("the AWS KMS key {key_alias}");
    let next_read = async {
        match &next_alias {
            None => None,
            Some(alias) => {
                let whose = format!("the next AWS KMS key {alias}");
                Some(read(alias.clone(), whose).await)
            }
        }
    };
    let (current, next) = tokio::join!(read(key_alias.clone(), whose), next_read);
    let kid = |key: &Result<RemoteKey, Failure>| key.as_ref().ok().map(|k| k.kid().to_string());
    let key_kid = kid(&current);
    let next_kid = next.as_ref().and_then(kid);
    let choice = choose_named(
        key_kid.as_deref(),
        next_kid.as_deref(),
        &request.previous.keys,
    );
    let (active, published, name) = match (choice, current, next) {
        (Some((Named::Next, _)), _, Some(Ok(next))) => (next, None, next_alias.unwrap_or_default()),
        (_, Err(e), _) => return Err(e),
        (Some((_, Some(Named::Next))), Ok(current), next) => (current, next, key_alias),
        // A next key that cannot be used is reported; the key signs on.
        (_, Ok(current), Some(Err(failure))) => (current, Some(Err(failure)), key_alias),
        // No next key, or both names lead to the same key.
        (_, Ok(current), _) => (current, None, key_alias),
    };
    let mut resolved = ResolvedKey::new(SigningKey::remote(active), "", Default::default());
    resolved.next = published.map(|n| n.map(SigningKey::remote));
    resolved.key_manager = Some(format!("AWS KMS key {name}"));
    Ok(resolved)
}
