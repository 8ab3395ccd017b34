//! The tokens the leader delivers to node plugins, in its memory only: one
//! entry per client whose `spec.token.delivery` includes CSI, written by the
//! token step, forgotten when the client goes or this replica stops leading.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::wire::DeliveredToken;

/// One client's delivery: who may have its token, and the token once the
/// leader holds one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Service accounts whose pods may mount the token; empty: any pod of
    /// the client's namespace.
    pub consumers: Vec<String>,
    pub token: Option<Held>,
}

/// A token the leader holds, and what the token step needs to know of it
/// (what the token Secret's annotations say for a Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub delivered: DeliveredToken,
    pub issued_at: SystemTime,
    pub inputs_hash: String,
}

#[derive(Default)]
pub struct Tokens {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl Tokens {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The client delivers by CSI to `consumers`: keeps the token it has,
    /// or, holding none, takes the one `otherwise` gives.
    pub fn register(
        &self,
        namespace: &str,
        name: &str,
        consumers: &[String],
        otherwise: impl FnOnce() -> Option<Held>,
    ) {
        self.with(|entries| {
            let entry = entries
                .entry((namespace.to_string(), name.to_string()))
                .or_default();
            if entry.consumers != consumers {
                entry.consumers = consumers.to_vec();
            }
            if entry.token.is_none() {
                entry.token = otherwise();
            }
        });
    }

    pub fn put(&self, namespace: &str, name: &str, consumers: &[String], token: Held) {
        self.with(|entries| {
            entries.insert(
                (namespace.to_string(), name.to_string()),
                Entry {
                    consumers: consumers.to_vec(),
                    token: Some(token),
                },
            );
        });
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Entry> {
        self.with(|entries| {
            entries
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
        })
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.with(|entries| entries.remove(&(namespace.to_string(), name.to_string())));
    }

    /// Keeps only the clients `keep` says still exist.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.with(|entries| entries.retain(|(namespace, name), _| keep(namespace, name)));
    }

    /// Everything: this replica no longer leads.
    pub fn clear(&self) {
        self.with(HashMap::clear);
    }

    pub fn len(&self) -> usize {
        self.with(|entries| entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_registration_keeps_the_token_and_forgetting_drops_it() {
        let tokens = Tokens::default();
        let now = SystemTime::now();
        let token = Held {
            delivered: DeliveredToken::new("t", now, None, "https://f", now),
            issued_at: now,
            inputs_hash: "h".into(),
        };
        tokens.put("ns", "app", &[], token.clone());
        tokens.register("ns", "app", &["web".into()], || {
            unreachable!("a token is held")
        });
        let entry = tokens.get("ns", "app").unwrap();
        assert_eq!(entry.consumers, ["web"]);
        assert_eq!(entry.token, Some(token));
        tokens.forget("ns", "app");
        assert!(tokens.get("ns", "app").is_none());
        tokens.register("ns", "b", &[], || None);
        tokens.register("ns", "c", &[], || None);
        tokens.retain(|_, name| name == "b");
        assert!(tokens.get("ns", "c").is_none() && tokens.get("ns", "b").is_some());
        tokens.clear();
        assert!(tokens.is_empty());
    }
}
