//! What this process knows of a client's Secrets and of its last settled
//! outcome, kept in its [`ClientMemory`](super::ClientMemory).

use std::time::SystemTime;

use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::secret_data;

/// A reconcile's outcome that stays true until the next refresh time while
/// neither what the operator reads from the resource (its spec, by
/// generation, and its two request annotations) nor the operator's Secrets
/// for it change. Most reconciles are triggered by the operator's own writes
/// (the token Secret, then the status); they end here, without an API
/// request. A status edited by hand is put right at the next refresh.
#[derive(Clone, Debug)]
pub(crate) struct Settled {
    pub generation: Option<i64>,
    /// The refresh-requested, regenerate-key and rotate-key annotations.
    pub requests: [Option<String>; 3],
    /// Each Secret the operator manages for the client (name, and the
    /// resource versions it was read or written at).
    pub own_secrets: Vec<(String, Vec<String>)>,
    /// The next refresh.
    pub until: SystemTime,
}

impl Settled {
    pub fn requests(meta: &kube::api::ObjectMeta) -> [Option<String>; 3] {
        let annotations = meta.annotations.as_ref();
        [
            crate::crd::REFRESH_REQUESTED_ANNOTATION,
            crate::crd::REGENERATE_KEY_ANNOTATION,
            crate::crd::ROTATE_KEY_ANNOTATION,
        ]
        .map(|key| annotations.and_then(|a| a.get(key)).cloned())
    }
}

/// A generated key Secret at one resource version, and the fingerprint of
/// the key bound from it (kept in `signing_key`). While the watch shows
/// that version, the Secret need not be read again.
#[derive(Clone)]
pub(crate) struct KnownKeySecret {
    pub name: String,
    pub version: String,
    pub kid: Option<String>,
    /// Whether the Secret carries the owner reference (generatedKeyPolicy).
    pub owned: bool,
    pub fingerprint: [u8; 32],
    /// The keys the Secret holds at that version: kept whole only during a
    /// rotation; a single key is kept as the time it started signing (its
    /// ring is rebuilt from the bound key), which saves a JWK per client.
    keys: KnownKeys,
}

#[derive(Clone)]
enum KnownKeys {
    Single(SystemTime),
    Rotating(Box<Ring>),
}

impl KnownKeySecret {
    pub fn new(
        name: String,
        version: String,
        kid: Option<String>,
        owned: bool,
        fingerprint: [u8; 32],
        ring: Ring,
    ) -> Self {
        let mut known = Self {
            name,
            version,
            kid,
            owned,
            fingerprint,
            keys: KnownKeys::Single(SystemTime::UNIX_EPOCH),
        };
        known.set_ring(ring);
        known
    }

    pub fn set_ring(&mut self, ring: Ring) {
        self.keys = match ring.entries.as_slice() {
            [only] => KnownKeys::Single(only.since),
            _ => KnownKeys::Rotating(Box::new(ring)),
        };
    }

    /// The keys, given the active key bound from the Secret.
    pub fn ring(&self, active: &crate::smart::SigningKey) -> Ring {
        match &self.keys {
            KnownKeys::Single(since) => Ring::single(active, *since),
            KnownKeys::Rotating(ring) => (**ring).clone(),
        }
    }
}

/// A token Secret at one resource version, written or read for one
/// generation of the resource, owned by it and matching its template.
#[derive(Clone)]
pub(crate) struct KnownTokenSecret {
    pub name: String,
    pub version: String,
    pub generation: Option<i64>,
    pub stored: secret_data::StoredToken,
}
