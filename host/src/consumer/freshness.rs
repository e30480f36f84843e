//! How current the replicas are: per grain type, the last moment the host
//! knows every grain of the type was current with the log, and whether the
//! log answers at all.
//!
//! A listing of a grain type (a full one, an incremental change-feed window,
//! or a poll) that started at time T names every grain whose head moved.
//! Once each of those grains has been read up to its head (applied, or
//! found failing or behind), every grain of the type was current as of T:
//! the type is *confirmed* at T. [`Generations`] does this bookkeeping in the
//! scheduler: a grain joins the oldest listing it was outstanding in, and
//! confirmations advance in listing order, so a slow grain holds them back
//! rather than being skipped. The HTTP API turns the confirmation into
//! `Replica-Staleness-Ms`; `/readyz` reads the log's health from the same
//! place instead of querying the log on every probe.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::store::now_millis;

/// Listings tracked while grains are outstanding; past this the newest one
/// absorbs later listings (keeping its older start), so memory stays
/// bounded and confirmations only err on the old side.
const MAX_GENERATIONS: usize = 1024;

/// One grain type's confirmation, shared by its scheduler and the HTTP API.
#[derive(Debug, Default)]
pub struct TypeFreshness {
    /// Unix ms of the start of the newest listing whose grains are all
    /// read (0: none yet).
    confirmed_millis: AtomicI64,
}

impl TypeFreshness {
    /// Unix ms at which every grain of the type was last known current with
    /// the log, if ever.
    pub fn confirmed_millis(&self) -> Option<i64> {
        match self.confirmed_millis.load(Ordering::Acquire) {
            0 => None,
            at => Some(at),
        }
    }

    fn confirm(&self, at_millis: i64) {
        self.confirmed_millis.fetch_max(at_millis, Ordering::AcqRel);
    }
}

/// Every replicated grain type's confirmation and the log's health; shared
/// with the HTTP API.
#[derive(Debug, Default)]
pub struct Freshness {
    /// Grain type → its confirmation.
    types: RwLock<HashMap<String, Arc<TypeFreshness>>>,
    /// Unix ms of the last successful listing of any grain type (0: none).
    log_ok_millis: AtomicI64,
    /// Unix ms since which listings fail, without a success since (0: they
    /// do not).
    log_failing_since_millis: AtomicI64,
}

/// What the host knows of the log's health, from its own listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHealth {
    /// Unix ms of the last successful listing, if any.
    pub last_ok_millis: Option<i64>,
    /// Unix ms since which every listing failed, if the last one did.
    pub failing_since_millis: Option<i64>,
}

impl Freshness {
    /// The confirmation of `grain_type`, created when missing.
    pub(crate) fn register(&self, grain_type: &str) -> Arc<TypeFreshness> {
        let mut types = self.types.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(types.entry(grain_type.to_owned()).or_default())
    }

    /// Forgets a grain type that is no longer replicated.
    pub(crate) fn remove(&self, grain_type: &str) {
        self.types
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(grain_type);
    }

    /// The confirmation of one grain type, if it is replicated.
    pub fn grain_type(&self, grain_type: &str) -> Option<Arc<TypeFreshness>> {
        self.types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(grain_type)
            .cloned()
    }

