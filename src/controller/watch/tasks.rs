//! Background watches kept by what they watch: each runs as a task whose
//! state (a reflector store, a flag) the map holds, and stops when it leaves
//! the map or when the map is dropped (the end of a leadership term).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::task::AbortHandle;

pub(crate) struct WatchTasks<K, V> {
    running: Mutex<HashMap<K, (V, AbortHandle)>>,
}

impl<K: Hash + Eq, V> WatchTasks<K, V> {
    pub fn new() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the watch of `key`, starting it first if it is not running.
    pub fn read_or_start<R>(
        &self,
        key: K,
        start: impl FnOnce() -> (V, AbortHandle),
        read: impl FnOnce(&V) -> R,
    ) -> R {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (value, _) = running.entry(key).or_insert_with(start);
        read(value)
    }

    /// Like [`WatchTasks::read_or_start`], but starts no watch while `cap`
    /// of those in `key`'s group (by `same_group`) run: `None` then.
    pub fn read_or_start_capped<R>(
        &self,
        key: K,
        same_group: impl Fn(&K) -> bool,
        cap: usize,
        start: impl FnOnce() -> (V, AbortHandle),
        read: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.contains_key(&key) && running.keys().filter(|k| same_group(k)).count() >= cap {
            return None;
        }
        let (value, _) = running.entry(key).or_insert_with(start);
        Some(read(value))
    }

    /// Reads the watch of `key`, if it runs.
    pub fn read<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(key).map(|(value, _)| read(value))
    }

    /// Stops every watch `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|key, (_, task)| {
            let kept = keep(key);
            if !kept {
                task.abort();
            }
            kept
        });
    }
}

impl<K, V> Drop for WatchTasks<K, V> {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, task) in running.values() {
            task.abort();
        }
    }
}
