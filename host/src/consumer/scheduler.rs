//! One grain type's scheduler: every grain is a compact entry in a table,
//! not a task. One driver task per grain type owns the table and decides
//! which grain needs a step; a bounded pool of workers (a semaphore shared by
//! every grain type) runs the steps.
//!
//! - **Discovery** ([`super::discovery`]) lists the type's grains every poll
//!   interval; a new grain gets an entry, a known grain whose head moved
//!   becomes ready.
//! - **Catch-up.** The first listing names the grains to catch up
//!   ([`super::catch_up`]). They are then read in bulk: the log's ordered
//!   scan ([`ReplicationLog::scan`]) hands each grain all its rows, a page at
//!   a time, and the next page is fetched only once the ready queue has
//!   drained below a page, so catch-up memory stays bounded. A grain the scan
//!   cannot hand over whole (or a backend without a scan) is read by itself.
//!   Grains handed over whole do not go through the ready queue: a page's
//!   grains are one unit of work ([`super::bulk`]) that decodes their
//!   snapshots together in batches; at most [`BULKS_IN_FLIGHT`] pages are
//!   worked on while the next one is fetched.
//! - **Ready queue.** FIFO of grains with a step due; a grain is in it at
//!   most once, and at most one step of a grain runs at a time, so each
//!   grain's entries are handled in order and no sequence is applied twice.
//! - **Timers.** Retries after a read error or a snapshot that did not decode
//!   sit in a min-heap until due.
//!
//! Longer than most modules on purpose: the scheduler's loop owns its table,
//! ready queue and timers, and each turn touches all three; split apart, the
//! invariants between them (a grain is in at most one of queue, timer or
//! worker) would span files. The grain step itself is `grain.rs`, the verify
//! slice `scheduler/verify.rs`.
//!
//! [`ReplicationLog::scan`]: crate::replication_log::ReplicationLog::scan

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::bulk;
use super::catch_up::TypeCatchUp;
use super::discovery::{Discovery, FirstListing};
use super::freshness::{Freshness, Generation, Generations};
use super::grain::{
    GrainProgress, Progress, Step, StepOutcome, Stopped, TypeContext, panic_message,
};
use super::metrics::ConsumerMetrics;
use super::shard::Shard;
use crate::replication_log::{ChangeCursor, GrainHead, HeadChanges, LogError, LogRecord, ScanPage};
use crate::shutdown::StopSignal;
use crate::store::now_millis;

mod key_index;
mod verify;

use key_index::KeyIndex;

/// One grain's entry in the table.
struct Slot {
    /// The grain's key.
    key: Arc<str>,
    /// The grain's newest sequence in the log, as discovery last saw it.
    head: u64,
    /// Where the grain stands.
    progress: Progress,
    /// The grain's rows from the catch-up scan, until its first step.
    prefetched: Option<Vec<LogRecord>>,
    /// The retry time a timer is armed for, if any.
    wake_at: Option<Instant>,
    /// In the ready queue.
    queued: bool,
    /// Named by the first listing and not caught up yet.
    startup: bool,
    /// Waiting for the catch-up scan to reach it.
    awaiting_scan: bool,
    /// The oldest listing in which it is outstanding (0: read up to its head).
    generation: Generation,
}

/// The grains of one type and what is due.
#[derive(Default)]
struct Table {
    /// One compact entry per grain, addressed by index.
    slots: Vec<Slot>,
    /// A grain key's slot index.
    index: KeyIndex,
    /// Grains with a step due, and since when.
    ready: VecDeque<(u32, Instant)>,
    /// Armed retry timers (lazily cancelled: checked against `wake_at`).
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Listings whose grains are not all read yet.
    generations: Generations,
    /// A cold start's catch-up while the scan, not a listing, finds the
    /// grains (see [`Finding`]).
    finding: Option<Finding>,
}

impl Table {
    /// The slot that holds `key`, if any.
    fn slot_of(&self, key: &str) -> Option<u32> {
        self.index.get(key, |at| &self.slots[at as usize].key)
    }
}

