//! The status a reconcile builds: one condition per step, the status fields,
//! and the events to publish. [`Draft::fail`] is the one place a failure
//! becomes a condition and a retry time; [`Draft::finish`] composes Ready.
//! Both are pure: time and jitter come in as arguments.

use std::time::{Duration, SystemTime};

use crate::controller::model::requeue::Requeue;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};

use crate::checked_time::after;
use crate::controller::decide::conditions::{self, State};
use crate::controller::decide::reason::{Class, Failure, Reason};
use crate::controller::decide::schedule;
use crate::controller::decide::secret_data;
use crate::controller::model::settings::Timing;
use crate::crd::SmartBackendClientStatus;

/// Which condition a step reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::controller) enum Slot {
    /// About the resource as a whole (bad spec, suspend).
    Overall,
    Discovered,
    Key,
    Token,
}

/// The status being built during a reconcile.
pub(in crate::controller) struct Draft {
    pub discovered: Option<State>,
    pub key: Option<State>,
    pub token: Option<State>,
    pub overall: Option<State>,
    pub fields: SmartBackendClientStatus,
    pub events: Vec<Event>,
}

impl Draft {
    pub fn new(previous: &SmartBackendClientStatus) -> Self {
        Self {
            discovered: None,
            key: None,
            token: None,
            overall: None,
            fields: previous.clone(),
            events: Vec::new(),
        }
    }

    pub fn set(&mut self, slot: Slot, state: State) {
        *match slot {
            Slot::Overall => &mut self.overall,
            Slot::Discovered => &mut self.discovered,
            Slot::Key => &mut self.key,
            Slot::Token => &mut self.token,
        } = Some(state);
    }

    /// Records a failure on `slot`: counts it, says in the message when the
    /// operator looks again, and schedules that look by the reason's class.
    pub fn fail(
        &mut self,
        slot: Slot,
        failure: Failure,
        previous: &SmartBackendClientStatus,
        timing: &Timing,
        now: SystemTime,
        jitter: f64,
    ) -> Requeue {
        let class = failure.reason.class();
        let failures = previous.consecutive_failures.saturating_add(1);
        let delay = match failure.reason {
            Reason::AwaitingRegistration => {
                schedule::awaiting_registration(failures, timing, jitter)
            }
            _ => schedule::after_failure(class, failures, failure.retry_after, timing, jitter),
        };
        let mut message = failure.message;
        match class {
            Class::Permanent => message.push_str(&format!(
                "; fix the registration or the resource (the operator retries on any change to it, and every {}s)",
                delay.as_secs()
            )),
            Class::Transient | Class::Waiting | Class::Ok => {
                message.push_str(&format!("; retrying in {}s", delay.as_secs()))
            }
        }
        self.fields.consecutive_failures = failures;
        self.fields.next_retry_time = Some(secret_data::rfc3339_ceil(after(now, delay)));
        self.set(slot, State::failed(failure.reason, message));
        Requeue::After(delay.max(Duration::from_secs(1)))
    }

    /// Composes Ready from the other conditions and fills in the status.
    /// Conditions not evaluated in this reconcile are carried over.
    pub fn finish(
        &mut self,
        previous: &SmartBackendClientStatus,
        generation: Option<i64>,
        now: SystemTime,
    ) -> SmartBackendClientStatus {
        let stamp = Timestamp::try_from(now).unwrap_or_else(|_| Timestamp::now());
        let mut status = self.fields.clone();
        status.observed_generation = generation;
        let carried = |type_: &str| previous.conditions.iter().find(|c| c.type_ == type_);
        let mut list = Vec::new();
        let mut parts = Vec::new();
        for (type_, state) in [
            (conditions::DISCOVERED, &self.discovered),
            (conditions::KEY_READY, &self.key),
            (conditions::TOKEN_READY, &self.token),
        ] {
            match state {
                Some(state) => {
                    list.push(conditions::condition(
                        type_,
                        state,
                        generation,
                        &previous.conditions,
                        stamp,
                    ));
                    parts.push(Some(state.clone()));
                }
                None => {
                    list.extend(carried(type_).cloned());
                    parts.push(carried(type_).and_then(State::read));
                }
            }
        }
        // Ready is True only when every other condition is.
        let first_failure = self
            .overall
            .clone()
            .or_else(|| parts.iter().flatten().find(|s| !s.ok).cloned());
        let ready = match first_failure {
            Some(mut failed) => {
                failed.message.push_str(&token_note(&status, now));
                failed
            }
            None => match &parts[2] {
                Some(token) => token.clone(),
                None => State::failed(
                    Reason::TokenPending,
                    "the first token is requested in a moment",
                ),
            },
        };
        let previous_reason = carried(conditions::READY).map(|c| c.reason.as_str());
        if !ready.ok && previous_reason != Some(ready.reason.as_str()) {
            // The normal moment between a new key and its first token, and
            // a client the EHR does not know yet, are not worth a Warning.
            let type_ = match ready.reason {
                Reason::TokenPending => None,
                Reason::AwaitingRegistration => Some(EventType::Normal),
                _ => Some(EventType::Warning),
            };
            if let Some(type_) = type_ {
                self.events.push(Event {
                    type_,
                    reason: ready.reason.as_str().into(),
                    note: Some(ready.message.clone()),
                    action: "Reconcile".into(),
                    secondary: None,
                });
            }
        }
        list.insert(
            0,
            conditions::condition(
                conditions::READY,
                &ready,
                generation,
                &previous.conditions,
                stamp,
            ),
        );
        status.conditions = list;
        status
    }
}

/// What a failing Ready says about the token already in the Secret.
fn token_note(status: &SmartBackendClientStatus, now: SystemTime) -> String {
    let (Some(expires), Some(secret)) = (&status.token_expires_at, &status.token_secret_name)
    else {
        return String::new();
    };
    match secret_data::parse_rfc3339(expires) {
        Some(at) if at > now => {
            format!("; the token in Secret {secret} stays valid until {expires}")
        }
        Some(_) => format!("; the token in Secret {secret} has expired"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
