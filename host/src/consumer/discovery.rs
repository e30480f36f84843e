//! When a grain type's grains are listed, and how: incremental listings
//! ([`ReplicationLog::changes_since`] with a cursor) every poll interval
//! where the backend has a change watermark, a full listing first, as a
//! periodic safety net, and whenever the backend cannot answer
//! incrementally.
//!
//! Full listings cost O(grains). Their pace adapts to what they cost: the
//! next full listing waits at least [`FULL_LISTING_DUTY`] times as long as
//! the last one took, so at a million grains on a backend without a change
//! watermark the log is never busy listing more than a tenth of the time,
//! and the host never falls ever further behind its own polls.
//!
//! Where the backend answers incrementally, the periodic reconcile runs
//! *beside* the incremental polls ([`Discovery::reconcile_due`]), not in
//! their place: a full listing of a million heads takes seconds, and the
//! polls that would have waited for it are what live lag is made of. Its
//! heads are then handed to the table a chunk at a time, so applying a
//! million of them never stalls the scheduler either.
//!
//! [`ReplicationLog::changes_since`]: crate::replication_log::ReplicationLog::changes_since

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::config::ConsumerConfig;
use crate::replication_log::{ChangeCursor, HeadChanges, ReplicationLog};

/// A grain type's first listing (every grain's head), made before its
/// scheduler starts: beside a checkpoint's load, so a warm start does not
/// wait for one and then the other ([`list_first`]).
#[derive(Debug)]
pub struct FirstListing {
    /// The answer of `changes_since` without a cursor.
    pub(crate) changes: HeadChanges,
    /// How long it took.
    pub(crate) took: Duration,
    /// When it started (Unix ms): what it confirms the type as of.
    pub(crate) started_millis: i64,
}

/// The first listing of each of `grain_types`, one after another, to hand
/// to [`crate::consumer::Replicator::with_first_listings`]. A type whose
/// listing fails is left out: its scheduler lists it again.
pub async fn list_first(
    log: &dyn ReplicationLog,
    grain_types: impl IntoIterator<Item = String>,
) -> HashMap<String, FirstListing> {
    let mut listed = HashMap::new();
    for grain_type in grain_types {
        let started = Instant::now();
        let started_millis = crate::store::now_millis();
        match log.changes_since(&grain_type, None).await {
            Ok(changes) => {
                let took = started.elapsed();
                listed.insert(
                    grain_type,
                    FirstListing {
                        changes,
                        took,
                        started_millis,
                    },
                );
            }
            Err(error) => {
                tracing::debug!(grain_type = %grain_type, %error, "the first listing ahead failed; the scheduler lists again");
            }
        }
    }
    listed
}

/// How often discovery lists every grain even when the log can answer
/// incrementally: the safety net against a watermark that missed a change.
pub(crate) const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// A full listing is followed by at least this many times its own duration
/// of waiting before the next one.
pub(crate) const FULL_LISTING_DUTY: u32 = 10;

/// A full listing waits at least this many times its duration before the
/// next periodic reconcile, when listings are incremental in between.
const RECONCILE_DUTY: u32 = 100;

/// The listing cadence of one grain type.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    /// Where the last incremental answer left off.
    cursor: Option<ChangeCursor>,
    /// When the last full listing completed.
    listed_all_at: Option<Instant>,
    /// How long the last full listing took.
    full_cost: Duration,
    /// Consecutive failed listings.
    failures: u32,
}

impl Discovery {
    /// The cursor to list from now; `None` asks for a full listing (the
    /// first one, and every one where the backend has no watermark).
    pub(crate) fn since(&self) -> Option<&ChangeCursor> {
        self.cursor.as_ref()
    }

    /// Whether the periodic full listing is due, to run beside the
    /// incremental ones (only when listings are incremental).
    pub(crate) fn reconcile_due(&self, now: Instant) -> bool {
        let reconcile_every = RECONCILE_EVERY.max(self.full_cost * RECONCILE_DUTY);
        self.cursor.is_some()
            && self
                .listed_all_at
                .is_none_or(|at| now.duration_since(at) >= reconcile_every)
    }

