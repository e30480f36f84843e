//! Readers waiting for a grain to change (read-your-writes): one
//! [`Notify`] per watched grain, woken by the store when that grain changes.
//!
//! A waiter holds no thread: it is a future parked on its grain's `Notify`.
//! The store pays one atomic load per change while nobody waits, and one
//! map lookup while somebody does, so ten thousand waiters on other grains
//! cost a change nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Grain type → grain key → the grain's waiters' wake-up.
type Registry = HashMap<Box<str>, HashMap<Box<str>, Arc<Notify>>>;

/// The waiters of every grain.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    /// Waiters registered, over all grains (0: `changed` does nothing).
    count: AtomicUsize,
    /// Each watched grain's wake-up.
    registry: Mutex<Registry>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter of one grain; it is unregistered when the guard drops.
    pub(super) fn register(self: &Arc<Self>, grain_type: &str, grain_key: &str) -> Registration {
        let notify = {
            let mut registry = self.lock();
            let by_key = match registry.get_mut(grain_type) {
                Some(by_key) => by_key,
                None => registry.entry(grain_type.into()).or_default(),
            };
            match by_key.get(grain_key) {
                Some(notify) => Arc::clone(notify),
                None => {
                    let notify = Arc::new(Notify::new());
                    by_key.insert(grain_key.into(), Arc::clone(&notify));
                    notify
                }
            }
        };
        self.count.fetch_add(1, Ordering::AcqRel);
        Registration {
            waiters: Arc::clone(self),
            grain_type: grain_type.into(),
            grain_key: grain_key.into(),
            notify,
        }
    }

    /// Wakes the waiters of one grain, if any.
    pub(super) fn changed(&self, grain_type: &str, grain_key: &str) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(notify) = self.lock().get(grain_type).and_then(|m| m.get(grain_key)) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter of a grain type (its grains were removed).
    pub(super) fn type_changed(&self, grain_type: &str) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(by_key) = self.lock().get(grain_type) {
            for notify in by_key.values() {
                notify.notify_waiters();
            }
        }
    }

    /// Waiters registered now.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One registered waiter; dropping it unregisters it.
#[derive(Debug)]
pub(super) struct Registration {
    waiters: Arc<Waiters>,
    grain_type: Box<str>,
    grain_key: Box<str>,
    /// Woken when the grain changes.
    pub(super) notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waiters.count.fetch_sub(1, Ordering::AcqRel);
        let mut registry = self.waiters.lock();
        let Some(by_key) = registry.get_mut(&*self.grain_type) else {
            return;
        };
        // The map's copy and ours: nobody else waits on this grain.
        if by_key.get(&*self.grain_key).is_some_and(|notify| {
            Arc::ptr_eq(notify, &self.notify) && Arc::strong_count(notify) == 2
        }) {
            by_key.remove(&*self.grain_key);
            if by_key.is_empty() {
                registry.remove(&*self.grain_type);
            }
        }
    }
}
