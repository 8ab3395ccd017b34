//! The keys a generated key Secret holds, and how they are stored in it.
//! Pure: Secrets in, Secrets out.
//!
//! - `private-key.pem`: the `Active` key, the one that signs (the same file
//!   as before rotation existed, so older Secrets read as one active key);
//! - `next-private-key.pem`: the `Next` key during a rotation;
//! - `retiring-private-key.pem`: the `Retiring` key after a promotion, so
//!   that a refusal of the new key can fall back to it until it is dropped;
//! - `public-jwks.json`: the public key of every listed key, as published;
//! - the annotation `smartbackend.dev/keys`: the list (kid, algorithm,
//!   state and since when), which is what a rotation resumes from.
//!
//! A retiring key keeps its private key until it is dropped: a server that
//! accepted the new key once and then refuses it (one of its nodes still
//! holds the old JWKS, or its registration was rolled back) is answered by
//! the old key, which signs again.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use crate::controller::decide::rotation::{KeyEntry, KeyState};
use crate::controller::decide::secret_data::{
    ALGORITHM_ANNOTATION, KID_ANNOTATION, PRIVATE_KEY_FILE, PUBLIC_JWKS_FILE, parse_rfc3339,
    rfc3339, whole_second,
};
use crate::crd::KeyStatus;
use crate::smart::keys::{JwkSet, PublicJwk};
use crate::smart::{SigningAlgorithm, SigningKey};

pub const KEYS_ANNOTATION: &str = "smartbackend.dev/keys";
pub const NEXT_PRIVATE_KEY_FILE: &str = "next-private-key.pem";
pub const RETIRING_PRIVATE_KEY_FILE: &str = "retiring-private-key.pem";

/// The most keys a client publishes: one in each state.
const MAX_KEYS: usize = 3;

#[derive(Serialize, Deserialize)]
struct Stored {
    kid: String,
    algorithm: SigningAlgorithm,
    state: KeyState,
    since: String,
}

/// A client's keys as its generated key Secret holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub entries: Vec<KeyEntry>,
    /// The public key of each entry.
    pub public: JwkSet,
    /// The next key's PEM, while there is one.
    pub next_pem: Option<Vec<u8>>,
    /// The retiring key's PEM, when it was kept at its promotion (a key
    /// retired before keys were kept has none).
    pub retiring_pem: Option<Vec<u8>>,
}

impl Ring {
    /// A ring of one key that has just started signing.
    pub fn single(active: &SigningKey, since: SystemTime) -> Self {
        let since = whole_second(since);
        Self {
            entries: vec![KeyEntry {
                kid: active.kid().to_string(),
                algorithm: active.algorithm(),
                state: KeyState::Active,
                since,
            }],
            public: active.public_jwks(),
            next_pem: None,
            retiring_pem: None,
        }
    }

    /// Reads the ring of a key Secret whose `private-key.pem` was bound to
    /// `active`. A Secret written before rotation existed (no list) reads
    /// as one active key since the Secret was created.
    pub fn read(secret: &Secret, active: &SigningKey) -> Result<Self, String> {
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let data = secret.data.clone().unwrap_or_default();
        let Some(list) = annotations.get(KEYS_ANNOTATION) else {
            let created = secret.metadata.creation_timestamp.as_ref();
            let since = created.map_or(SystemTime::UNIX_EPOCH, |t| SystemTime::from(t.0));
            return Ok(Self::single(active, since));
        };
        let stored: Vec<Stored> = serde_json::from_str(list)
            .map_err(|e| format!("the {KEYS_ANNOTATION} annotation is not a key list: {e}"))?;
        let mut entries = Vec::with_capacity(stored.len());
        for s in stored.into_iter().take(MAX_KEYS) {
            let since = parse_rfc3339(&s.since)
                .ok_or_else(|| format!("key {} has no valid time in {KEYS_ANNOTATION}", s.kid))?;
            entries.push(KeyEntry {
                kid: s.kid,
                algorithm: s.algorithm,
                state: s.state,
                since,
            });
        }
        let published: JwkSet = data
            .get(PUBLIC_JWKS_FILE)
            .and_then(|b| serde_json::from_slice(&b.0).ok())
            .unwrap_or_default();
        let next_pem = data.get(NEXT_PRIVATE_KEY_FILE).map(|b| b.0.clone());
        let retiring = entries.iter().any(|e| e.state == KeyState::Retiring);
        let retiring_pem = data
            .get(RETIRING_PRIVATE_KEY_FILE)
            .filter(|_| retiring)
            .map(|b| b.0.clone());
        let mut ring = Self {
            entries,
            public: published,
            next_pem,
            retiring_pem,
        };
        ring.bind_active(active)?;
        Ok(ring.in_order())
    }

