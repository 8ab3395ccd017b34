//! What the steps for keys in a key manager (Transit, KMS) share: a key
//! manager's failure as the Key condition says it, and the check that the
//! server accepts what the key signs.

use crate::controller::Context;
use crate::controller::decide::reason::{self, Failure, Reason};
use crate::controller::steps::keys::{KeyRequest, failure};
use crate::smart::{SignerError, SigningAlgorithm};

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

/// The server accepts what a key manager's key signs.
pub(super) fn accepted(
    request: &KeyRequest<'_>,
    whose: &str,
    algorithm: SigningAlgorithm,
    another: &str,
) -> Result<(), Failure> {
    match request.server_algorithms {
        Some(offered) if !offered.iter().any(|a| a == algorithm.as_str()) => Err(failure(
            Reason::KeyAlgorithmNotAccepted,
            format!(
                "{whose} signs {algorithm}, but the server accepts only {}: use {another} the server accepts",
                offered.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}
