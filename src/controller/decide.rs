//! The decisions, pure: functions of plain values (what was read, the
//! time, jitter), with no API client, no Context, no task and no network.
//! A test (`decide/tests.rs`, `the_pure_modules_do_no_io`) holds the rule.
//!
//! This file takes the reconcile's first decisions: whether to go on at all
//! (backoff, spec, suspend), whether the token Secret found under the
//! spec's name may be written, what to do when the generated key's Secret
//! is missing or was found, and whether the stored token is kept. Its
//! modules hold the rest beside their data: [`wait`] (nothing changed),
//! [`schedule`] (refresh time, backoff, Retry-After), [`rotation`] (each
//! rotation step), [`draft`] (a failure's condition and retry, Ready),
//! [`validate`] (the spec), [`reason`] (every condition reason),
//! [`key_ring`] and [`secret_data`] (what the operator's Secrets hold),
//! [`key_manager`] (which of a key manager's keys sign).

pub(crate) mod clock;
pub(crate) mod conditions;
pub(crate) mod draft;
pub(crate) mod events;
pub(crate) mod key_manager;
pub(crate) mod key_ring;
pub mod reason;
pub mod rotation;
pub mod schedule;
pub(crate) mod scopes;
pub mod secret_data;
pub mod validate;
pub(crate) mod wait;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;

use crate::controller::decide::conditions::State;
use crate::controller::decide::reason::{Failure, Reason};

use crate::controller::decide::validate::ValidSpec;
use crate::crd::{REGENERATE_KEY_ANNOTATION, SmartBackendClient};

/// Whether a reconcile goes on, before it reads anything.
#[derive(Debug)]
pub(in crate::controller) enum Gate {
    /// The last failure's retry time is ahead and nothing new asks for an
    /// earlier one: come back then, leaving the status as it is.
    BackingOff(Duration),
    /// The spec cannot be used; the failure says why.
    Invalid(Failure),
    /// `spec.suspend`: the condition to show, and nothing else is done
    /// (the Secrets are kept as they are).
    Suspended(Box<ValidSpec>, State),
    /// Go on with the valid spec.
    Go(Box<ValidSpec>),
}

/// A backoff still running ends the reconcile first (our own status
/// write must not cut it short); then the spec is checked; then suspend.
pub(in crate::controller) fn gate(
    sbc: &SmartBackendClient,
    name: &str,
    backoff: Option<Duration>,
    rules: validate::Rules,
) -> Gate {
    if let Some(wait) = backoff {
        return Gate::BackingOff(wait);
    }
    let spec = match validate::validate(sbc, name, rules) {
        Ok(spec) => Box::new(spec),
        Err(invalid) => {
            return Gate::Invalid(Failure::new(Reason::InvalidSpec, invalid.to_string()));
        }
    };
    if sbc.spec.suspend {
        let state = State::failed(
            Reason::Suspended,
            "spec.suspend is true: nothing is refreshed, existing Secrets are kept",
        );
        return Gate::Suspended(spec, state);
    }
    Gate::Go(spec)
}

/// Whether the token Secret found under the spec's name (if any) may be
/// written: only an Opaque Secret this resource's operator wrote. Anything
/// else is left untouched and reported.
pub(in crate::controller) fn token_target(
    existing: Option<&Secret>,
    name: &str,
    uid: &str,
) -> Result<(), Failure> {
    let Some(secret) = existing else {
        return Ok(());
    };
    if let Some(type_) = secret.type_.as_deref().filter(|t| *t != "Opaque") {
        return Err(Failure::new(
            Reason::TargetSecretConflict,
            format!(
                "Secret {name} has type {type_}, not Opaque; the operator writes only Opaque token Secrets and leaves it untouched: choose another spec.token.secretName, or delete that Secret"
            ),
        ));
    }
    if !secret_data::is_owned_by(secret, uid) {
        return Err(Failure::new(
            Reason::TargetSecretConflict,
            format!(
                "Secret {name} exists and was not written by the operator for this resource; it is left untouched: choose another spec.token.secretName, or delete that Secret"
            ),
        ));
    }
    Ok(())
}

/// The generated key's Secret is absent. Before its public key was ever
/// published a key is simply generated. Once published, the EHR knows only
/// that key: a new one is generated only when the user asks with a
/// regenerate-key value not yet handled. `Ok` carries the request value
/// this generation handles (if it answers one).
pub(in crate::controller) fn missing_key(
    secret_name: &str,
    published_kid: Option<&str>,
    requested: Option<&str>,
    handled: Option<&str>,
) -> Result<Option<String>, Failure> {
    let asked = requested.filter(|r| Some(*r) != handled);
    match (published_kid, asked) {
        (None, _) => Ok(asked.map(str::to_string)),
        (Some(_), Some(asked)) => Ok(Some(asked.to_string())),
        (Some(kid), None) => Err(Failure::new(
            Reason::KeyMissing,
            format!(
                "the signing key Secret {secret_name} was deleted after its public key (kid {kid}) was published; restore the Secret, or annotate this resource with {REGENERATE_KEY_ANNOTATION}=<any new value> to generate a new key, then register the new public key with the EHR"
            ),
        )),
    }
}

