//! A generated key's Secret that exists already: checked to be this
//! client's (or adopted on request), its key bound, its owner reference
//! kept in step with `generatedKeyPolicy`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{KeyRequest, ResolvedKey, api_failure, bind, failure, known_key_secret};
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::reason::{Failure, Reason};
use crate::controller::decide::secret_data::{self, PRIVATE_KEY_FILE};
use crate::controller::decide::{self, Adoption};
use crate::controller::model::memory::{KeyMemo, Recall};
use crate::controller::model::target::Target;
use crate::crd::{
    ADOPT_KEY_ANNOTATION, CLIENT_UID_ANNOTATION, FIELD_MANAGER, REGENERATE_KEY_ANNOTATION,
};
use crate::smart::PrivateKey;

pub(super) async fn adopt(
    api: &Api<Secret>,
    target: &Target<'_>,
    request: &KeyRequest<'_>,
    secret_name: &str,
    existing: Secret,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    recall: Recall<'_>,
) -> Result<ResolvedKey, Failure> {
    let has_owner = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == target.owner.uid);
    let managed = secret_data::is_managed(&existing);
    let adoption = decide::adoption(secret_name, managed, has_owner, owner.is_some())?;
    let bound_uid = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLIENT_UID_ANNOTATION))
        .map(String::as_str);
    let stamp = decide::key_claim(
        secret_name,
        &decide::Claim {
            bound_uid,
            uid: target.uid,
            signed_before: target.status_kid.is_some(),
            adopt: target.annotation(ADOPT_KEY_ANNOTATION),
        },
    )?;
    let pem = existing
        .data
        .as_ref()
        .and_then(|d| d.get(PRIVATE_KEY_FILE))
        .ok_or_else(|| {
            failure(
                Reason::KeyInvalid,
                format!("Secret {secret_name} has no {PRIVATE_KEY_FILE}"),
            )
        })?;
    let whose = format!("the generated key in Secret {secret_name}");
    let key = PrivateKey::parse(&pem.0)
        .map_err(|e| failure(Reason::KeyInvalid, format!("{whose} cannot be used: {e}")))?;
    // A key of another algorithm than the one now wanted keeps signing
    // until a rotation replaces it (see `steps/rotate.rs`).
    let algorithm = key.algorithm();
    let mut learned = KeyMemo::default();
    let bound = bind(
        recall,
        &mut learned,
        &pem.0,
        key,
        Some(algorithm),
        request.kid,
        &whose,
    );
    let (signing, fingerprint) = bound?;
    let ring = Ring::read(&existing, &signing).map_err(|e| {
        failure(
            Reason::KeyInvalid,
            format!("{whose}: {e}; restore the Secret from a backup (or delete it and annotate this resource with {REGENERATE_KEY_ANNOTATION}, then register the new key)"),
        )
    })?;
    let read_at = existing.metadata.resource_version.clone();
    learned.seen.push((secret_name.to_string(), read_at));
    let owned = owner.is_some();
    // Keep the owner reference in step with generatedKeyPolicy; this is the
    // only write to an existing key Secret, and only when the policy changed.
    // The uid is stamped on a key adopted (by request, or made by an
    // earlier version for this resource), in the same write.
    let mut metadata = serde_json::Map::new();
    if let Adoption::SetOwner(_) = adoption {
        // Others' owner references stay: a merge patch replaces the list.
        let owners = secret_data::owners_with(&existing, &target.owner.uid, owner);
        metadata.insert("ownerReferences".into(), json!(owners));
    }
    if stamp {
        metadata.insert(
            "annotations".into(),
            json!({ CLIENT_UID_ANNOTATION: target.uid }),
        );
    }
    let current = if metadata.is_empty() {
        existing
    } else {
        // At the version read: a Secret changed since is read again, not
        // overwritten.
        metadata.insert(
            "resourceVersion".into(),
            json!(existing.metadata.resource_version),
        );
        let patch = json!({ "metadata": metadata });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(secret_name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| api_failure("patch", target, secret_name, e))?
    };
    let known = (fingerprint, ring.clone());
    learned.key_secret = known_key_secret(request, secret_name, &current, owned, known);
    Ok(ResolvedKey {
        ring: Some(ring),
        ..ResolvedKey::new(signing, secret_name, learned)
    })
}