    /// Whether any grain type is replicated (and so listed).
    pub fn is_listing(&self) -> bool {
        !self
            .types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// A listing succeeded.
    pub(crate) fn log_answered(&self) {
        self.log_ok_millis.store(now_millis(), Ordering::Release);
        self.log_failing_since_millis.store(0, Ordering::Release);
    }

    /// A listing failed.
    pub(crate) fn log_failed(&self) {
        let _ = self.log_failing_since_millis.compare_exchange(
            0,
            now_millis(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The log's health as the listings saw it.
    pub fn log_health(&self) -> LogHealth {
        let nonzero = |v: i64| (v != 0).then_some(v);
        LogHealth {
            last_ok_millis: nonzero(self.log_ok_millis.load(Ordering::Acquire)),
            failing_since_millis: nonzero(self.log_failing_since_millis.load(Ordering::Acquire)),
        }
    }
}

/// A generation id: which listing a grain is outstanding in (0: none).
pub(crate) type Generation = u32;

/// The scheduler's side: listings with grains still outstanding, oldest first.
#[derive(Debug)]
pub(crate) struct Generations {
    /// (generation, the listing's start in Unix ms, grains outstanding).
    open: VecDeque<(Generation, i64, u64)>,
    /// The next generation's id.
    next: Generation,
    /// Where confirmations go.
    freshness: Arc<TypeFreshness>,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Generations {
    /// No listing yet.
    pub(crate) fn new(freshness: Arc<TypeFreshness>) -> Self {
        Self {
            open: VecDeque::new(),
            next: 1,
            freshness,
        }
    }

    /// A listing that started at `started_millis` succeeded: the generation
    /// its outstanding grains join.
    pub(crate) fn listed(&mut self, started_millis: i64) -> Generation {
        if self.open.len() >= MAX_GENERATIONS
            && let Some((generation, _, _)) = self.open.back()
        {
            return *generation;
        }
        let generation = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.open.push_back((generation, started_millis, 0));
        generation
    }

    /// A grain is outstanding in `generation` unless it already is in an
    /// older one (`current`); returns the generation it is outstanding in.
    pub(crate) fn outstanding(
        &mut self,
        current: Generation,
        generation: Generation,
    ) -> Generation {
        if current != 0 {
            return current;
        }
        if let Some(entry) = self.open.iter_mut().find(|(g, _, _)| *g == generation) {
            entry.2 += 1;
            generation
        } else {
            0
        }
    }

    /// A grain outstanding in `generation` has been read up to its head.
    pub(crate) fn settled(&mut self, generation: Generation) {
        if generation == 0 {
            return;
        }
        if let Some(entry) = self.open.iter_mut().find(|(g, _, _)| *g == generation) {
            entry.2 = entry.2.saturating_sub(1);
        }
    }

    /// Confirms every listing, oldest first, whose grains are all read;
    /// called after each listing and each settled grain.
    pub(crate) fn confirm(&mut self) {
        while let Some(&(_, started, 0)) = self.open.front() {
            self.freshness.confirm(started);
            self.open.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_confirmed_once_its_grains_and_every_older_listings_are_read() {
        let freshness = Arc::new(TypeFreshness::default());
        let mut generations = Generations::new(Arc::clone(&freshness));
        let first = generations.listed(1_000);
        let slow = generations.outstanding(0, first);
        let quick = generations.outstanding(0, first);
        generations.confirm();
        assert_eq!(freshness.confirmed_millis(), None);

        let second = generations.listed(2_000);
        // Already outstanding: stays in the older listing.
        assert_eq!(generations.outstanding(slow, second), first);
        let later = generations.outstanding(0, second);
        generations.settled(quick);
        generations.settled(later);
        generations.confirm();
        assert_eq!(
            freshness.confirmed_millis(),
            None,
            "the slow grain holds both"
        );

        generations.settled(slow);
        generations.confirm();
        assert_eq!(freshness.confirmed_millis(), Some(2_000));

        // A listing with nothing new confirms at once.
        generations.listed(3_000);
        generations.confirm();
        assert_eq!(freshness.confirmed_millis(), Some(3_000));
    }

    #[test]
    fn listings_stay_bounded_and_confirm_on_the_old_side() {
        let freshness = Arc::new(TypeFreshness::default());
        let mut generations = Generations::new(Arc::clone(&freshness));
        let stuck = generations.listed(1);
        let stuck = generations.outstanding(0, stuck);
        for at in 2..5_000 {
            generations.listed(at);
        }
        assert!(generations.open.len() <= MAX_GENERATIONS);
        generations.settled(stuck);
        generations.confirm();
        let confirmed = freshness.confirmed_millis().unwrap();
        assert!(confirmed < 5_000 && confirmed >= MAX_GENERATIONS as i64 - 1);
    }

    #[test]
    fn log_health_follows_listings() {
        let freshness = Freshness::default();
        assert_eq!(freshness.log_health().last_ok_millis, None);
        freshness.log_failed();
        let since = freshness.log_health().failing_since_millis.unwrap();
        freshness.log_failed();
        assert_eq!(freshness.log_health().failing_since_millis, Some(since));
        freshness.log_answered();
        assert_eq!(freshness.log_health().failing_since_millis, None);
        assert!(freshness.log_health().last_ok_millis.is_some());
    }
}
