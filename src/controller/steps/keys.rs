//! Finding the signing key: a referenced Secret read on demand, or the
//! operator's generated `<name>-signing-key`, created when absent and never
//! replaced silently once its public key has been published.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::controller::decide;
use crate::controller::decide::reason::{Failure, Reason};
mod adopt;
mod kms;
mod referenced;
mod remote;
mod transit;

use adopt::adopt;
pub(in crate::controller) use remote::signer_failure;

use crate::controller::Context;
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::secret_data;
use crate::controller::decide::validate::KeySource;
use crate::controller::model::memory::KnownKeySecret;
use crate::controller::model::memory::{KeyMemo, Recall};
use crate::controller::model::target::Target;
use crate::crd::{FIELD_MANAGER, GeneratedKeyPolicy, REGENERATE_KEY_ANNOTATION};
use crate::smart::{PrivateKey, SigningAlgorithm, SigningKey};

/// The key, ready to sign, and where it came from.
pub struct ResolvedKey {
    pub signing: SigningKey,
    pub secret_name: String,
    /// A new key was generated in this reconcile.
    pub generated: bool,
    /// The regenerate-key annotation value this reconcile acted on.
    pub regeneration_handled: Option<String>,
    /// For a key the operator generated: every key its Secret holds.
    pub ring: Option<Ring>,
    /// For a key the user provides: their next key, to publish (or why it
    /// cannot be).
    pub next: Option<Result<SigningKey, Failure>>,
    /// What the client's memory keeps of this step.
    pub learned: KeyMemo,
    /// For a key in a key manager (and no Secret): which, e.g. "Transit
    /// key team.billing". The operator then switches to the next key itself
    /// (after a trial), as for a key it generates.
    pub key_manager: Option<String>,
}

impl ResolvedKey {
    fn new(signing: SigningKey, secret_name: &str, learned: KeyMemo) -> Self {
        ResolvedKey {
            signing,
            secret_name: secret_name.to_string(),
            generated: false,
            regeneration_handled: None,
            ring: None,
            next: None,
            learned,
            key_manager: None,
        }
    }

    /// Where the key is, for the Key condition.
    pub fn place(&self) -> String {
        match &self.key_manager {
            Some(name) => format!("in {name} (not in any Secret)"),
            None => format!("in Secret {}", self.secret_name),
        }
    }
}

pub(in crate::controller) fn failure(reason: Reason, message: String) -> Failure {
    Failure::new(reason, message)
}

pub(in crate::controller) fn api_failure(
    verb: &str,
    target: &Target<'_>,
    secret: &str,
    error: kube::Error,
) -> Failure {
    Failure::api(
        Reason::KeySecretUnavailable,
        verb,
        target.namespace,
        secret,
        &error,
    )
}

/// What the reconciler knows when it needs the key.
pub struct KeyRequest<'a> {
    pub source: &'a KeySource,
    /// The algorithm chosen for a generated key (explicit or from metadata).
    pub algorithm: SigningAlgorithm,
    /// Set when the user named one: a referenced key must match it.
    pub explicit_algorithm: Option<SigningAlgorithm>,
    /// The server's list, when it published one.
    pub server_algorithms: Option<&'a [String]>,
    pub kid: Option<&'a str>,
    /// The last status: which keys were published and signing since when.
    pub previous: &'a crate::crd::SmartBackendClientStatus,
}

/// The signing key. Reads the client's memory (a [`Recall`]), never writes it: what it
/// learned comes back in [`ResolvedKey::learned`].
pub async fn resolve(
    ctx: &Context,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    recall: Recall<'_>,
) -> Result<ResolvedKey, Failure> {
    match request.source {
        KeySource::Referenced {
            secret_name,
            key,
            next,
        } => {
            let mut resolved =
                referenced::referenced(ctx, target, request, secret_name, key, recall).await?;
            if let Some((next_secret, next_key)) = next {
                // Bound apart (what it learned is dropped), so that the
                // signing key's binding stays cached.
                let scratch = Recall::default();
                let next =
                    referenced::referenced(ctx, target, request, next_secret, next_key, scratch);
                // A next key that cannot be used is reported, and the current
                // key goes on signing.
                resolved.next = Some(next.await.map(|n| n.signing));
            }
            Ok(resolved)
        }
        KeySource::Transit { key } => transit::transit_key(ctx, request, key).await,
        KeySource::Kms { key, next } => {
            kms::kms_key(ctx, target, request, key, next.as_deref()).await
        }
        KeySource::Generated {
            secret_name,
            policy,
            rsa_bits,
        } => {
            let params = (*policy, *rsa_bits);
            generated(ctx, target, request, secret_name, params, recall).await
        }
    }
}

/// Binds a parsed key to its algorithm and kid. Binding derives the public
/// key (for P-384 a scalar multiplication in pure Rust, a third of the
/// operator's CPU per refresh in the steady-state profile) and parses the
/// key into aws-lc, so the result is kept per client for as long as the key
/// bytes, algorithm and kid stay the same. Returns it with that fingerprint;
/// a key bound now is also noted in `memo`, for the memory to keep.
pub(in crate::controller) fn bind(
    recall: Recall<'_>,
    memo: &mut KeyMemo,
    bytes: &[u8],
    key: PrivateKey,
    algorithm: Option<SigningAlgorithm>,
    kid: Option<&str>,
    whose: &str,
) -> Result<(SigningKey, [u8; 32]), Failure> {
    let fingerprint = fingerprint(bytes, algorithm, kid);
    let cached = recall.bound_key(&fingerprint).cloned();
    if let Some(signing) = cached {
        return Ok((signing, fingerprint));
    }
    let signing = key
        .into_signing_key(algorithm, kid.map(str::to_string))
        .map_err(|e| {
            failure(Reason::KeyInvalid,
                format!("{whose}: {e}; set spec.signing.algorithm to match the key, or provide a key of the right type"),
            )
        })?;
    memo.bound = Some((fingerprint, signing.clone()));
    Ok((signing, fingerprint))
}