    /// Records a reconcile (a full listing run beside the incremental
    /// ones) that took `took`. Its cursor is not used: the incremental
    /// one is at least as new.
    pub(crate) fn reconciled(&mut self, took: Duration, now: Instant) {
        self.listed_all_at = Some(now);
        self.full_cost = took;
    }

    /// Records an answer that took `took`; returns how long to wait before
    /// the next listing, and how many failures preceded it.
    pub(crate) fn succeeded(
        &mut self,
        changes: &HeadChanges,
        took: Duration,
        config: &ConsumerConfig,
        now: Instant,
    ) -> (Duration, u32) {
        if changes.complete {
            self.listed_all_at = Some(now);
            self.full_cost = took;
        }
        self.cursor = changes.cursor.clone();
        let failures = std::mem::take(&mut self.failures);
        let wait = if changes.complete && self.cursor.is_none() {
            config.poll().max(took * FULL_LISTING_DUTY)
        } else {
            config.poll()
        };
        (wait, failures)
    }

    /// Drops the cursor: the next listing lists every grain.
    pub(crate) fn forget_cursor(&mut self) {
        self.cursor = None;
    }

    /// Records a failed listing; returns the backoff and the failure count.
    pub(crate) fn failed(&mut self, config: &ConsumerConfig) -> (Duration, u32) {
        self.failures += 1;
        (config.backoff(self.failures), self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication_log::CursorState;

    fn changes(complete: bool, cursor: Option<ChangeCursor>) -> HeadChanges {
        HeadChanges {
            heads: Vec::new(),
            complete,
            cursor,
        }
    }

    #[test]
    fn full_listings_without_a_watermark_slow_down_with_their_cost() {
        let config = ConsumerConfig::default();
        let mut discovery = Discovery::default();
        let now = Instant::now();
        assert!(discovery.since().is_none());
        let (wait, _) =
            discovery.succeeded(&changes(true, None), Duration::from_millis(1), &config, now);
        assert_eq!(wait, config.poll());
        let (wait, _) =
            discovery.succeeded(&changes(true, None), Duration::from_secs(2), &config, now);
        assert_eq!(wait, Duration::from_secs(20));
        assert!(discovery.since().is_none());
        assert!(!discovery.reconcile_due(now + Duration::from_secs(3600)));
    }

    #[test]
    fn incremental_listings_poll_and_reconcile_periodically() {
        let config = ConsumerConfig::default();
        let mut discovery = Discovery::default();
        let now = Instant::now();
        let cursor = ChangeCursor(CursorState::Stamp(7));
        let (wait, _) = discovery.succeeded(
            &changes(true, Some(cursor.clone())),
            Duration::from_secs(1),
            &config,
            now,
        );
        assert_eq!(wait, config.poll());
        assert_eq!(discovery.since(), Some(&cursor));
        // A full listing that took 1 s is repeated after 100 s, not 60 s,
        // beside the incremental listings, which go on from the cursor.
        assert!(!discovery.reconcile_due(now + Duration::from_secs(61)));
        assert!(discovery.reconcile_due(now + Duration::from_secs(101)));
        assert_eq!(discovery.since(), Some(&cursor));
        let later = now + Duration::from_secs(101);
        discovery.reconciled(Duration::from_secs(2), later);
        assert!(!discovery.reconcile_due(later + Duration::from_secs(101)));
        assert!(discovery.reconcile_due(later + Duration::from_secs(201)));
        assert_eq!(discovery.since(), Some(&cursor));
    }

    #[test]
    fn failures_back_off_and_are_reported_on_recovery() {
        let config = ConsumerConfig::default();
        let mut discovery = Discovery::default();
        let (first, n) = discovery.failed(&config);
        assert!(n == 1 && first <= config.backoff_ceiling(1));
        let (second, n) = discovery.failed(&config);
        assert!(n == 2 && second <= config.backoff_ceiling(2));
        let (_, failures) = discovery.succeeded(
            &changes(true, None),
            Duration::ZERO,
            &config,
            Instant::now(),
        );
        assert_eq!(failures, 2);
        assert_eq!(discovery.failed(&config).1, 1);
    }
}
