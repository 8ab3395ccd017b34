//! When a reconcile wants to look at its client again.

use std::time::{Duration, SystemTime};

use kube::runtime::controller::Action;

/// When a reconcile wants to look at its client again: kube's [`Action`]
/// with the time still readable, so that progress can be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requeue {
    After(Duration),
    /// Only when the resource (or a Secret it depends on) changes.
    OnChange,
}

impl Requeue {
    /// The planned look, from `now`.
    pub fn at(self, now: SystemTime) -> Option<SystemTime> {
        match self {
            Requeue::After(wait) => Some(crate::checked_time::after(now, wait)),
            Requeue::OnChange => None,
        }
    }
}

impl From<Requeue> for Action {
    fn from(requeue: Requeue) -> Self {
        match requeue {
            Requeue::After(wait) => Action::requeue(wait),
            Requeue::OnChange => Action::await_change(),
        }
    }
}
