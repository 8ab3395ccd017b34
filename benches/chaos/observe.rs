//! What the soak watches: every token Secret's times (a token seen past
//! its expiry fails the soak), every client's Ready condition, signing kid
//! and KeyMissing, and the replicas' CPU and memory through /proc.

use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use smart_backend_operator::controller::Timing;
use smart_backend_operator::controller::decide::schedule::refresh_lead;
use smart_backend_operator::controller::decide::secret_data::{
    EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION, KID_ANNOTATION, parse_rfc3339,
};
use smart_backend_operator::crd::SmartBackendClient;

use crate::support::process::OperatorProcess;

#[derive(Default)]
struct State {
    /// When counting started.
    counting_since: Option<Instant>,
    /// Per client: the (issued, expires) of the token Secret last seen.
    tokens: HashMap<String, (SystemTime, SystemTime)>,
    ready: HashSet<String>,
    kids: HashMap<String, String>,
    expired: HashSet<(String, SystemTime)>,
    /// Expiries first seen, by the 10-second slot of the window they were
    /// seen in (seconds since counting started, rounded down).
    expired_by_10s: BTreeMap<u64, u64>,
    late: HashSet<(String, SystemTime)>,
    /// Tokens the watch showed past expiry that a read found renewed.
    watch_behind: u64,
    refreshes: u64,
    rotations: u64,
    key_missing: u64,
}

/// What was seen while counting.
pub struct Counts {
    pub expired: usize,
    pub expired_by_10s: BTreeMap<u64, u64>,
    pub watch_behind: u64,
    pub late: usize,
    pub refreshes: u64,
    pub rotations: u64,
    pub key_missing: u64,
}

#[derive(Clone)]
pub struct Seen(Arc<Mutex<State>>);

impl Seen {
    pub fn ready_count(&self) -> usize {
        self.0.lock().unwrap().ready.len()
    }

    pub fn start_counting(&self) {
        self.0.lock().unwrap().counting_since = Some(Instant::now());
    }

    /// Notes every token Secret whose token has expired, or is past its
    /// refresh deadline (halfway from the planned refresh to expiry). A
    /// token the watch shows past expiry is confirmed by reading the Secret
    /// (after an etcd restart a watch can lag behind): it counts when the
    /// Secret still holds it, or holds one issued after it expired.
    pub async fn check_expiry(&self, secrets: &Api<Secret>) {
        let now = SystemTime::now();
        let candidates: Vec<(String, SystemTime, SystemTime)> = {
            let mut state = self.0.lock().unwrap();
            let state = &mut *state;
            for (name, (issued, expires)) in &state.tokens {
                if now <= *expires && now > deadline(*issued, *expires) {
                    state.late.insert((name.clone(), *issued));
                }
            }
            state
                .tokens
                .iter()
                .filter(|(name, (issued, expires))| {
                    now > *expires && !state.expired.contains(&((*name).clone(), *issued))
                })
                .map(|(name, (issued, expires))| (name.clone(), *issued, *expires))
                .collect()
        };
        for (name, issued, expires) in candidates {
            let read = tokio::time::timeout(Duration::from_secs(2), secrets.get(&name)).await;
            // The API server does not answer: look again next time.
            let Ok(Ok(secret)) = read else { break };
            let Some((now_issued, now_expires)) = times(&secret) else {
                continue;
            };
            let mut state = self.0.lock().unwrap();
            if now_issued == issued || now_issued > expires {
                let slot = state
                    .counting_since
                    .map_or(0, |since| since.elapsed().as_secs() / 10 * 10);
                if state.expired.insert((name.clone(), issued)) {
                    *state.expired_by_10s.entry(slot).or_default() += 1;
                }
            }
            if now_issued != issued {
                state.watch_behind += 1;
                state.tokens.insert(name, (now_issued, now_expires));
            }
        }
    }

    pub fn counts(&self) -> Counts {
        let state = self.0.lock().unwrap();
        Counts {
            expired: state.expired.len(),
            expired_by_10s: state.expired_by_10s.clone(),
            watch_behind: state.watch_behind,
            late: state.late.len(),
            refreshes: state.refreshes,
            rotations: state.rotations,
            key_missing: state.key_missing,
        }
    }
}

