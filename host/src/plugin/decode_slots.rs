//! [`DecodeSlots`]: how many plugin calls may run at once across every
//! plugin, and the drain that waits for them at shutdown.
//!
//! This is the first of the two concurrency caps on plugin calls
//! (ARCHITECTURE.md, "Concurrency caps"): a tokio semaphore taken before a
//! call is handed to the blocking pool, so a burst of snapshots waits here
//! as futures instead of piling up threads. The second, the engine's
//! instance gate, bounds the live Wasm instances inside the calls.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::crash_guard::CrashGuard;

/// A fixed number of call slots, shared by every [`PluginDecoder`](super::PluginDecoder)
/// given a clone.
#[derive(Debug, Clone)]
pub struct DecodeSlots {
    /// The slots; a call holds one permit from before it is handed to the
    /// blocking pool until it returns.
    semaphore: Arc<Semaphore>,
    /// How many slots there are: what [`DecodeSlots::drain`] takes back.
    capacity: u32,
    /// Records which snapshot each call runs, so a snapshot that kills the
    /// host is quarantined after two unclean exits in a row (the daemon's).
    crash_guard: Option<Arc<CrashGuard>>,
}

impl DecodeSlots {
    /// `capacity` slots (at least one, at most 65,536).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 16) as u32;
        Self {
            semaphore: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            crash_guard: None,
        }
    }

    /// Guards every call through these slots with `guard`.
    pub fn with_crash_guard(mut self, guard: Arc<CrashGuard>) -> Self {
        self.crash_guard = Some(guard);
        self
    }

    /// The crash guard, when the slots have one.
    pub fn crash_guard(&self) -> Option<&Arc<CrashGuard>> {
        self.crash_guard.as_ref()
    }

    /// One slot per core: decoding is CPU-bound, so more would only queue
    /// threads.
    pub fn per_core() -> Self {
        Self::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    }

    /// How many calls may run at once.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Waits for a free slot; `None` once the slots are closed by a drain.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore).acquire_owned().await.ok()
    }

    /// A free slot now, without waiting; `None` when every slot is busy or
    /// the slots are closed. For work that must only use spare capacity
    /// (shadow decoding): it never makes a waiting call wait longer than
    /// one call of its own.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore).try_acquire_owned().ok()
    }

    /// Waits up to `timeout` for every running call to finish, then closes
    /// the slots so no new call starts. Returns whether all finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let finished = tokio::time::timeout(timeout, self.semaphore.acquire_many(self.capacity))
            .await
            .is_ok_and(|permits| permits.is_ok());
        self.semaphore.close();
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_running_calls_then_closes() {
        let slots = DecodeSlots::new(2);
        let running = slots.acquire().await.expect("a free slot");
        let drain = tokio::spawn({
            let slots = slots.clone();
            async move { slots.drain(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished(), "the drain waits for the running call");
        drop(running);
        assert!(drain.await.unwrap(), "every call finished in time");
        assert!(
            slots.acquire().await.is_none(),
            "no call starts after a drain"
        );
    }

    #[tokio::test]
    async fn drain_gives_up_after_its_timeout() {
        let slots = DecodeSlots::new(1);
        let _stuck = slots.acquire().await.expect("a free slot");
        assert!(!slots.drain(Duration::from_millis(20)).await);
        assert!(slots.acquire().await.is_none());
    }

    #[tokio::test]
    async fn try_acquire_takes_only_a_free_slot() {
        let slots = DecodeSlots::new(2);
        let first = slots.try_acquire().expect("a free slot");
        let _second = slots.acquire().await.expect("a free slot");
        assert!(slots.try_acquire().is_none(), "every slot is busy");
        drop(first);
        assert!(slots.try_acquire().is_some(), "a slot came back");
    }

    #[test]
    fn capacity_is_at_least_one() {
        assert_eq!(DecodeSlots::new(0).capacity(), 1);
        assert_eq!(DecodeSlots::new(3).capacity(), 3);
        assert!(DecodeSlots::per_core().capacity() >= 1);
    }
}
