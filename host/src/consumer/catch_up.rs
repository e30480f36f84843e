//! The initial catch-up, made visible: how many of the grains the log held
//! at startup have been read up to their head, per grain type.
//!
//! A grain type has caught up once its first listing succeeded and every
//! grain that listing named has been applied, or found failing, behind or
//! gone. Until every configured grain type has, the host is not ready
//! (`/readyz` answers 503 with the progress) and a read of a grain the store
//! does not hold yet cannot be told apart from a grain that does not exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The catch-up of one grain type.
#[derive(Debug, Default)]
pub struct TypeCatchUp {
    /// The first listing succeeded, so `grains` is known.
    listed: AtomicBool,
    /// Grains the first listing named.
    grains: AtomicU64,
    /// Of those, how many have caught up.
    caught_up: AtomicU64,
    /// Wakes [`CatchUp::caught_up`] when this type completes.
    completed: Notify,
}

impl TypeCatchUp {
    /// Records the first listing: `grains` grains to catch up.
    pub(crate) fn listed(&self, grains: u64) {
        self.grains.store(grains, Ordering::Relaxed);
        self.all_found();
    }

    /// The grains [`Self::found`] counted are all there are: the count is
    /// complete.
    pub(crate) fn all_found(&self) {
        self.listed.store(true, Ordering::Release);
        if self.is_complete() {
            self.completed.notify_waiters();
        }
    }

    /// `grains` more to catch up, found before the count is complete (a
    /// cold start's scan finds them as it goes; [`Self::all_found`] ends it).
    pub(crate) fn found(&self, grains: u64) {
        self.grains.fetch_add(grains, Ordering::Relaxed);
    }

    /// One of the listed grains has caught up.
    pub(crate) fn grain_caught_up(&self) {
        let now = self.caught_up.fetch_add(1, Ordering::Relaxed) + 1;
        // Only the grain that completes the type wakes the waiters.
        if now == self.grains.load(Ordering::Relaxed) && self.is_complete() {
            self.completed.notify_waiters();
        }
    }

    /// Returns once every listed grain of this type has caught up.
    async fn completed(&self) {
        loop {
            let notified = self.completed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a completion in between wakes it.
            notified.as_mut().enable();
            if self.is_complete() {
                return;
            }
            notified.await;
        }
    }

    /// Where this grain type stands: grains listed and caught up.
    pub fn progress(&self) -> CatchUpProgress {
        let grains = self.grains.load(Ordering::Relaxed);
        CatchUpProgress {
            caught_up: self.caught_up.load(Ordering::Relaxed).min(grains),
            grains,
            complete: self.is_complete(),
        }
    }

    /// Whether every listed grain has caught up.
    pub fn is_complete(&self) -> bool {
        self.listed.load(Ordering::Acquire)
            && self.caught_up.load(Ordering::Relaxed) >= self.grains.load(Ordering::Relaxed)
    }
}

/// The catch-up of every replicated grain type; shared with the HTTP API.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Each grain type's catch-up, by name.
    types: BTreeMap<String, Arc<TypeCatchUp>>,
}

/// Where the whole catch-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpProgress {
    /// Grains (of all replicated types) caught up so far.
    pub caught_up: u64,
    /// Grains the first listings named (of the types listed so far).
    pub grains: u64,
    /// Whether every grain type has caught up.
    pub complete: bool,
}

impl CatchUp {
    /// Progress for these grain types, none caught up yet.
    pub fn new<'a>(grain_types: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            types: grain_types
                .into_iter()
                .map(|t| (t.to_owned(), Arc::default()))
                .collect(),
        }
    }

    /// The progress of one grain type, if it is replicated.
    pub fn grain_type(&self, grain_type: &str) -> Option<&Arc<TypeCatchUp>> {
        self.types.get(grain_type)
    }

    /// Whether `grain_type` is replicated and still catching up.
    pub fn is_catching_up(&self, grain_type: &str) -> bool {
        self.types.get(grain_type).is_some_and(|t| !t.is_complete())
    }

    /// Returns once every grain type has caught up: what an embedder awaits
    /// before its first read. It never returns if the replicator stops
    /// first, so race it with your own shutdown if that can happen.
    pub async fn caught_up(&self) {
        for t in self.types.values() {
            t.completed().await;
        }
    }

    /// Where the catch-up stands, summed over grain types.
    pub fn progress(&self) -> CatchUpProgress {
        let mut progress = CatchUpProgress {
            caught_up: 0,
            grains: 0,
            complete: true,
        };
        for t in self.types.values() {
            let one = t.progress();
            progress.grains += one.grains;
            progress.caught_up += one.caught_up;
            progress.complete &= one.complete;
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_only_once_every_type_listed_and_caught_up() {
        let catch_up = CatchUp::new(["A", "B"]);
        assert!(!catch_up.progress().complete);
        assert!(catch_up.is_catching_up("A"));
        assert!(!catch_up.is_catching_up("Unknown"));

        catch_up.grain_type("A").unwrap().listed(2);
        catch_up.grain_type("B").unwrap().listed(0);
        assert!(!catch_up.is_catching_up("B"));
        assert_eq!(
            catch_up.progress(),
            CatchUpProgress {
                caught_up: 0,
                grains: 2,
                complete: false
            }
        );
        let a = catch_up.grain_type("A").unwrap();
        a.grain_caught_up();
        assert!(catch_up.is_catching_up("A"));
        a.grain_caught_up();
        assert!(!catch_up.is_catching_up("A"));
        assert!(catch_up.progress().complete);
        assert_eq!(catch_up.progress().caught_up, 2);
    }

    #[tokio::test]
    async fn caught_up_waits_for_the_last_grain_of_every_type() {
        let catch_up = Arc::new(CatchUp::new(["A", "B"]));
        let waiter = tokio::spawn({
            let catch_up = Arc::clone(&catch_up);
            async move { catch_up.caught_up().await }
        });
        catch_up.grain_type("A").unwrap().listed(1);
        catch_up.grain_type("B").unwrap().listed(0);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "A still has a grain to catch up");
        catch_up.grain_type("A").unwrap().grain_caught_up();
        waiter.await.unwrap();
        // Once complete, it returns at once.
        catch_up.caught_up().await;
    }
}