/// A cold start (the store holds none of the type's replicas): instead of
/// listing a million heads and then scanning them, the scheduler takes the
/// log's change cursor ([`ReplicationLog::change_cursor`]), scans, and makes
/// each scanned grain a startup grain as it comes. The incremental
/// listings go on from the cursor, so nothing appended meanwhile is
/// missed. Should the scan fail, one full listing finds the rest.
///
/// [`ReplicationLog::change_cursor`]: crate::replication_log::ReplicationLog::change_cursor
struct Finding {
    /// The listing generation the found grains are outstanding in; held
    /// open (one extra count) until the finding ends.
    generation: Generation,
    /// The scan failed: the next full listing finds the rest.
    by_listing: bool,
}

/// How a step ended, as the worker reports it.
enum Finished {
    Done(StepOutcome),
    Stopped,
    Panicked(String),
}

/// A listing under way: its answer, how long it took, and when it started
/// (Unix ms: what the listing confirms the type as of).
type Listing = Pin<Box<dyn Future<Output = (Result<HeadChanges, LogError>, Duration, i64)> + Send>>;
/// A catch-up page being fetched: the key it starts after, and the answer.
type Scanning =
    Pin<Box<dyn Future<Output = (Option<String>, Result<Option<ScanPage>, LogError>)> + Send>>;

/// Catch-up pages worked on at once, besides the one being fetched: enough
/// that both cores have work while the scheduler's one task takes the next
/// page, few enough to bound the rows held (four pages of `scan_rows`).
/// Raised from two in issue 20's fourth round, within that round's other
/// changes; its own effect was not measured apart.
const BULKS_IN_FLIGHT: usize = 4;

/// The scan is skipped when fewer than one grain in this many has
/// anything to catch up (a start from a checkpoint): each is read by itself.
const FEW_TO_SCAN: usize = 20;

/// Heads of a periodic full listing handed to the table per turn of the
/// scheduler's loop, so a million of them never hold up the live path.
const RECONCILE_CHUNK: usize = 4096;

/// Finished grains taken back into the table per turn of the scheduler's
/// loop: a turn (its timers, gauges and `select!`) costs more than a
/// grain, so a catch-up takes them in runs, bounded so the live path
/// still gets its turn.
const DRAIN_PER_TURN: usize = 1024;

/// How often a failed catch-up page is tried again before the remaining
/// grains are read one by one.
const SCAN_RETRIES: u32 = 3;

/// Runs one grain type: discovery, catch-up, the ready queue and its steps.
pub(crate) struct Scheduler {
    /// What every grain of the type shares.
    pub(crate) ctx: Arc<TypeContext>,
    /// The worker pool: one permit per running step, shared by all types.
    pub(crate) workers: Arc<Semaphore>,
    /// The type's catch-up progress, read by `/readyz`.
    pub(crate) catch_up: Arc<TypeCatchUp>,
    /// Where the scheduler's gauges go.
    pub(crate) metrics: Arc<ConsumerMetrics>,
    /// Rows per catch-up scan page.
    pub(crate) scan_rows: usize,
    /// The grains this host replicates, when sharded.
    pub(crate) shard: Option<Shard>,
    /// Where confirmations and the log's health go.
    pub(crate) freshness: Arc<Freshness>,
    /// The first listing, when it was made ahead (beside a checkpoint's
    /// load): used instead of listing again.
    pub(crate) first_listing: Option<FirstListing>,
}