    /// Makes the active entry the key bound from `private-key.pem` (its kid
    /// follows spec.signing.kid), and checks that every entry has what it
    /// needs: a public key, and for `Next` its private key.
    fn bind_active(&mut self, active: &SigningKey) -> Result<(), String> {
        let since = self
            .entries
            .iter()
            .find(|e| e.state == KeyState::Active)
            .map(|e| e.since)
            .ok_or_else(|| format!("{KEYS_ANNOTATION} lists no active key"))?;
        self.entries.retain(|e| e.state != KeyState::Active);
        self.entries.insert(
            0,
            KeyEntry {
                kid: active.kid().to_string(),
                algorithm: active.algorithm(),
                state: KeyState::Active,
                since,
            },
        );
        self.public.keys.retain(|k| k.kid != active.kid());
        self.public.keys.insert(0, active.public_jwk());
        let has_next = self.entries.iter().any(|e| e.state == KeyState::Next);
        if has_next != self.next_pem.is_some() {
            return Err(format!(
                "{KEYS_ANNOTATION} and {NEXT_PRIVATE_KEY_FILE} disagree about the next key"
            ));
        }
        if let Some(missing) = self
            .entries
            .iter()
            .find(|e| !self.public.keys.iter().any(|k| k.kid == e.kid))
        {
            return Err(format!(
                "key {} has no public key in {PUBLIC_JWKS_FILE}",
                missing.kid
            ));
        }
        Ok(())
    }

    /// The JWK Set to publish: each listed key once, the active one first.
    pub fn published(&self) -> JwkSet {
        let keys = self
            .entries
            .iter()
            .filter_map(|e| self.public.keys.iter().find(|k| k.kid == e.kid))
            .cloned()
            .collect();
        JwkSet { keys }
    }

