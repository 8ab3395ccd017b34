//! What this process remembers about each client between reconciles: the
//! watch cache can lag behind the operator's own writes, this cannot.
//! Cleared at every change of leadership (`Context::forget_leader_state`).
//!
//! A reconcile takes its client's memory whole (one snapshot), passes it to
//! the steps that need it, and puts it back at the end (one commit): no step
//! reaches into a shared map, and what a reconcile knows cannot change
//! under it. The controller never runs two reconciles of one client at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::crd::SmartBackendClientStatus;
use crate::smart::AccessToken;

use super::key_ring::Ring;
use super::secrets;

/// A token that was obtained but could not be written yet: it is written
/// on the next attempt instead of minting another.
#[derive(Clone)]
pub(crate) struct PendingToken {
    pub token: AccessToken,
    pub issued_at: SystemTime,
    pub inputs_hash: String,
}

/// Per-client state this process keeps between reconciles. The watch cache
/// can lag behind the operator's own writes; these cannot.
#[derive(Clone, Default)]
pub(crate) struct ClientMemory {
    /// A token obtained but not yet written.
    pub pending: Option<PendingToken>,
    /// Expiry of the token last written, for the earliest-expiry metric.
    pub expires_at: Option<SystemTime>,
    /// The refresh-requested-at value last acted on.
    pub handled_refresh: Option<String>,
    /// Whether the last token attempt failed.
    pub last_attempt_failed: Option<bool>,
    /// The client's signing key, bound, with the fingerprint of the key
    /// bytes, algorithm and kid it was bound from.
    pub signing_key: Option<([u8; 32], crate::smart::SigningKey)>,
    /// The token Secret as this process last read or wrote it.
    token_secret: Option<KnownTokenSecret>,
    /// The generated key's Secret as this process last read or wrote it.
    generated_key: Option<KnownKeySecret>,
    /// The operator's own Secrets for the client, with every resource
    /// version this reconcile read or wrote them at. Recorded by the
    /// methods that change what this memory knows of them, so no step has
    /// to remember to; taken whole by the settled outcome, and never kept
    /// past the commit.
    seen: Vec<(String, Vec<String>)>,
    /// The status this process last wrote, and when.
    pub written_status: Option<(Instant, SmartBackendClientStatus)>,
    /// The outcome of the last reconcile that ended with a good token, and
    /// what it holds for.
    pub settled: Option<Settled>,
    /// The token endpoint's clock minus this host's, as its last answer
    /// said (seconds).
    pub clock_skew: Option<i64>,
}

/// Every client's memory, by uid.
#[derive(Default)]
pub(crate) struct Memories {
    clients: Mutex<HashMap<String, ClientMemory>>,
    /// Each client's token expiry, kept apart so that the earliest-expiry
    /// gauge also sees clients whose memory a reconcile has taken.
    expiries: Mutex<HashMap<String, SystemTime>>,
}

impl Memories {
    /// The client's memory, taken out until [`Memories::commit`] (its
    /// entry stays, so that the commit of a known client allocates nothing).
    pub fn take(&self, uid: &str) -> ClientMemory {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.get_mut(uid).map(std::mem::take).unwrap_or_default()
    }

    pub fn commit(&self, uid: &str, mut memory: ClientMemory) {
        memory.seen = Vec::new();
        if let Some(expires_at) = memory.expires_at {
            let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
            put(&mut expiries, uid, expires_at);
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        put(&mut clients, uid, memory);
    }

    pub fn forget(&self, uid: &str) {
        self.retain(|other| other != uid);
    }

    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|uid, _| keep(uid));
        let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
        expiries.retain(|uid, _| keep(uid));
    }

    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        let expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
        expiries.values().min().copied()
    }
}

/// Sets the value of `key`, allocating the key only when it is new.
fn put<V>(map: &mut HashMap<String, V>, key: &str, value: V) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_string(), value);
        }
    }
}

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
    pub stored: secrets::StoredToken,
}

/// How long the status this process wrote is trusted over a watch cache
/// that does not show it yet. Longer lags mean someone else wrote status
/// since, and the cache wins.
const WATCH_LAG_TOLERANCE: Duration = Duration::from_secs(30);

impl ClientMemory {
    /// Notes a version at which one of the operator's own Secrets for this
    /// client was read or written.
    pub fn saw_own_secret(&mut self, name: &str, version: Option<String>) {
        let Some(version) = version else { return };
        match self.seen.iter_mut().find(|(n, _)| n == name) {
            Some((_, versions)) => versions.push(version),
            None => self.seen.push((name.to_string(), vec![version])),
        }
    }

    /// The own Secrets' versions this reconcile saw, for its settled outcome.
    pub fn take_seen(&mut self) -> Vec<(String, Vec<String>)> {
        std::mem::take(&mut self.seen)
    }

    pub fn token_secret(&self) -> Option<&KnownTokenSecret> {
        self.token_secret.as_ref()
    }

    /// The token Secret as just read or written (or unknown).
    pub fn know_token_secret(&mut self, known: Option<KnownTokenSecret>) {
        if let Some(known) = &known {
            self.saw_own_secret(&known.name, Some(known.version.clone()));
        }
        self.token_secret = known;
    }

    pub fn generated_key(&self) -> Option<&KnownKeySecret> {
        self.generated_key.as_ref()
    }

    /// The generated key's Secret as just read or written (or unknown).
    pub fn know_key_secret(&mut self, known: Option<KnownKeySecret>) {
        if let Some(known) = &known {
            self.saw_own_secret(&known.name, Some(known.version.clone()));
        }
        self.generated_key = known;
    }

    /// The generated key's Secret was rewritten with `ring` (a rotation's
    /// step) and is now at `version`.
    pub fn key_secret_written(&mut self, name: &str, version: Option<String>, ring: &Ring) {
        if let (Some(known), Some(version)) = (self.generated_key.as_mut(), version.clone()) {
            known.version = version;
            known.set_ring(ring.clone());
        }
        self.saw_own_secret(name, version);
    }

    /// The generated key now signs with the key bound from these bytes.
    pub fn key_promoted(&mut self, fingerprint: [u8; 32], signing: crate::smart::SigningKey) {
        if let Some(known) = self.generated_key.as_mut() {
            known.fingerprint = fingerprint;
            self.signing_key = Some((fingerprint, signing));
        }
    }

    /// The status to compare against: the one this process last wrote while
    /// the watch cache has not caught up with it, else the cached one. A
    /// reconcile triggered by the operator's own Secret write otherwise sees
    /// the status from before its last write and writes the same change
    /// again.
    pub fn current_status(&mut self, cached: SmartBackendClientStatus) -> SmartBackendClientStatus {
        match self.written_status.take() {
            Some((at, written)) if at.elapsed() < WATCH_LAG_TOLERANCE && written != cached => {
                self.written_status = Some((at, written.clone()));
                written
            }
            _ => cached,
        }
    }
}