impl Scheduler {
    /// Runs until shutdown, then waits for its running steps to stop.
    pub(crate) async fn run(mut self, mut shutdown: StopSignal) {
        let mut table = Table {
            generations: Generations::new(self.freshness.register(&self.ctx.grain_type)),
            ..Table::default()
        };
        let mut discovery = Discovery::default();
        let ahead = self.first_listing.take();
        // A cold start finds its grains through the scan, after taking the
        // log's cursor (an answer without heads); anything else lists first.
        let mut cursor_first = ahead.is_none() && !self.ctx.store.holds_type(&self.ctx.grain_type);
        let mut listing: Option<Listing> = ahead.map(|ahead| {
            let FirstListing {
                changes,
                took,
                started_millis,
            } = ahead;
            Box::pin(std::future::ready((Ok(changes), took, started_millis))) as Listing
        });
        if cursor_first {
            listing = Some(self.take_cursor());
        }
        // The periodic full listing, beside the incremental ones, and the
        // heads it found that the table has yet to see.
        let mut reconciling: Option<Listing> = None;
        let mut reconciled: std::vec::IntoIter<GrainHead> = Vec::new().into_iter();
        let mut next_listing = Instant::now();
        let mut listed_once = false;
        let mut scanning: Option<Scanning> = None;
        // The page to fetch next: `Some(None)` for the first one.
        let mut scan_next: Option<Option<String>> = None;
        // After a failed page: when to try it again, and how many failed.
        let mut scan_not_before = Instant::now();
        let mut scan_failures = 0u32;
        let mut steps: JoinSet<(u32, Finished)> = JoinSet::new();
        let mut bulks: JoinSet<()> = JoinSet::new();
        // What the bulk work finishes, grain by grain, as it goes.
        let (bulk_done, mut bulk_finished) = mpsc::unbounded_channel::<Vec<(u32, Finished)>>();
        // Anti-entropy: the slice being read, and when the next is due.
        let mut anti_entropy = verify::AntiEntropy::new(self.ctx.config.verify, Instant::now());

        loop {
            let now = Instant::now();
            if listing.is_none() && now >= next_listing {
                listing = Some(self.list(discovery.since().cloned()));
            }
            if reconciling.is_none() && reconciled.len() == 0 && discovery.reconcile_due(now) {
                reconciling = Some(self.list(None));
            }
            // The safety net's heads join no listing's generation: the
            // incremental listings beside it confirm the type's freshness.
            for head in reconciled.by_ref().take(RECONCILE_CHUNK) {
                self.update(
                    &mut table,
                    head.grain_key,
                    head.latest_sequence,
                    false,
                    now,
                    0,
                );
            }
            if scanning.is_none()
                && table.ready.len() < self.scan_rows
                && bulks.len() < BULKS_IN_FLIGHT
                && now >= scan_not_before
                && let Some(after) = scan_next.take()
            {
                scanning = Some(self.scan(after));
            }
            let scan_waits = scanning.is_none() && scan_next.is_some() && now < scan_not_before;
            while !table.ready.is_empty() {
                let Ok(permit) = Arc::clone(&self.workers).try_acquire_owned() else {
                    break;
                };
                self.dispatch(&mut table, &mut steps, permit, &shutdown);
            }
            table.generations.confirm();
            self.publish_gauges(&table, now);
            let next_timer = table.timers.peek().map(|Reverse((at, _))| *at);
            let verify_due = anti_entropy.due_at();

            tokio::select! {
                () = shutdown.stopped() => break,
                Some(joined) = steps.join_next() => {
                    // And every other step already done: one turn of the
                    // loop per wake-up, not per grain.
                    let mut joined = Some(joined);
                    let now = Instant::now();
                    for _ in 0..DRAIN_PER_TURN {
                        match joined.take().or_else(|| steps.try_join_next()) {
                            Some(Ok((index, finished))) => self.finished(&mut table, index, finished, now),
                            Some(Err(error)) => tracing::error!(grain_type = %self.ctx.grain_type, %error, "a grain step failed"),
                            None => break,
                        }
                    }
                }
                Some(finished) = bulk_finished.recv() => {
                    // A decoder call's grains at a time, and the next
                    // calls' already waiting, up to a bound per turn.
                    let mut taken = 0;
                    let mut next = Some(finished);
                    let now = Instant::now();
                    while let Some(finished) = next.take() {
                        taken += finished.len();
                        for (index, finished) in finished {
                            self.finished(&mut table, index, finished, now);
                        }
                        if taken < DRAIN_PER_TURN {
                            next = bulk_finished.try_recv().ok();
                        }
                    }
                }
                Some(joined) = bulks.join_next() => {
                    if let Err(error) = joined {
                        tracing::error!(grain_type = %self.ctx.grain_type, %error, "a catch-up page failed");
                    }
                }
                (listed, took, started) = async { listing.as_mut().expect("guarded").await }, if listing.is_some() => {
                    listing = None;
                    let now = Instant::now();
                    match listed {
                        // The cursor of a cold start: a backend without one
                        // is listed in full instead.
                        Ok(changes) if cursor_first => {
                            cursor_first = false;
                            if changes.cursor.is_none() {
                                listing = Some(self.list(None));
                                continue;
                            }
                            self.freshness.log_answered();
                            let generation = table.generations.listed(started);
                            let (wait, _) = discovery.succeeded(&changes, took, &self.ctx.config, now);
                            table.finding = Some(Finding {
                                generation: table.generations.outstanding(0, generation),
                                by_listing: false,
                            });
                            listed_once = true;
                            scan_next = Some(None);
                            next_listing = now + wait;
                            tracing::info!(
                                grain_type = %self.ctx.grain_type,
                                "catching up: a cold start, the scan finds the grains"
                            );
                        }
                        Ok(changes) => {
                            self.freshness.log_answered();
                            let generation = table.generations.listed(started);
                            let (wait, failures) = discovery.succeeded(&changes, took, &self.ctx.config, now);
                            if failures > 0 {
                                tracing::info!(grain_type = %self.ctx.grain_type, failures, "listing grains again");
                            }
                            let first = !listed_once;
                            if first {
                                table.slots.reserve(changes.heads.len());
                                table.index.reserve(changes.heads.len());
                            }
                            let complete = changes.complete;
                            for head in changes.heads {
                                self.update(&mut table, head.grain_key, head.latest_sequence, first, now, generation);
                            }
                            // After a failed scan, a full listing found the rest.
                            if complete && table.finding.as_ref().is_some_and(|f| f.by_listing) {
                                self.found_all(&mut table);
                            }
                            if first {
                                listed_once = true;
                                let startup = table.slots.len() as u64;
                                self.catch_up.listed(startup);
                                let awaiting = table.slots.iter().filter(|s| s.awaiting_scan).count();
                                tracing::info!(
                                    grain_type = %self.ctx.grain_type,
                                    grains = startup,
                                    to_read = awaiting,
                                    listing_ms = took.as_millis() as u64,
                                    "catching up"
                                );
                                if awaiting * FEW_TO_SCAN < table.slots.len() {
                                    // Few grains changed since a checkpoint:
                                    // reading each is cheaper than the scan.
                                    self.scan_done(&mut table, "few grains to catch up", true);
                                } else {
                                    scan_next = Some(None);
                                }
                            }
                            next_listing = now + wait;
                        }
                        Err(error) => {
                            // A cold start's cursor that failed: list instead.
                            cursor_first = false;
                            self.freshness.log_failed();
                            let (delay, failures) = discovery.failed(&self.ctx.config);
                            self.ctx.counters.discovery_error();
                            tracing::warn!(
                                grain_type = %self.ctx.grain_type,
                                %error,
                                failures,
                                retry_in_ms = delay.as_millis() as u64,
                                "failed to list the grain type's grains; retrying"
                            );
                            next_listing = now + delay;
                        }
                    }
                }
                (after, page) = async { scanning.as_mut().expect("guarded").await }, if scanning.is_some() => {
                    scanning = None;
                    match page {
                        Ok(Some(page)) => {
                            scan_failures = 0;
                            let next = page.next_after.clone();
                            let whole = self.take_page(&mut table, page);
                            if !whole.is_empty() {
                                self.spawn_bulk(&mut bulks, whole, &bulk_done, &shutdown);
                            }
                            match next {
                                Some(after) => scan_next = Some(Some(after)),
                                None => {
                                    self.scan_done(&mut table, "the scan is complete", true);
                                }
                            }
                        }
                        Ok(None) => {
                            if self.scan_done(&mut table, "the log has no bulk scan", false) {
                                listing = Some(self.list_all(&mut discovery));
                            }
                        }
                        Err(error) if scan_failures < SCAN_RETRIES => {
                            scan_failures += 1;
                            self.ctx.counters.read_error();
                            let delay = self.ctx.config.backoff(scan_failures);
                            tracing::warn!(
                                grain_type = %self.ctx.grain_type,
                                %error,
                                failures = scan_failures,
                                retry_in_ms = delay.as_millis() as u64,
                                "a catch-up scan page failed; retrying"
                            );
                            scan_next = Some(after);
                            scan_not_before = Instant::now() + delay;
                        }
                        Err(error) => {
                            self.ctx.counters.read_error();
                            tracing::warn!(
                                grain_type = %self.ctx.grain_type,
                                %error,
                                "the catch-up scan keeps failing; reading the remaining grains one by one"
                            );
                            if self.scan_done(&mut table, "the scan failed", false) {
                                listing = Some(self.list_all(&mut discovery));
                            }
                        }
                    }
                }
                (listed, took, _) = async { reconciling.as_mut().expect("guarded").await }, if reconciling.is_some() => {
                    reconciling = None;
                    match listed {
                        Ok(changes) => {
                            discovery.reconciled(took, Instant::now());
                            tracing::debug!(
                                grain_type = %self.ctx.grain_type,
                                heads = changes.heads.len(),
                                took_ms = took.as_millis() as u64,
                                "periodic full listing"
                            );
                            reconciled = changes.heads.into_iter();
                        }
                        Err(error) => {
                            // Tried again at the next interval; the
                            // incremental listings go on meanwhile.
                            discovery.reconciled(took, Instant::now());
                            self.ctx.counters.discovery_error();
                            tracing::warn!(grain_type = %self.ctx.grain_type, %error, "the periodic full listing failed");
                        }
                    }
                }
                () = tokio::task::yield_now(), if reconciled.len() > 0 => {}
                () = tokio::time::sleep_until(scan_not_before), if scan_waits => {}
                permit = Arc::clone(&self.workers).acquire_owned(), if !table.ready.is_empty() => {
                    if let Ok(permit) = permit {
                        self.dispatch(&mut table, &mut steps, permit, &shutdown);
                    }
                }
                () = sleep_until(next_timer), if next_timer.is_some() => {
                    self.fire_timers(&mut table, Instant::now());
                }
                () = tokio::time::sleep_until(next_listing), if listing.is_none() => {}
                () = sleep_until(verify_due), if verify_due.is_some() => {
                    anti_entropy.start(&self.ctx, self.catch_up.is_complete(), Instant::now());
                }
                read = anti_entropy.read(), if anti_entropy.is_reading() => {
                    if let Some(heads) = anti_entropy.finished(&self.ctx, read) {
                        self.check_slice(&mut table, heads);
                    }
                }
            }
        }
        // Steps watch the same signal and stop at once.
        while steps.join_next().await.is_some() {}
        while bulks.join_next().await.is_some() {}
        self.ctx.counters.set_queue(0, 0);
        tracing::debug!(grain_type = %self.ctx.grain_type, "grain type's consumers stopped");
    }

