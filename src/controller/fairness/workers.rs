//! Reconcile workers shared among namespaces. kube-runtime runs reconciles
//! first come, first served, so one namespace that creates or changes many
//! clients at once (each reconcile a few API calls) would hold every worker
//! while another namespace's refreshes wait behind it. So kube-runtime hands
//! every due reconcile over at once, and each waits here for a place: a
//! namespace runs at most its share of the workers, and a freed place goes
//! to the namespaces that wait in turn, one reconcile each. Within a
//! namespace the reconcile whose token expires first goes first: after an
//! outage or a change of leader, when every client is looked at again, the
//! tokens about to expire do not wait behind those with hours left. A
//! waiting reconcile is a parked future: nothing is put off and tried
//! again, so a backlog of thousands costs no work while it waits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::oneshot;

/// Workers kept free for namespaces that are not busy yet, when only one
/// is.
const RESERVE: usize = 2;

/// How many reconciles one namespace may run at once out of `workers`,
/// while `busy_others` other namespaces run or wait for some: all but a
/// reserve when it is alone, an equal part otherwise.
pub fn share(workers: usize, busy_others: usize) -> usize {
    let share = if busy_others == 0 {
        workers.saturating_sub(RESERVE)
    } else {
        workers / (busy_others + 1)
    };
    share.max(1)
}

/// A reconcile waiting for its place: the earliest `due` first, and in
/// the order they came among equals.
struct Waiter {
    due: Reverse<(SystemTime, u64)>,
    turn: oneshot::Sender<Place>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

/// What runs and what waits, by namespace, under one lock.
#[derive(Default)]
struct Queue {
    running: HashMap<String, usize>,
    waiting: HashMap<String, BinaryHeap<Waiter>>,
    /// The namespaces that wait, in the order their turns come.
    turns: VecDeque<String>,
    /// Counts the waiters that came, to keep their order among equals.
    arrivals: u64,
}

impl Queue {
    fn running_total(&self) -> usize {
        self.running.values().sum()
    }

    /// Namespaces other than `namespace` that run or wait.
    fn busy_others(&self, namespace: &str) -> usize {
        let waiting_only = self
            .waiting
            .keys()
            .filter(|ns| !self.running.contains_key(*ns))
            .count();
        let busy = self.running.len() + waiting_only;
        busy - usize::from(
            self.running.contains_key(namespace) || self.waiting.contains_key(namespace),
        )
    }

    fn may_start(&self, namespace: &str, total: usize) -> bool {
        let own = self.running.get(namespace).copied().unwrap_or(0);
        self.running_total() < total && own < share(total, self.busy_others(namespace))
    }

    /// Takes the next waiter whose namespace may start one more, in turn
    /// (waiters that have gone are dropped on the way); its namespace goes
    /// to the back of the turns if more of it wait.
    fn next_waiter(&mut self, total: usize) -> Option<(String, oneshot::Sender<Place>)> {
        for _ in 0..self.turns.len() {
            let namespace = self.turns.pop_front()?;
            if !self.may_start(&namespace, total) {
                self.turns.push_back(namespace);
                continue;
            }
            let Some(queue) = self.waiting.get_mut(&namespace) else {
                continue;
            };
            let mut waiter = None;
            while let Some(next) = queue.pop() {
                if !next.turn.is_closed() {
                    waiter = Some(next.turn);
                    break;
                }
            }
            if queue.is_empty() {
                self.waiting.remove(&namespace);
            } else {
                self.turns.push_back(namespace.clone());
            }
            if let Some(waiter) = waiter {
                return Some((namespace, waiter));
            }
        }
        None
    }
}

/// The workers' number and their queue, shared with every place.
struct Shared {
    total: usize,
    queue: Mutex<Queue>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn place(self: &Arc<Self>, queue: &mut Queue, namespace: String) -> Place {
        *queue.running.entry(namespace.clone()).or_default() += 1;
        Place {
            shared: self.clone(),
            namespace,
        }
    }

    /// The waiters that may start now, each with its place, to be sent
    /// once the lock is let go.
    fn hand_out(self: &Arc<Self>, queue: &mut Queue) -> Vec<(oneshot::Sender<Place>, Place)> {
        let mut handed = Vec::new();
        while let Some((namespace, waiter)) = queue.next_waiter(self.total) {
            let place = self.place(queue, namespace);
            handed.push((waiter, place));
        }
        handed
    }
}

pub struct Workers {
    shared: Arc<Shared>,
}

/// A running reconcile's place, given back when dropped.
pub struct Place {
    shared: Arc<Shared>,
    namespace: String,
}

/// A reconcile's way to a place: at once, or after waiting its turn.
pub enum Entry {
    Now(Place),
    Waiting(oneshot::Receiver<Place>),
}

impl Entry {
    /// The place, once it is this reconcile's turn. `None` only if the
    /// workers went away (the controllers stop).
    pub async fn place(self) -> Option<Place> {
        match self {
            Entry::Now(place) => Some(place),
            Entry::Waiting(turn) => turn.await.ok(),
        }
    }

    pub fn waits(&self) -> bool {
        matches!(self, Entry::Waiting(_))
    }
}

impl Workers {
    pub fn new(total: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                total: total.max(1),
                queue: Mutex::default(),
            }),
        }
    }

    /// A place for a reconcile in `namespace` now, when the namespace is
    /// within its share and none of it waits already; otherwise a turn in
    /// the queue, ahead of the namespace's reconciles `due` later (when the
    /// client's token expires, or now if it has none).
    pub fn enter(&self, namespace: &str, due: SystemTime) -> Entry {
        let mut queue = self.shared.lock();
        if !queue.waiting.contains_key(namespace) && queue.may_start(namespace, self.shared.total) {
            return Entry::Now(self.shared.place(&mut queue, namespace.to_string()));
        }
        let (sender, turn) = oneshot::channel();
        queue.arrivals += 1;
        let due = Reverse((due, queue.arrivals));
        let waiting = queue.waiting.entry(namespace.to_string()).or_default();
        waiting.push(Waiter { due, turn: sender });
        if waiting.len() == 1 {
            queue.turns.push_back(namespace.to_string());
        }
        Entry::Waiting(turn)
    }

    /// Reconciles waiting for a place.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared
            .lock()
            .waiting
            .values()
            .map(BinaryHeap::len)
            .sum()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Give the place back and hand the freed ones out in turn. A place
        // sent to a waiter that has gone (its reconcile was dropped) comes
        // back here through its own drop, outside this lock.
        let handed = {
            let mut queue = self.shared.lock();
            crate::controller::fairness::servers::count_down(&mut queue.running, &self.namespace);
            self.shared.hand_out(&mut queue)
        };
        for (waiter, place) in handed {
            let _ = waiter.send(place);
        }
    }
}

#[cfg(test)]
#[path = "workers/tests.rs"]
mod tests;