/// What to do with a Secret found under the generated key's name.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::controller) enum Adoption {
    /// Use it as it is.
    AsIs,
    /// Use it, after setting its owner reference to match
    /// `generatedKeyPolicy` (present for Delete, absent for Retain).
    SetOwner(bool),
}

/// A Secret under the generated key's name is used only when the operator
/// made it; its owner reference follows `generatedKeyPolicy`.
pub(in crate::controller) fn adoption(
    secret_name: &str,
    managed: bool,
    has_owner: bool,
    owned: bool,
) -> Result<Adoption, Failure> {
    if !managed {
        return Err(Failure::new(
            Reason::KeySecretConflict,
            format!(
                "Secret {secret_name} exists but was not created by the operator; rename it, or reference it with spec.signing.keySecretRef if it holds this client's key"
            ),
        ));
    }
    Ok(if has_owner == owned {
        Adoption::AsIs
    } else {
        Adoption::SetOwner(owned)
    })
}

/// Whether `spec.audience` may be the assertion's `aud`: the token
/// endpoint or the issuer, unless the operator allows any. An assertion is
/// a bearer credential for its audience: with an arbitrary audience, a
/// tenant could have the client's key sign one for another server (the
/// EHR's token URL) while the request goes to a server of their own.
pub(in crate::controller) fn audience(
    audience: Option<&str>,
    token_endpoint: &url::Url,
    issuer: Option<&str>,
    allow_any: bool,
) -> Result<(), Failure> {
    let Some(audience) = audience else {
        return Ok(());
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if allow_any
        || same(audience, token_endpoint.as_str())
        || issuer.is_some_and(|issuer| same(audience, issuer))
    {
        return Ok(());
    }
    Err(Failure::new(
        Reason::InvalidSpec,
        format!(
            "spec.audience: {:?} is neither the token endpoint ({token_endpoint}) nor the issuer{}; remove it (the token endpoint is the default SMART requires), or ask the operator's administrators to allow other audiences (--allow-custom-audience)",
            crate::smart::http::bounded_text(audience, 200),
            issuer.map(|i| format!(" ({i})")).unwrap_or_default()
        ),
    ))
}

/// What says which resource a generated key Secret belongs to.
#[derive(Clone, Copy, Debug)]
pub(in crate::controller) struct Claim<'a> {
    /// The uid the Secret was made for (absent on keys made by versions
    /// before it was recorded).
    pub bound_uid: Option<&'a str>,
    /// This resource's uid.
    pub uid: &'a str,
    /// Whether this resource already signed with a key (its status names
    /// a kid): then an unrecorded key is the one it made.
    pub signed_before: bool,
    /// The adopt-key annotation.
    pub adopt: Option<&'a str>,
}

/// Whether this resource may sign with the generated key Secret it found
/// under its key's name; `Ok(true)`: yes, once its uid is recorded there.
/// A key retained after its resource was deleted is registered with the EHR
/// as that client's: whoever creates a resource of the same name must not
/// get assertions signed with it (pointed at a server of their own, with
/// the EHR's token URL as audience) unless they say that they mean it.
pub(in crate::controller) fn key_claim(
    secret_name: &str,
    claim: &Claim<'_>,
) -> Result<bool, Failure> {
    use crate::crd::ADOPT_KEY_ANNOTATION;
    match claim.bound_uid {
        Some(bound) if bound == claim.uid => return Ok(false),
        _ if claim.adopt == Some(secret_name) => return Ok(true),
        None if claim.signed_before => return Ok(true),
        _ => {}
    }
    let whose = match claim.bound_uid {
        Some(bound) => format!("an earlier resource of this name (uid {bound}), since deleted"),
        None => "another resource (it records no uid)".to_string(),
    };
    Err(Failure::new(
        Reason::KeySecretConflict,
        format!(
            "Secret {secret_name} holds the key generated for {whose}; a new resource signs with it only when asked: if this resource is that client (the EHR knows that key), annotate it with {ADOPT_KEY_ANNOTATION}={secret_name}; otherwise delete the Secret or rename this resource to get a new key"
        ),
    ))
}

/// Whether the token step keeps the stored token or asks for a new one,
/// and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::controller) enum TokenDue {
    /// The stored token is good and its refresh time is ahead.
    Keep,
    /// No token is stored yet.
    First,
    /// What the token was obtained for changed: the scopes, the client,
    /// the token endpoint or the signing key.
    InputsChanged,
    /// `refresh-requested-at` has a value not yet acted on.
    Requested,
    /// The last attempt failed and its backoff is over: what was owed then
    /// is still owed.
    RetryAfterFailure,
    /// The refresh time has come.
    Refresh,
}

/// `stored` is the stored token's inputs hash and refresh time.
pub(in crate::controller) fn token_due(
    stored: Option<(&str, SystemTime)>,
    inputs_hash: &str,
    requested: bool,
    last_attempt_failed: bool,
    now: SystemTime,
) -> TokenDue {
    let Some((stored_hash, refresh_at)) = stored else {
        return TokenDue::First;
    };
    if stored_hash != inputs_hash {
        TokenDue::InputsChanged
    } else if requested {
        TokenDue::Requested
    } else if last_attempt_failed {
        TokenDue::RetryAfterFailure
    } else if now >= refresh_at {
        TokenDue::Refresh
    } else {
        TokenDue::Keep
    }
}

#[cfg(test)]
mod purity_tests;
#[cfg(test)]
mod tests;