    /// Starts a full listing at once, in place of any listing under way:
    /// an incremental answer still out would bring back the cursor it
    /// drops, and the full listing that must find a cold start's grains
    /// after a failed scan would never come.
    fn list_all(&self, discovery: &mut Discovery) -> Listing {
        discovery.forget_cursor();
        self.list(None)
    }

    /// Starts a listing from `cursor` (a full one when `None`).
    fn list(&self, cursor: Option<ChangeCursor>) -> Listing {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            let started = Instant::now();
            let started_millis = now_millis();
            let listed = ctx
                .log
                .changes_since(&ctx.grain_type, cursor.as_ref())
                .await;
            (listed, started.elapsed(), started_millis)
        })
    }

    /// Takes the log's change cursor, as a listing without heads that
    /// stands for every grain (the scan lists them): a cold start's first
    /// answer. Its cursor is `None` when the backend has none.
    fn take_cursor(&self) -> Listing {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            let started = Instant::now();
            let started_millis = now_millis();
            let cursor = ctx.log.change_cursor(&ctx.grain_type).await;
            let answer = cursor.map(|cursor| HeadChanges {
                heads: Vec::new(),
                complete: true,
                cursor,
            });
            (answer, started.elapsed(), started_millis)
        })
    }

    /// Starts fetching the catch-up scan's page after `after`.
    fn scan(&self, after: Option<String>) -> Scanning {
        let ctx = Arc::clone(&self.ctx);
        let rows = self.scan_rows;
        Box::pin(async move {
            let page = ctx.log.scan(&ctx.grain_type, after.as_deref(), rows).await;
            (after, page)
        })
    }

    /// A grain's head from discovery (the listing of `generation`): a new
    /// entry, or a known grain that may now be due. Grains of other shards
    /// are ignored.
    fn update(
        &self,
        table: &mut Table,
        key: String,
        head: u64,
        startup: bool,
        now: Instant,
        generation: Generation,
    ) {
        if let Some(index) = table.slot_of(&key) {
            let slot = &mut table.slots[index as usize];
            if head > slot.head {
                slot.head = head;
                slot.generation = table.generations.outstanding(slot.generation, generation);
                self.consider(table, index, now);
            }
            return;
        }
        if table.finding.is_some() {
            // A cold start's grain listed before the scan handed it over
            // (it moved meanwhile, or lies behind the scan's position): a
            // startup grain all the same, read by itself.
            if let Some(index) = self.found(table, key, head, false) {
                self.consider(table, index, now);
            }
            return;
        }
        if self
            .shard
            .is_some_and(|shard| !shard.owns(&self.ctx.grain_type, &key))
        {
            return;
        }
        let key: Arc<str> = key.into();
        let progress = GrainProgress::new(&self.ctx, &key);
        // A re-decode takes the failing grains first, each read by itself,
        // ahead of the bulk scan that brings the rest. A grain the store
        // already holds up to its head (from a checkpoint) has nothing to
        // catch up: it is not waited for.
        let first =
            startup && ((self.ctx.redecode && progress.is_failing()) || !progress.due(head, now));
        let index = u32::try_from(table.slots.len()).expect("fewer than 2^32 grains per type");
        table.slots.push(Slot {
            key: Arc::clone(&key),
            head,
            progress: Progress::keep(progress),
            prefetched: None,
            wake_at: None,
            queued: false,
            startup,
            awaiting_scan: startup && !first,
            generation: table.generations.outstanding(0, generation),
        });
        table.index.insert(&key, index);
        self.ctx.counters.grain_discovered();
        tracing::debug!(
            grain_type = %self.ctx.grain_type,
            grain_key = %key,
            sequence = head,
            "discovered grain"
        );
        if !startup || first {
            self.consider(table, index, now);
        }
    }

    /// Queues an idle grain whose step is due, or arms its retry timer.
    fn consider(&self, table: &mut Table, index: u32, now: Instant) {
        let slot = &mut table.slots[index as usize];
        if slot.queued || slot.awaiting_scan {
            return;
        }
        let progress = match &slot.progress {
            Progress::Running => return, // considered again when it ends
            Progress::Unseen | Progress::Settled(_) => {
                if slot.head > slot.progress.settled_at().unwrap_or(0) {
                    slot.queued = true;
                    table.ready.push_back((index, now));
                    return;
                }
                // Read up to its head, nothing to retry.
                if slot.startup {
                    slot.startup = false;
                    self.catch_up.grain_caught_up();
                }
                table
                    .generations
                    .settled(std::mem::take(&mut slot.generation));
                return;
            }
            Progress::Kept(progress) => progress,
        };
        if progress.due(slot.head, now) {
            slot.queued = true;
            table.ready.push_back((index, now));
            return;
        }
        // Read up to its head, or found failing there (a decode retry
        // waits for nothing new from the log).
        let settled = progress.wake_at().is_none() || progress.is_failing();
        if let Some(at) = progress.wake_at() {
            if slot.wake_at != Some(at) {
                slot.wake_at = Some(at);
                table.timers.push(Reverse((at, index)));
            }
        } else if slot.startup {
            // Nothing to read and nothing to retry: caught up already.
            slot.startup = false;
            self.catch_up.grain_caught_up();
        }
        if settled {
            table
                .generations
                .settled(std::mem::take(&mut slot.generation));
        }
    }

    /// Hands the next ready grain to a worker.
    fn dispatch(
        &self,
        table: &mut Table,
        steps: &mut JoinSet<(u32, Finished)>,
        permit: OwnedSemaphorePermit,
        shutdown: &StopSignal,
    ) {
        let Some((index, _)) = table.ready.pop_front() else {
            return;
        };
        let slot = &mut table.slots[index as usize];
        slot.queued = false;
        slot.wake_at = None;
        let Some(progress) = slot.progress.take(&self.ctx, &slot.key) else {
            return;
        };
        let step = Step {
            ctx: Arc::clone(&self.ctx),
            grain_key: Arc::clone(&slot.key),
            progress,
            head: slot.head,
            prefetched: slot.prefetched.take(),
        };
        let mut shutdown = shutdown.clone();
        let metrics = Arc::clone(&self.metrics);
        metrics.worker_started();
        steps.spawn(async move {
            let _permit = permit;
            let finished = match AssertUnwindSafe(step.run(&mut shutdown))
                .catch_unwind()
                .await
            {
                Ok(Ok(outcome)) => Finished::Done(outcome),
                Ok(Err(Stopped)) => Finished::Stopped,
                Err(panic) => Finished::Panicked(panic_message(panic.as_ref()).to_owned()),
            };
            metrics.worker_finished();
            (index, finished)
        });
    }

    /// Takes a step's outcome back into the table.
    fn finished(&self, table: &mut Table, index: u32, finished: Finished, now: Instant) {
        let slot = &mut table.slots[index as usize];
        match finished {
            Finished::Done(outcome) => {
                slot.progress = outcome.progress;
                if outcome.caught_up && slot.startup {
                    slot.startup = false;
                    self.catch_up.grain_caught_up();
                }
                self.consider(table, index, now);
            }
            Finished::Stopped => {}
            Finished::Panicked(message) => {
                tracing::error!(
                    grain_type = %self.ctx.grain_type,
                    grain_key = %slot.key,
                    panic = %message,
                    "grain consumer panicked; restarting it at the next poll"
                );
                slot.progress = Progress::keep(GrainProgress::new(&self.ctx, &slot.key));
                let at = now + self.ctx.config.poll();
                slot.wake_at = Some(at);
                table.timers.push(Reverse((at, index)));
            }
        }
    }

    /// Gives the scanned grains their rows: those handed over whole become
    /// steps of the page's bulk work (returned); the rest are considered as
    /// usual (read by themselves).
    fn take_page(&self, table: &mut Table, page: ScanPage) -> Vec<bulk::Handed> {
        let now = Instant::now();
        let mut whole = Vec::new();
        for grain in page.grains {
            let index = match table.slot_of(&grain.grain_key) {
                Some(index) => index,
                // A cold start's grain, found by the scan.
                None if table.finding.is_some() => {
                    match self.found(table, grain.grain_key, grain.head, true) {
                        Some(index) => index,
                        None => continue, // another shard's
                    }
                }
                None => continue, // new since the first listing: discovery finds it
            };
            let slot = &mut table.slots[index as usize];
            if !slot.awaiting_scan {
                continue;
            }
            slot.awaiting_scan = false;
            let takes = slot.progress.takes_prefetched();
            if grain.complete && takes && !grain.records.is_empty() && !slot.queued {
                slot.head = slot.head.max(grain.head);
                slot.wake_at = None;
                whole.push(bulk::Handed {
                    index,
                    grain_key: Arc::clone(&slot.key),
                    progress: std::mem::replace(&mut slot.progress, Progress::Running),
                    head: slot.head,
                    records: grain.records,
                });
            } else {
                self.consider(table, index, now);
            }
        }
        whole
    }

    /// Starts the bulk work of one page's whole grains, on one worker; the
    /// grains come back through `done` as soon as each decoder call's are
    /// finished.
    fn spawn_bulk(
        &self,
        bulks: &mut JoinSet<()>,
        handed: Vec<bulk::Handed>,
        done: &mpsc::UnboundedSender<Vec<(u32, Finished)>>,
        shutdown: &StopSignal,
    ) {
        let ctx = Arc::clone(&self.ctx);
        let workers = Arc::clone(&self.workers);
        let metrics = Arc::clone(&self.metrics);
        let mut shutdown = shutdown.clone();
        let done = done.clone();
        bulks.spawn(async move {
            let mut all: Vec<u32> = handed.iter().map(|grain| grain.index).collect();
            let mut delivered: Vec<u32> = Vec::with_capacity(all.len());
            let permit = tokio::select! {
                () = shutdown.stopped() => None,
                permit = workers.acquire_owned() => permit.ok(),
            };
            let outcome = match permit {
                None => Ok(Err(Stopped)),
                Some(_permit) => {
                    metrics.worker_started();
                    let mut deliver = |outcomes: Vec<(u32, StepOutcome)>| {
                        delivered.extend(outcomes.iter().map(|(index, _)| *index));
                        let finished = outcomes
                            .into_iter()
                            .map(|(index, outcome)| (index, Finished::Done(outcome)))
                            .collect();
                        let _ = done.send(finished);
                    };
                    let outcome =
                        AssertUnwindSafe(bulk::run(ctx, handed, &mut shutdown, &mut deliver))
                            .catch_unwind()
                            .await;
                    metrics.worker_finished();
                    outcome
                }
            };
            if delivered.len() == all.len() {
                return;
            }
            // What was not delivered: stopped, or lost to a panic.
            let message = match &outcome {
                Err(panic) => Some(panic_message(panic.as_ref()).to_owned()),
                Ok(_) => None,
            };
            all.sort_unstable();
            delivered.sort_unstable();
            let left = all
                .into_iter()
                .filter(|index| delivered.binary_search(index).is_err())
                .map(|index| {
                    let finished = match &message {
                        Some(message) => Finished::Panicked(message.clone()),
                        None => Finished::Stopped,
                    };
                    (index, finished)
                })
                .collect();
            let _ = done.send(left);
        });
    }

    /// Ends the catch-up scan: grains it did not hand over are read one by
    /// one. On a cold start the scan was finding the grains: when it did
    /// not end `complete`, returns true, and a full listing must find the
    /// rest.
    fn scan_done(&self, table: &mut Table, why: &str, complete: bool) -> bool {
        let now = Instant::now();
        let mut left = 0u64;
        for index in 0..table.slots.len() as u32 {
            let slot = &mut table.slots[index as usize];
            if slot.awaiting_scan {
                slot.awaiting_scan = false;
                left += 1;
                self.consider(table, index, now);
            }
        }
        tracing::debug!(grain_type = %self.ctx.grain_type, left, why, "catch-up scan ended");
        match &mut table.finding {
            None => false,
            Some(_) if complete => {
                self.found_all(table);
                false
            }
            Some(finding) => {
                finding.by_listing = true;
                true
            }
        }
    }

    /// A grain a cold start found (by its scan, `scanned`, or by a listing
    /// before the scan reached it) that the table does not hold: a new
    /// startup grain, outstanding in the finding's generation. `None` for
    /// another shard's grain, or when nothing is being found.
    fn found(&self, table: &mut Table, key: String, head: u64, scanned: bool) -> Option<u32> {
        let Table {
            slots,
            index,
            generations,
            finding,
            ..
        } = table;
        let finding = finding.as_mut()?;
        if self
            .shard
            .is_some_and(|shard| !shard.owns(&self.ctx.grain_type, &key))
        {
            return None;
        }
        self.catch_up.found(1);
        self.ctx.counters.grain_discovered();
        let key: Arc<str> = key.into();
        let at = u32::try_from(slots.len()).expect("fewer than 2^32 grains per type");
        slots.push(Slot {
            key: Arc::clone(&key),
            head,
            // The store holds nothing of the type but what this table
            // applies: a new grain starts from nothing.
            progress: Progress::Unseen,
            prefetched: None,
            wake_at: None,
            queued: false,
            startup: true,
            awaiting_scan: scanned,
            generation: generations.outstanding(0, finding.generation),
        });
        index.insert(&key, at);
        Some(at)
    }

    /// A cold start has found every grain: their number is the catch-up's,
    /// and the finding's generation may be confirmed once they are read.
    fn found_all(&self, table: &mut Table) {
        if let Some(finding) = table.finding.take() {
            table.generations.settled(finding.generation);
            self.catch_up.all_found();
            tracing::info!(
                grain_type = %self.ctx.grain_type,
                grains = self.catch_up.progress().grains,
                "catching up: every grain found"
            );
        }
    }

    /// Queues the grains whose retry time has come.
    fn fire_timers(&self, table: &mut Table, now: Instant) {
        while let Some(&Reverse((at, index))) = table.timers.peek() {
            if at > now {
                break;
            }
            table.timers.pop();
            let slot = &mut table.slots[index as usize];
            if slot.wake_at == Some(at) {
                slot.wake_at = None;
                self.consider(table, index, now);
            }
        }
    }

    /// Publishes the queue depth and the age of the oldest ready grain.
    fn publish_gauges(&self, table: &Table, now: Instant) {
        let oldest = table
            .ready
            .front()
            .map_or(Duration::ZERO, |(_, since)| now.duration_since(*since));
        self.ctx
            .counters
            .set_queue(table.ready.len() as u64, oldest.as_millis() as u64);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