    pub fn find(&self, state: KeyState) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.state == state)
    }

    /// The ring with a new next key.
    pub fn with_next(
        &self,
        jwk: PublicJwk,
        pem: Vec<u8>,
        algorithm: SigningAlgorithm,
        now: SystemTime,
    ) -> Self {
        // Rounded up: the waits that count from it never come short.
        let now = whole_second(crate::checked_time::after(
            now,
            std::time::Duration::from_millis(999),
        ));
        let entries =
            crate::controller::decide::rotation::add_next(&self.entries, &jwk.kid, algorithm, now);
        let mut public = self.public.clone();
        public.keys.retain(|k| k.kid != jwk.kid);
        public.keys.push(jwk);
        Self {
            entries,
            public,
            next_pem: Some(pem),
            retiring_pem: self.retiring_pem.clone(),
        }
        .in_order()
    }

    /// The ring with a key that no longer signs but stays published.
    pub fn with_retiring(
        &self,
        jwk: PublicJwk,
        algorithm: SigningAlgorithm,
        since: SystemTime,
    ) -> Self {
        let mut ring = self.clone();
        ring.entries.retain(|e| e.kid != jwk.kid);
        ring.entries.push(KeyEntry {
            kid: jwk.kid.clone(),
            algorithm,
            state: KeyState::Retiring,
            since: whole_second(since),
        });
        ring.public.keys.retain(|k| k.kid != jwk.kid);
        ring.public.keys.push(jwk);
        ring.in_order()
    }

    /// The ring after the next key was accepted: it signs, and the old one
    /// (whose PEM is `active_pem`) retires, its private key kept until it
    /// is dropped. Returns the new active PEM with it.
    pub fn promoted(&self, now: SystemTime, active_pem: Vec<u8>) -> Option<(Self, Vec<u8>)> {
        let pem = self.next_pem.clone()?;
        let ring = Self {
            entries: crate::controller::decide::rotation::promote(&self.entries, whole_second(now)),
            public: self.public.clone(),
            next_pem: None,
            retiring_pem: Some(active_pem),
        };
        Some((ring.in_order(), pem))
    }

    /// The ring after the server accepted the next key of a key manager:
    /// as [`Ring::promoted`], with no private key anywhere to move.
    pub fn promoted_elsewhere(&self, now: SystemTime) -> Self {
        let ring = Self {
            entries: crate::controller::decide::rotation::promote(&self.entries, whole_second(now)),
            public: self.public.clone(),
            next_pem: None,
            retiring_pem: None,
        };
        ring.in_order()
    }

    /// The ring after the server refused the key promoted last (whose PEM
    /// is `active_pem`): the retiring key signs again, and the refused key
    /// is the next key once more, tried again after a backoff. A next key
    /// published meanwhile, which never signed, gives way. Returns the PEM
    /// that signs again with it; `None` when the retiring key's private key
    /// was not kept.
    pub fn fallen_back(&self, now: SystemTime, active_pem: Vec<u8>) -> Option<(Self, Vec<u8>)> {
        let pem = self.retiring_pem.clone()?;
        let ring = Self {
            entries: crate::controller::decide::rotation::fall_back(
                &self.entries,
                whole_second(now),
            ),
            public: self.public.clone(),
            next_pem: Some(active_pem),
            retiring_pem: None,
        };
        Some((ring.in_order(), pem))
    }

    /// The ring without `kid` (public and private).
    pub fn without(&self, kid: &str) -> Self {
        let mut public = self.public.clone();
        public.keys.retain(|k| k.kid != kid);
        let dropped = |state| {
            self.entries
                .iter()
                .any(|e| e.kid == kid && e.state == state)
        };
        let kept = |state, pem: &Option<Vec<u8>>| if dropped(state) { None } else { pem.clone() };
        Self {
            entries: crate::controller::decide::rotation::drop_key(&self.entries, kid),
            public,
            next_pem: kept(KeyState::Next, &self.next_pem),
            retiring_pem: kept(KeyState::Retiring, &self.retiring_pem),
        }
        .in_order()
    }

    /// One order for the same keys, so that a ring read back compares
    /// equal to the one written: active, next, retiring; public keys in
    /// the same order, keys no entry names dropped.
    fn in_order(mut self) -> Self {
        let rank = |state: KeyState| match state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retiring => 2,
        };
        self.entries.sort_by_key(|e| rank(e.state));
        self.public = self.published();
        self
    }

    /// The ring written into `secret` (whose `private-key.pem` becomes
    /// `active_pem` when given).
    pub fn store(&self, secret: &mut Secret, active_pem: Option<&[u8]>) {
        let stored: Vec<Stored> = self
            .entries
            .iter()
            .map(|e| Stored {
                kid: e.kid.clone(),
                algorithm: e.algorithm,
                state: e.state,
                since: rfc3339(e.since),
            })
            .collect();
        let annotations = secret.metadata.annotations.get_or_insert_default();
        let list = serde_json::to_string(&stored).unwrap_or_default();
        annotations.insert(KEYS_ANNOTATION.into(), list);
        if let Some(active) = self.find(KeyState::Active) {
            annotations.insert(KID_ANNOTATION.into(), active.kid.clone());
            annotations.insert(
                ALGORITHM_ANNOTATION.into(),
                active.algorithm.as_str().into(),
            );
        }
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        if let Some(pem) = active_pem {
            data.insert(PRIVATE_KEY_FILE.into(), ByteString(pem.to_vec()));
        }
        for (file, pem) in [
            (NEXT_PRIVATE_KEY_FILE, &self.next_pem),
            (RETIRING_PRIVATE_KEY_FILE, &self.retiring_pem),
        ] {
            match pem {
                Some(pem) => data.insert(file.into(), ByteString(pem.clone())),
                None => data.remove(file),
            };
        }
        let jwks = self.published().to_json();
        data.insert(PUBLIC_JWKS_FILE.into(), ByteString(jwks.into_bytes()));
    }

    /// The list as `status.keys` shows it.
    pub fn status(&self) -> Vec<KeyStatus> {
        status_of(&self.entries)
    }
}

pub fn status_of(entries: &[KeyEntry]) -> Vec<KeyStatus> {
    entries
        .iter()
        .map(|e| KeyStatus {
            kid: e.kid.clone(),
            algorithm: e.algorithm,
            state: e.state,
            since: rfc3339(e.since),
        })
        .collect()
}

#[cfg(test)]
mod tests;
