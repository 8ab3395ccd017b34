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

mod known;
pub(crate) use known::{KnownKeySecret, KnownTokenSecret, Settled};

/// A token that was obtained but could not be written yet: it is written
/// on the next attempt instead of minting another.
#[derive(Clone)]
pub(crate) struct PendingToken {
    pub token: AccessToken,
    pub issued_at: SystemTime,
    pub inputs_hash: String,
}

/// Per-client state this process keeps between reconciles. The watch cache
/// can lag behind the operator's own writes; these cannot. Every field is
/// private: the steps read it through methods and hand back what they
/// learned as values ([`TokenMemo`]), which the reconcile applies.
#[derive(Clone, Default)]
pub(crate) struct ClientMemory {
    /// A token obtained but not yet written.
    pending: Option<PendingToken>,
    /// Expiry of the token last written, for the earliest-expiry metric.
    expires_at: Option<SystemTime>,
    /// The refresh-requested-at value last acted on.
    handled_refresh: Option<String>,
    /// How the last token request this process sent went.
    last_attempt: LastAttempt,
    /// The client's signing key, bound.
    signing_key: Option<BoundKey>,
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
    /// The status this process last wrote.
    written_status: Option<WrittenStatus>,
    /// The outcome of the last reconcile that ended with a good token, and
    /// what it holds for.
    settled: Option<Settled>,
    /// The token endpoint's clock minus this host's, as its last answer
    /// said (seconds).
    clock_skew: Option<i64>,
    /// Reconciles in a row that ended in an error of the operator's own.
    failed_reconciles: u32,
}

/// How the last token request this process sent for a client went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LastAttempt {
    /// None sent since this process began to lead: the status tells.
    #[default]
    Unknown,
    Succeeded,
    Failed,
}

/// A signing key bound from key bytes, with the fingerprint of the bytes,
/// algorithm and kid it was bound from.
#[derive(Clone)]
struct BoundKey {
    fingerprint: [u8; 32],
    key: crate::smart::SigningKey,
}

/// A status this process wrote, and when.
#[derive(Clone)]
struct WrittenStatus {
    at: Instant,
    status: SmartBackendClientStatus,
}

/// What a step may read of the client's memory: a view, taken at the
/// step's start. Steps never hold the memory itself.
#[derive(Clone, Copy, Default)]
pub(crate) struct Recall<'a> {
    /// The token Secret as last read or written.
    pub token_secret: Option<&'a KnownTokenSecret>,
    /// The generated key's Secret as last read or written.
    pub key_secret: Option<&'a KnownKeySecret>,
    /// The key last bound, with the fingerprint of what it was bound from.
    pub bound: Option<([u8; 32], &'a crate::smart::SigningKey)>,
    /// A token obtained but not yet written.
    pub pending: Option<&'a PendingToken>,
    /// Whether the last token request this process sent failed (`None`:
    /// none sent since it began to lead; the status tells).
    pub last_attempt_failed: Option<bool>,
    /// The refresh-requested-at value this process last acted on.
    pub handled_refresh: Option<&'a str>,
}

impl Recall<'_> {
    /// The signing key bound from the bytes, algorithm and kid with this
    /// fingerprint, if it is the one kept.
    pub fn bound_key(&self, fingerprint: &[u8; 32]) -> Option<&crate::smart::SigningKey> {
        self.bound
            .filter(|(kept, _)| kept == fingerprint)
            .map(|(_, key)| key)
    }
}

/// What a token step learned that the client's memory keeps. Built by the
/// step, applied by the reconcile ([`ClientMemory::learn`]).
#[derive(Default)]
pub(crate) struct TokenMemo {
    /// The token Secret as read or written now.
    pub secret: Option<KnownTokenSecret>,
    pub pending: Pending,
    /// Whether the request this step sent failed (`None`: none was sent).
    pub attempt_failed: Option<bool>,
    /// The server's clock as the answer showed it.
    pub clock_skew: Option<i64>,
    /// The refresh-requested-at value this step acted on.
    pub handled_request: Option<String>,
    /// The expiry of the token now in the Secret.
    pub expires_at: Option<SystemTime>,
}

impl TokenMemo {
    /// What a rotation's trial that brought no token leaves: the Secret
    /// and the server's clock as seen, but neither its failure nor the
    /// refresh request, which the working key still owes.
    pub fn of_failed_trial(self) -> Self {
        TokenMemo {
            attempt_failed: None,
            handled_request: None,
            expires_at: None,
            ..self
        }
    }
}

/// What the key step (and a rotation's write of the key Secret) learned
/// that the client's memory keeps. Built by the step, applied by the
/// reconcile ([`ClientMemory::learn_key`]).
#[derive(Default)]
pub(crate) struct KeyMemo {
    /// A key bound now, with the fingerprint of what it was bound from:
    /// kept, so that the next reconcile need not bind it again.
    pub bound: Option<([u8; 32], crate::smart::SigningKey)>,
    /// The generated key's Secret as read or written now.
    pub key_secret: Option<KnownKeySecret>,
    /// The operator's own Secrets read now, at these versions.
    pub seen: Vec<(String, Option<String>)>,
}

