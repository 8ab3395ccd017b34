//! Keeping one volume's files fresh: ask the leader again soon after it
//! plans its next token, back off while it has none newer, and keep the
//! current files (saying so) while it cannot be reached.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::fetch::{Fetched, Leader};
use super::files;
use super::volume::VolumeRequest;
use crate::token_delivery::wire::DeliveredToken;

/// How long after the leader's planned refresh a plugin first asks: the
/// leader's request to the token server takes a moment.
const AFTER_PLAN: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// When to ask again (pure): a moment after the planned refresh, or, once
/// that has passed with no newer token, after a backoff that doubles.
pub fn next_ask(now: SystemTime, refresh_at: Option<SystemTime>, failures: u32) -> Duration {
    let planned = refresh_at
        .and_then(|at| at.duration_since(now).ok())
        .map(|wait| wait.saturating_add(AFTER_PLAN));
    match planned {
        Some(wait) if failures == 0 => wait,
        _ => FIRST_RETRY
            .saturating_mul(1u32 << failures.min(5))
            .min(MAX_RETRY),
    }
}

/// The request as the kubelet last sent it (a republish brings a fresh
/// pod credential).
pub type Shared = Arc<Mutex<VolumeRequest>>;

/// Writes `token` into the volume at `target`.
pub fn write(target: &std::path::Path, token: &DeliveredToken) -> std::io::Result<()> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    files::write_atomically(target, &token.files(), &stamp)
}

/// Runs until aborted (the volume is unpublished). `asked` wakes it early:
/// the kubelet republished the volume (about once a sync period), which is
/// how a refresh the leader did before its plan (a requested one) reaches
/// the pod.
pub async fn keep_fresh(
    leader: Arc<Leader>,
    request: Shared,
    asked: Arc<Notify>,
    target: PathBuf,
    mut current: DeliveredToken,
) {
    let mut failures = 0u32;
    loop {
        let wait = next_ask(SystemTime::now(), current.refresh(), failures);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = asked.notified() => {}
        }
        let snapshot = request.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let who = snapshot.client_ref();
        match leader.fetch(&snapshot).await {
            Fetched::Token(token) if token.access_token != current.access_token => {
                match write(&target, &token) {
                    Ok(()) => {
                        tracing::info!(
                            client = who,
                            pod = snapshot.pod,
                            expires_at = token.expires_at,
                            "wrote a new token into the pod's volume"
                        );
                        current = token;
                        failures = 0;
                    }
                    Err(error) => {
                        tracing::warn!(client = who, pod = snapshot.pod, %error, "could not write the new token into the pod's volume; trying again");
                        failures = failures.saturating_add(1);
                    }
                }
            }
            Fetched::Token(token) => {
                // The leader has no newer token yet; it may have planned
                // another refresh.
                current.refresh_at = token.refresh_at;
                failures = failures.saturating_add(1);
            }
            Fetched::Refused(why) | Fetched::Unavailable(why) => {
                failures = failures.saturating_add(1);
                let expired = current.expires().is_none_or(|e| e <= SystemTime::now());
                tracing::warn!(
                    client = who,
                    pod = snapshot.pod,
                    expires_at = current.expires_at,
                    expired,
                    "could not renew the pod's token ({why}); the volume keeps the current one until it expires"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_after_the_plan_then_backs_off_up_to_30_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let plan = now + Duration::from_secs(100);
        assert_eq!(next_ask(now, Some(plan), 0), Duration::from_secs(101));
        assert_eq!(
            next_ask(now, Some(now - Duration::from_secs(5)), 0),
            FIRST_RETRY
        );
        assert_eq!(next_ask(now, None, 0), FIRST_RETRY);
        let waits: Vec<u64> = (1..8)
            .map(|f| next_ask(now, Some(plan), f).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
    }
}