/// A token Secret's (issued, expires) times.
fn times(secret: &Secret) -> Option<(SystemTime, SystemTime)> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let issued = parse_rfc3339(annotations.get(ISSUED_AT_ANNOTATION)?)?;
    let expires = parse_rfc3339(annotations.get(EXPIRES_AT_ANNOTATION)?)?;
    Some((issued, expires))
}

fn deadline(issued: SystemTime, expires: SystemTime) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let planned = expires - refresh_lead(lifetime, None, &Timing::default());
    planned + expires.duration_since(planned).unwrap_or_default() / 2
}

/// Watches the namespace's token Secrets and clients, through API server
/// and etcd restarts (the watches resume with a backoff).
pub fn watch(client: kube::Client, namespace: &str) -> Seen {
    let seen = Seen(Arc::default());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let state = seen.0.clone();
    tokio::spawn(async move {
        let stream = watcher(secrets, watcher::Config::default()).default_backoff();
        let mut stream = stream.applied_objects().boxed();
        while let Some(secret) = stream.next().await {
            let Ok(secret) = secret else { continue };
            let Some(name) = secret.metadata.name.clone() else {
                continue;
            };
            if !name.ends_with("-token") {
                continue;
            }
            let Some((issued, expires)) = times(&secret) else {
                continue;
            };
            let mut state = state.lock().unwrap();
            let before = state.tokens.insert(name, (issued, expires));
            if state.counting_since.is_some() && before.is_some_and(|(was, _)| was != issued) {
                state.refreshes += 1;
            }
        }
    });
    let sbcs: Api<SmartBackendClient> = Api::namespaced(client, namespace);
    let state = seen.0.clone();
    tokio::spawn(async move {
        let stream = watcher(sbcs, watcher::Config::default()).default_backoff();
        let mut stream = stream.applied_objects().boxed();
        while let Some(sbc) = stream.next().await {
            let Ok(sbc) = sbc else { continue };
            let (Some(name), Some(status)) = (sbc.metadata.name.clone(), sbc.status) else {
                continue;
            };
            let mut state = state.lock().unwrap();
            let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
            if condition("Ready").is_some_and(|c| c.status == "True") {
                state.ready.insert(name.clone());
            }
            if state.counting_since.is_some()
                && condition("KeyReady").is_some_and(|c| c.reason == "KeyMissing")
            {
                state.key_missing += 1;
            }
            if let Some(kid) = status.kid {
                let before = state.kids.insert(name, kid.clone());
                if state.counting_since.is_some() && before.is_some_and(|was| was != kid) {
                    state.rotations += 1;
                }
            }
        }
    });
    seen
}

/// The clients as the soak leaves them.
pub struct End {
    pub ready: usize,
    /// Clients whose status names a signing kid other than their key
    /// Secret's (or that have no key Secret).
    pub lost_keys: usize,
}

pub async fn final_state(client: &kube::Client, namespace: &str, clients: usize) -> End {
    let sbcs: Api<SmartBackendClient> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let listed = sbcs
        .list(&ListParams::default())
        .await
        .expect("list clients");
    let keys: HashMap<String, String> = secrets
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .filter_map(|s| {
            let name = s.metadata.name?;
            let kid = s.metadata.annotations?.get(KID_ANNOTATION)?.clone();
            Some((name, kid))
        })
        .collect();
    let mut end = End {
        ready: 0,
        lost_keys: clients.saturating_sub(listed.items.len()),
    };
    for sbc in listed.items {
        let name = sbc.metadata.name.clone().unwrap_or_default();
        let status = sbc.status.unwrap_or_default();
        if status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            end.ready += 1;
        }
        let stored = keys.get(&format!("{name}-signing-key"));
        if stored.is_none() || stored != status.kid.as_ref() {
            end.lost_keys += 1;
        }
    }
    end
}

fn proc_file(process: &OperatorProcess, file: &str) -> String {
    process
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
        .unwrap_or_default()
}

pub fn rss_mib(process: &OperatorProcess) -> f64 {
    proc_file(process, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// User plus system CPU seconds of the process now running (a restarted
/// replica counts from its start).
pub fn cpu_seconds(process: &OperatorProcess) -> f64 {
    let stat = proc_file(process, "stat");
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}
