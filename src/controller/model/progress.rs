//! Whether the leader makes progress. Each reconcile ends by saying when it
//! wants to look at its client again; a look that is due and has not
//! happened long after is the sign of a stuck or dead controller (a
//! deadlock, a panic that ended a controller task, a starved runtime),
//! which an HTTP server that still answers cannot show. Liveness fails on
//! it, so that the kubelet restarts the replica and another one leads.
//!
//! A stall is work overdue while nothing finishes: an operator that is
//! merely behind (overloaded, its reconciles finishing late) is making
//! progress, and a restart would only lose its caches. The decisions are
//! [`oldest_overdue`] and [`stall`], pure functions of the planned looks,
//! the last finished reconcile, the time and which clients still exist.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// When one client is due to be looked at again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    pub at: SystemTime,
}

/// Every client's next planned look, by uid, while this replica leads.
#[derive(Default)]
pub struct Progress {
    planned: Mutex<HashMap<String, Planned>>,
    /// When a reconcile last finished.
    finished: Mutex<Option<SystemTime>>,
}

impl Progress {
    /// Records that a reconcile finished `now` and the look it asked for
    /// (`None`: only on a change).
    pub fn plan(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        at: Option<SystemTime>,
        now: SystemTime,
    ) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let mut planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = at else {
            planned.remove(uid);
            return;
        };
        // A known client's entry is updated in place: nothing allocated on
        // the reconcile path.
        match planned.get_mut(uid) {
            Some(known) => known.at = at,
            None => {
                planned.insert(
                    uid.to_string(),
                    Planned {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        at,
                    },
                );
            }
        }
    }

    pub fn forget(&self, uid: &str) {
        self.planned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.planned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
    }

    /// How long work has been overdue while no reconcile finished, given
    /// how long the oldest look is `overdue` (from [`Progress::oldest_overdue`]).
    pub fn stalled_for(&self, overdue: Option<Duration>, now: SystemTime) -> Option<Duration> {
        let finished = *self.finished.lock().unwrap_or_else(|e| e.into_inner());
        stall(
            overdue,
            finished.map(|t| now.duration_since(t).unwrap_or_default()),
        )
    }

    /// How long the oldest planned look of a client that still exists is
    /// overdue, if any is.
    pub fn oldest_overdue(
        &self,
        now: SystemTime,
        exists: impl Fn(&str, &str) -> bool,
    ) -> Option<Duration> {
        let planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        oldest_overdue(planned.values(), now, exists)
    }
}

/// How long the oldest look that was due before `now` has been waiting,
/// among clients that `exists` (a deleted client is never looked at again,
/// and that is no stall).
pub fn oldest_overdue<'a>(
    planned: impl IntoIterator<Item = &'a Planned>,
    now: SystemTime,
    exists: impl Fn(&str, &str) -> bool,
) -> Option<Duration> {
    planned
        .into_iter()
        .filter(|p| p.at < now && exists(&p.namespace, &p.name))
        .map(|p| p.at)
        .min()
        .map(|oldest| now.duration_since(oldest).unwrap_or_default())
}

/// How long the operator has been stalled: work overdue by `overdue` while
/// the last reconcile finished `since_finished` ago; the shorter of the two.
pub fn stall(overdue: Option<Duration>, since_finished: Option<Duration>) -> Option<Duration> {
    let overdue = overdue?;
    Some(since_finished.map_or(overdue, |since| overdue.min(since)))
}

/// The liveness verdict: healthy unless the operator has been stalled (see
/// [`stall`]) for more than `deadline`.
pub fn verdict(overdue: Option<Duration>, deadline: Duration) -> Result<(), String> {
    match overdue {
        Some(late) if late > deadline => Err(format!(
            "no progress: a client's refresh or retry has been due, and no reconcile has finished, for {}s (more than the {}s progress deadline); restarting lets another replica lead",
            late.as_secs(),
            deadline.as_secs()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn planned(name: &str, secs: u64) -> Planned {
        Planned {
            namespace: "ns".into(),
            name: name.into(),
            at: at(secs),
        }
    }

    #[test]
    fn the_oldest_look_due_among_existing_clients_is_what_is_overdue() {
        let all = [planned("a", 100), planned("b", 40), planned("gone", 10)];
        let exists = |_: &str, name: &str| name != "gone";
        assert_eq!(
            oldest_overdue(&all, at(130), exists),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            oldest_overdue(&all, at(130), |_: &str, _: &str| true),
            Some(Duration::from_secs(120))
        );
        // Nothing due yet, or nothing at all.
        assert_eq!(oldest_overdue(&all, at(5), exists), None);
        assert_eq!(oldest_overdue(&[], at(500), exists), None);
    }

    #[test]
    fn an_operator_that_is_behind_but_finishing_reconciles_is_not_stalled() {
        let s = Duration::from_secs;
        assert_eq!(stall(None, Some(s(500))), None, "nothing due");
        assert_eq!(stall(Some(s(300)), Some(s(2))), Some(s(2)), "behind, busy");
        assert_eq!(stall(Some(s(300)), Some(s(400))), Some(s(300)));
        assert_eq!(stall(Some(s(30)), None), Some(s(30)));
    }

    #[test]
    fn liveness_fails_only_past_the_deadline_and_says_why() {
        let deadline = Duration::from_secs(120);
        assert!(verdict(None, deadline).is_ok());
        assert!(verdict(Some(Duration::from_secs(120)), deadline).is_ok());
        let stalled = verdict(Some(Duration::from_secs(121)), deadline).unwrap_err();
        assert!(
            stalled.contains("121s") && stalled.contains("120s"),
            "{stalled}"
        );
    }

    #[test]
    fn a_look_planned_again_or_forgotten_is_no_longer_overdue() {
        let progress = Progress::default();
        progress.plan("u1", "ns", "a", Some(at(0)), at(0));
        progress.plan("u2", "ns", "b", Some(at(50)), at(0));
        let all = |_: &str, _: &str| true;
        assert_eq!(
            progress.oldest_overdue(at(100), all),
            Some(Duration::from_secs(100))
        );
        progress.plan("u1", "ns", "a", Some(at(200)), at(0));
        assert_eq!(
            progress.oldest_overdue(at(100), all),
            Some(Duration::from_secs(50))
        );
        progress.plan("u2", "ns", "b", None, at(0));
        let overdue = progress.oldest_overdue(at(100), all);
        assert_eq!(
            progress.stalled_for(overdue, at(100)),
            None,
            "nothing overdue"
        );
        assert_eq!(progress.oldest_overdue(at(100), all), None);
        progress.forget("u1");
        assert_eq!(progress.oldest_overdue(at(1000), all), None);
    }
}