/// What identifies a bound key: its bytes, algorithm and kid.
pub(in crate::controller) fn fingerprint(
    bytes: &[u8],
    algorithm: Option<SigningAlgorithm>,
    kid: Option<&str>,
) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(bytes);
    hash.update([0]);
    hash.update(algorithm.map(|a| a.as_str()).unwrap_or("-"));
    hash.update([0]);
    hash.update(kid.unwrap_or("-"));
    <[u8; 32]>::from(hash.finalize())
}

/// A new private key and its PKCS#8 PEM, made off the async threads.
pub(in crate::controller) async fn generate(
    algorithm: SigningAlgorithm,
    rsa_bits: usize,
) -> Result<(PrivateKey, String), Failure> {
    let key = tokio::task::spawn_blocking(move || PrivateKey::generate(algorithm, rsa_bits))
        .await
        .map_err(|e| {
            failure(
                Reason::KeyGenerationFailed,
                format!("key generation did not finish: {e}"),
            )
        })?
        .map_err(|e| failure(Reason::KeyGenerationFailed, e.to_string()))?;
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| failure(Reason::KeyGenerationFailed, e.to_string()))?;
    Ok((key, pem))
}

async fn generated(
    ctx: &Context,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    secret_name: &str,
    (policy, rsa_bits): (GeneratedKeyPolicy, usize),
    recall: Recall<'_>,
) -> Result<ResolvedKey, Failure> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), target.namespace);
    let owner = (policy == GeneratedKeyPolicy::Delete).then(|| target.owner.clone());
    if let Some(known) = known_key(ctx, recall, target, request, secret_name, owner.is_some()) {
        return Ok(known);
    }
    if let Some(existing) = api
        .get_opt(secret_name)
        .await
        .map_err(|e| api_failure("get", target, secret_name, e))?
    {
        return adopt(&api, target, request, secret_name, existing, owner, recall).await;
    }

    // The key is gone: generate one, unless its public key was published.
    let regeneration_handled = decide::missing_key(
        secret_name,
        target.status_kid,
        target.annotation(REGENERATE_KEY_ANNOTATION),
        target.handled_key_regeneration,
    )?;

    let algorithm = request.algorithm;
    let (key, pem) = generate(algorithm, rsa_bits).await?;
    let mut learned = KeyMemo::default();
    let (signing, fingerprint) = bind(
        recall,
        &mut learned,
        pem.as_bytes(),
        key,
        Some(algorithm),
        request.kid,
        "the generated key",
    )?;
    let owned = owner.is_some();
    let ring = Ring::single(&signing, std::time::SystemTime::now());
    let mut secret = secret_data::build_key_secret(secret_data::KeySecretInput {
        name: secret_name,
        namespace: target.namespace,
        client_name: target.name,
        client_uid: target.uid,
        owner,
        private_pem: &pem,
        public_jwks: &signing.public_jwks().to_json(),
        algorithm,
        kid: signing.kid(),
    });
    ring.store(&mut secret, None);
    // A plain create of a fixed name: of two racing reconciles (or
    // replicas) exactly one succeeds, and the other adopts its key.
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(created) => {
            let known = (fingerprint, ring.clone());
            learned.key_secret = known_key_secret(request, secret_name, &created, owned, known);
            Ok(ResolvedKey {
                generated: true,
                regeneration_handled,
                ring: Some(ring),
                ..ResolvedKey::new(signing, secret_name, learned)
            })
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api
                .get(secret_name)
                .await
                .map_err(|e| api_failure("get", target, secret_name, e))?;
            let owner = (policy == GeneratedKeyPolicy::Delete).then(|| target.owner.clone());
            adopt(&api, target, request, secret_name, existing, owner, recall).await
        }
        Err(e) => Err(api_failure("create", target, secret_name, e)),
    }
}

/// The generated key as this process last saw it, when the watch shows its
/// Secret unchanged since and nothing asks for a different key: no read,
/// no parse. The key itself is the one `bind` keeps.
fn known_key(
    ctx: &Context,
    recall: Recall<'_>,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    secret_name: &str,
    owned: bool,
) -> Option<ResolvedKey> {
    let version = ctx.own_secret_version(target.namespace, secret_name)?;
    let known = recall.key_secret?;
    let (fingerprint, signing) = recall.bound?;
    let same = known.name == secret_name
        && known.version == version
        && known.kid.as_deref() == request.kid
        && known.owned == owned
        && known.fingerprint == fingerprint;
    let signing = same.then(|| signing.clone())?;
    let ring = known.ring(&signing);
    let learned = KeyMemo {
        seen: vec![(secret_name.to_string(), Some(version))],
        ..KeyMemo::default()
    };
    Some(ResolvedKey {
        ring: Some(ring),
        ..ResolvedKey::new(signing, secret_name, learned)
    })
}

/// The generated key's Secret as just read or written, as memory keeps it.
fn known_key_secret(
    request: &KeyRequest<'_>,
    secret_name: &str,
    secret: &Secret,
    owned: bool,
    (fingerprint, ring): ([u8; 32], Ring),
) -> Option<KnownKeySecret> {
    secret.metadata.resource_version.clone().map(|version| {
        let kid = request.kid.map(str::to_string);
        KnownKeySecret::new(
            secret_name.to_string(),
            version,
            kid,
            owned,
            fingerprint,
            ring,
        )
    })
}