/// The memory's token obtained but not yet written, after a step.
#[derive(Default)]
pub(crate) enum Pending {
    #[default]
    Unchanged,
    /// Used or stale: dropped.
    Dropped,
    /// Obtained now and not written: written on the next attempt instead
    /// of minting another.
    Keep(PendingToken),
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

    /// Whether this process has looked at the client (since it last
    /// forgot it).
    pub fn knows(&self, uid: &str) -> bool {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.contains_key(uid)
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

    /// Applies what a token step learned. Returns the server's clock skew
    /// as it was known before, to tell whether a disagreement is new.
    pub fn learn(&mut self, memo: TokenMemo) -> Option<i64> {
        if memo.secret.is_some() {
            self.know_token_secret(memo.secret);
        }
        match memo.pending {
            Pending::Unchanged => {}
            Pending::Dropped => self.pending = None,
            Pending::Keep(pending) => self.pending = Some(pending),
        }
        if let Some(failed) = memo.attempt_failed {
            self.last_attempt = if failed {
                LastAttempt::Failed
            } else {
                LastAttempt::Succeeded
            };
        }
        if memo.handled_request.is_some() {
            self.handled_refresh = memo.handled_request;
        }
        if memo.expires_at.is_some() {
            self.expires_at = memo.expires_at;
        }
        match memo.clock_skew {
            Some(skew) => self.clock_skew.replace(skew),
            None => self.clock_skew,
        }
    }

    /// Applies what the key step learned.
    pub fn learn_key(&mut self, memo: KeyMemo) {
        if let Some((fingerprint, key)) = memo.bound {
            self.bind_key(fingerprint, key);
        }
        if memo.key_secret.is_some() {
            self.know_key_secret(memo.key_secret);
        }
        for (name, version) in memo.seen {
            self.saw_own_secret(&name, version);
        }
    }

    /// When the token last written expires, as far as this process knows.
    pub fn token_expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// One more reconcile in a row ended in an error; returns how many.
    pub fn reconcile_failed(&mut self) -> u32 {
        self.failed_reconciles = self.failed_reconciles.saturating_add(1);
        self.failed_reconciles
    }

    pub fn reconcile_succeeded(&mut self) {
        self.failed_reconciles = 0;
    }

    /// What the steps may read.
    pub fn recall(&self) -> Recall<'_> {
        Recall {
            token_secret: self.token_secret.as_ref(),
            key_secret: self.generated_key.as_ref(),
            bound: self.signing_key.as_ref().map(|b| (b.fingerprint, &b.key)),
            pending: self.pending.as_ref(),
            last_attempt_failed: match self.last_attempt {
                LastAttempt::Unknown => None,
                LastAttempt::Succeeded => Some(false),
                LastAttempt::Failed => Some(true),
            },
            handled_refresh: self.handled_refresh.as_deref(),
        }
    }

    /// Keeps the key bound from the bytes with this fingerprint.
    fn bind_key(&mut self, fingerprint: [u8; 32], key: crate::smart::SigningKey) {
        self.signing_key = Some(BoundKey { fingerprint, key });
    }

    /// The status this reconcile wrote.
    pub fn wrote_status(&mut self, status: SmartBackendClientStatus) {
        self.written_status = Some(WrittenStatus {
            at: Instant::now(),
            status,
        });
    }

    /// The settled outcome, taken out (put back with [`ClientMemory::settle`]).
    pub fn take_settled(&mut self) -> Option<Settled> {
        self.settled.take()
    }

    pub fn settle(&mut self, settled: Option<Settled>) {
        self.settled = settled;
    }

    /// The token Secret as just read or written (or unknown).
    pub fn know_token_secret(&mut self, known: Option<KnownTokenSecret>) {
        if let Some(known) = &known {
            self.saw_own_secret(&known.name, Some(known.version.clone()));
        }
        self.token_secret = known;
    }

    /// The generated key's Secret as just read or written (or unknown).
    fn know_key_secret(&mut self, known: Option<KnownKeySecret>) {
        if let Some(known) = &known {
            self.saw_own_secret(&known.name, Some(known.version.clone()));
        }
        self.generated_key = known;
    }

    /// The status to compare against: the one this process last wrote while
    /// the watch cache has not caught up with it, else the cached one. A
    /// reconcile triggered by the operator's own Secret write otherwise sees
    /// the status from before its last write and writes the same change
    /// again.
    pub fn current_status(&mut self, cached: SmartBackendClientStatus) -> SmartBackendClientStatus {
        match self.written_status.take() {
            Some(written)
                if written.at.elapsed() < WATCH_LAG_TOLERANCE && written.status != cached =>
            {
                let status = written.status.clone();
                self.written_status = Some(written);
                status
            }
            _ => cached,
        }
    }
}

#[cfg(test)]
mod tests;
