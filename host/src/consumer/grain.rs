//! One grain's consumer, as data and one step at a time: [`GrainProgress`]
//! is where the grain stands (its [`Cursor`], its retry state), and a
//! [`Step`] is one unit of work a scheduler worker runs for it: read the
//! grain's entries (or take those the catch-up scan prefetched), decode and
//! apply snapshots, keep the replica's status, and schedule retries. No
//! task waits on a grain between steps; the scheduler
//! ([`super::scheduler`]) decides when the next step is due.
//!
//! Longer than most modules on purpose: one grain step, from its read to its
//! apply and retry, is one state machine; its pure rules are
//! `consumer::batch`, its backoff `backoff.rs`.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::time::Instant;

use super::SnapshotDecoder;
use super::backoff::Backoff;
use super::batch::{Cursor, Failure, sequence_of};
use super::config::ConsumerConfig;
use super::metrics::GrainTypeCounters;
use crate::decode::{CallError, CallErrorKind, DecodedBy};
use crate::repeat_limiter::limited;
use crate::replication_log::{LogEntry, LogRecord, ReplicationLog};
use crate::shutdown::StopSignal;
use crate::store::{DecodedSnapshot, ReplicaStatus, ReplicaStore, StaleSnapshot, Standing};
use crate::value::State;

/// Shutdown was signalled in the middle of a step.
pub(crate) struct Stopped;

/// What every grain of one grain type shares.
pub(crate) struct TypeContext {
    /// The grain type.
    pub(crate) grain_type: String,
    /// Where the entries are read.
    pub(crate) log: Arc<dyn ReplicationLog>,
    /// Where the replicas go.
    pub(crate) store: Arc<ReplicaStore>,
    /// The grain type's plugin (or native decoder).
    pub(crate) decoder: Arc<dyn SnapshotDecoder>,
    /// Batch size and backoff.
    pub(crate) config: Arc<ConsumerConfig>,
    /// The grain type's counters.
    pub(crate) counters: Arc<GrainTypeCounters>,
    /// The decoder's plugin build, recorded with every state it decodes.
    pub(crate) decoded_by: Option<Arc<DecodedBy>>,
    /// This run replaces another decoder: replicas decoded by another
    /// plugin build are decoded again from their applied snapshot.
    pub(crate) redecode: bool,
}

/// Where one grain's consumer stands between steps.
#[derive(Debug)]
pub(crate) struct GrainProgress {
    /// The pure batch bookkeeping: applied, seen, blocked, failing, behind.
    cursor: Cursor,
    /// The status last given to the store, to publish only changes.
    last_status: Option<ReplicaStatus>,
    /// Consecutive failed reads, and when the next read may be tried.
    read: Backoff,
    /// Consecutive failed decodes of the grain's newest snapshot, and when
    /// the failed snapshots are tried again.
    decode: Backoff,
    /// The last batch was full and moved on: read again without waiting.
    more: bool,
    /// A head already read up to without finding anything new.
    served_head: u64,
}

impl GrainProgress {
    /// A grain starting after what the store already holds for it; in a
    /// re-decode, at its applied snapshot when another plugin build decoded
    /// that.
    pub(crate) fn new(ctx: &TypeContext, grain_key: &str) -> Self {
        Self::starting(ctx, grain_key, ctx.redecode)
    }

    /// A grain anti-entropy found divergent: it starts again after what
    /// the store holds (from the start when the store lost it), at its
    /// applied snapshot when another plugin build decoded that.
    pub(crate) fn repair(ctx: &TypeContext, grain_key: &str) -> Self {
        Self::starting(ctx, grain_key, true)
    }

    /// A grain the store holds nothing of: read from its first entry.
    pub(crate) fn unseen() -> Self {
        Self::from_standing(None, None, false)
    }

    fn starting(ctx: &TypeContext, grain_key: &str, redecode: bool) -> Self {
        // Not a copy of the replica: at a warm start this runs for every
        // grain of the first listing.
        let standing = ctx.store.standing(&ctx.grain_type, grain_key);
        Self::from_standing(standing, ctx.decoded_by.as_ref(), redecode)
    }

    /// Where a grain stands given what the store holds of it; with
    /// `redecode`, a replica decoded by another build than `decoded_by` is
    /// decoded again.
    fn from_standing(
        standing: Option<Standing>,
        decoded_by: Option<&Arc<DecodedBy>>,
        redecode: bool,
    ) -> Self {
        let applied = standing.as_ref().and_then(|s| s.applied);
        let stale = redecode
            && standing
                .as_ref()
                .is_some_and(|s| s.applied.is_some() && s.decoded_by.as_ref() != decoded_by);
        let applied = applied.unwrap_or(0);
        Self {
            cursor: if stale {
                Cursor::redecode(applied)
            } else {
                Cursor::new(applied)
            },
            last_status: standing.map(|s| s.status),
            read: Backoff::default(),
            decode: Backoff::default(),
            more: false,
            served_head: 0,
        }
    }

    /// The sequence this grain has read up to, when nothing else needs
    /// keeping: [`GrainProgress::new`] would make the same progress again
    /// from the store (read up to the applied snapshot, status `Ok` or,
    /// with nothing applied, none; no retry waiting). What a scheduler keeps
    /// of an idle grain instead of the whole progress.
    pub(crate) fn settled(&self) -> Option<u64> {
        let status_as_stored = match &self.last_status {
            Some(ReplicaStatus::Ok) => true,
            None => self.cursor.applied() == 0,
            Some(_) => false,
        };
        let settled = status_as_stored
            && self.cursor.is_settled_at_applied()
            && self.read.failures() == 0
            && self.read.retry_at().is_none()
            && self.decode.failures() == 0
            && self.decode.retry_at().is_none()
            && !self.more
            && self.served_head <= self.cursor.seen();
        settled.then(|| self.cursor.seen())
    }

    /// Whether a step is due now, given the grain's newest sequence in the log.
    pub(crate) fn due(&self, head: u64, now: Instant) -> bool {
        let retry = self.decode.is_due(now);
        match self.read.retry_at() {
            Some(at) => now >= at,
            None => self.more || retry || (head > self.cursor.seen() && head > self.served_head),
        }
    }

    /// Whether the store shows the grain failing.
    pub(crate) fn is_failing(&self) -> bool {
        matches!(self.last_status, Some(ReplicaStatus::Failing { .. }))
    }

    /// When the grain must be looked at again even if its head does not
    /// move: a read or decode retry.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.read.retry_at().or(self.decode.retry_at())
    }

    /// Whether prefetched rows (every row of the grain) can stand in for
    /// this grain's next read: they hold what any read would return.
    pub(crate) fn takes_prefetched(&self) -> bool {
        self.read.failures() == 0
    }
}

/// Where an idle grain stands, as its slot keeps it: most grains are
/// settled (read up to their applied snapshot, nothing to retry), and those
/// keep one sequence instead of a boxed [`GrainProgress`]; the progress is
/// made again from the store when a step of theirs runs.
pub(crate) enum Progress {
    /// Nothing read yet, and the store held nothing of the grain when its
    /// slot was made (a cold start's grain): no need to ask it again.
    Unseen,
    /// Settled, read up to this sequence ([`GrainProgress::settled`]).
    Settled(u64),
    /// Anything else to remember: a retry, a failure, a blocker.
    Kept(Box<GrainProgress>),
    /// A step of the grain runs and has it.
    Running,
}

impl Progress {
    /// What a slot keeps of `progress`.
    pub(crate) fn keep(progress: GrainProgress) -> Self {
        match progress.settled() {
            Some(seen) => Progress::Settled(seen),
            None => Progress::Kept(Box::new(progress)),
        }
    }

    /// The sequence a grain that needs no whole progress has read up to
    /// (0 when unseen); `None` for a kept or running one.
    pub(crate) fn settled_at(&self) -> Option<u64> {
        match self {
            Progress::Unseen => Some(0),
            Progress::Settled(seen) => Some(*seen),
            Progress::Kept(_) | Progress::Running => None,
        }
    }

    /// Whether a step of the grain runs.
    pub(crate) fn is_running(&self) -> bool {
        matches!(self, Progress::Running)
    }

    /// Hands the progress to a step (made again from the store when
    /// settled); `None` when a step already has it.
    pub(crate) fn take(&mut self, ctx: &TypeContext, grain_key: &str) -> Option<GrainProgress> {
        std::mem::replace(self, Progress::Running).into_progress(ctx, grain_key)
    }

    /// The whole progress (made again from the store when settled);
    /// `None` when a step already has it.
    pub(crate) fn into_progress(self, ctx: &TypeContext, grain_key: &str) -> Option<GrainProgress> {
        match self {
            Progress::Unseen => Some(GrainProgress::unseen()),
            Progress::Settled(_) => Some(GrainProgress::new(ctx, grain_key)),
            Progress::Kept(progress) => Some(*progress),
            Progress::Running => None,
        }
    }

    /// Whether the grain's rows from the catch-up scan can stand in for
    /// its next read.
    pub(crate) fn takes_prefetched(&self) -> bool {
        match self {
            Progress::Unseen | Progress::Settled(_) => true,
            Progress::Kept(progress) => progress.takes_prefetched(),
            Progress::Running => false,
        }
    }
}

/// What a step did, for the scheduler.
pub(crate) struct StepOutcome {
    /// The grain's progress after the step, as its slot keeps it.
    pub(crate) progress: Progress,
    /// The step read the grain's log successfully and has nothing more to
    /// read right now, or the grain is failing: it has caught up.
    pub(crate) caught_up: bool,
}

/// One step of one grain, run by a scheduler worker.
pub(crate) struct Step {
    /// The grain type's shared parts.
    pub(crate) ctx: Arc<TypeContext>,
    /// The grain's key.
    pub(crate) grain_key: Arc<str>,
    /// Where the grain stands (moved in and handed back).
    pub(crate) progress: GrainProgress,
    /// The grain's newest sequence in the log when the step was dispatched.
    pub(crate) head: u64,
    /// Every row of the grain, from the catch-up scan, if it applies.
    pub(crate) prefetched: Option<Vec<LogRecord>>,
}

impl Step {
    /// Runs the step: one read (or the prefetched rows), then decode, apply
    /// and retry bookkeeping. `Err(Stopped)` when shutdown interrupted it.
    pub(crate) async fn run(self, shutdown: &mut StopSignal) -> Result<StepOutcome, Stopped> {
        self.run_with(shutdown, None, None).await
    }

    /// The snapshot the step would decode first, when it has prefetched
    /// rows: the one the streaming catch-up decodes in a batch with other
    /// grains' and hands to [`Step::run_with`]. The entry is lent, not
    /// copied: its names and payload move out (its sequence and type stay
    /// for the step's plan) and go back with [`Step::give_back`], with the
    /// position returned here.
    pub(crate) fn first_attempt(&mut self) -> Option<(usize, LogEntry)> {
        let retry = self.progress.decode.is_due_now();
        let from = self.progress.cursor.read_after(retry);
        let limit = self.ctx.config.limit();
        let records = self.prefetched.as_mut()?;
        // What `run_with` keeps of them; doing it here leaves it nothing to do.
        records.retain(|r| sequence_of(r).is_none_or(|s| s > from));
        records.truncate(limit);
        let plan = self.progress.cursor.plan(records);
        let at = *plan.attempts.first()?;
        match &mut records[at] {
            LogRecord::Entry(entry) => {
                let husk = LogEntry {
                    grain_type: String::new(),
                    grain_key: String::new(),
                    sequence: entry.sequence,
                    timestamp_millis: entry.timestamp_millis,
                    source_cluster: String::new(),
                    entry_type: entry.entry_type,
                    payload: bytes::Bytes::new(),
                };
                Some((at, std::mem::replace(entry, husk)))
            }
            LogRecord::Refused(_) => None,
        }
    }

    /// Puts back the entry [`Step::first_attempt`] lent out from `at`.
    pub(crate) fn give_back(&mut self, at: usize, entry: LogEntry) {
        if let Some(slot) = self.prefetched.as_mut().and_then(|r| r.get_mut(at)) {
            *slot = LogRecord::Entry(entry);
        }
    }

    /// Like [`Step::run`], with the outcome of decoding
    /// [`Step::first_attempt`] already known (`first`): it is used instead
    /// of calling the decoder for that snapshot. With `applies`, the decoded
    /// snapshot joins that batch instead of going to the store at once: the
    /// caller applies the batch before it hands the outcome on.
    pub(crate) async fn run_with(
        self,
        shutdown: &mut StopSignal,
        first: Option<Result<State, CallError>>,
        applies: Option<&mut Applies>,
    ) -> Result<StepOutcome, Stopped> {
        let Step {
            ctx,
            grain_key,
            mut progress,
            head,
            prefetched,
        } = self;
        let mut grain = GrainRef {
            ctx: &ctx,
            grain_key: &grain_key,
            applies,
        };
        let p = &mut progress;
        let limit = ctx.config.limit();
        let retry = p.decode.is_due_now();
        let from = p.cursor.read_after(retry);

        let records = match prefetched {
            // Every row of the grain: keep what a read after `from` returns.
            Some(mut records) => {
                records.retain(|r| sequence_of(r).is_none_or(|s| s > from));
                records.truncate(limit);
                records
            }
            None => {
                let read = tokio::select! {
                    () = shutdown.stopped() => return Err(Stopped),
                    read = ctx.log.read_from(&ctx.grain_type, &grain_key, from, limit) => read,
                };
                match read {
                    Ok(records) => records,
                    Err(error) => {
                        ctx.counters.read_error();
                        let delay = p.read.fail(&ctx.config, Instant::now());
                        limited(&ctx.grain_type, "read_error", &grain_key, || {
                            tracing::warn!(
                                grain_type = %ctx.grain_type,
                                grain_key = %grain_key,
                                sequence = from,
                                %error,
                                failures = p.read.failures(),
                                retry_in_ms = delay.as_millis() as u64,
                                "failed to read the replication log; retrying"
                            )
                        });
                        p.more = false;
                        return Ok(StepOutcome {
                            progress: Progress::keep(progress),
                            caught_up: false,
                        });
                    }
                }
            }
        };
        if p.read.failures() > 0 {
            limited(&ctx.grain_type, "read_resumed", &grain_key, || {
                tracing::info!(
                    grain_type = %ctx.grain_type,
                    grain_key = %grain_key,
                    sequence = from,
                    failures = p.read.failures(),
                    "reading the replication log again"
                )
            });
            p.read.reset();
        }

        if !records.is_empty() {
            grain
                .process(
                    &mut p.cursor,
                    from,
                    &records,
                    shutdown,
                    &mut p.last_status,
                    first,
                )
                .await?;
        }
        let progressed = p.cursor.seen() > from;
        p.more = progressed && records.len() >= limit;
        if !progressed {
            p.served_head = head;
        }

        if p.cursor.failing().is_none() {
            p.decode.reset();
        } else if retry || p.decode.retry_at().is_none() {
            p.decode.fail(&ctx.config, Instant::now());
        }
        let caught_up = !p.more || p.cursor.failing().is_some();
        Ok(StepOutcome {
            progress: Progress::keep(progress),
            caught_up,
        })
    }
}

/// A grain, for the batch handling and its log lines.
struct GrainRef<'a> {
    ctx: &'a TypeContext,
    grain_key: &'a Arc<str>,
    /// Where a decoded snapshot goes when the caller applies a batch.
    applies: Option<&'a mut Applies>,
}

/// Snapshots that several grains' steps decoded, applied to the store in
/// one call ([`ReplicaStore::apply_many`]) once those steps are done: what
/// a catch-up's decoder call hands the store.
#[derive(Default)]
pub(crate) struct Applies {
    batch: Vec<(Arc<str>, DecodedSnapshot, ReplicaStatus)>,
}

impl Applies {
    /// Applies the batch, then counts and logs each grain's outcome as a
    /// step applying its own snapshot does.
    pub(crate) fn apply(self, ctx: &TypeContext) {
        if self.batch.is_empty() {
            return;
        }
        let reports: Vec<(Arc<str>, u64, ReplicaStatus)> = self
            .batch
            .iter()
            .map(|(key, snapshot, status)| (Arc::clone(key), snapshot.sequence, status.clone()))
            .collect();
        let outcomes = ctx.store.apply_many(&ctx.grain_type, self.batch);
        for ((grain_key, sequence, status), outcome) in reports.into_iter().zip(outcomes) {
            report_applied(ctx, &grain_key, sequence, &status, outcome);
        }
    }
}

/// Counts and logs the store's answer to one grain's applied snapshot; a
/// snapshot the store already holds newer keeps the grain's status current.
fn report_applied(
    ctx: &TypeContext,
    grain_key: &str,
    sequence: u64,
    status: &ReplicaStatus,
    outcome: Result<(), StaleSnapshot>,
) {
    let grain_type = ctx.grain_type.as_str();
    match outcome {
        Ok(()) => {
            ctx.counters.snapshot_applied();
            tracing::debug!(
                grain_type = %grain_type,
                grain_key = %grain_key,
                sequence,
                status = status.label(),
                "applied snapshot"
            );
        }
        Err(stale) => {
            tracing::warn!(
                grain_type = %grain_type,
                grain_key = %grain_key,
                sequence,
                current = stale.current,
                "the store holds a newer snapshot; not applied"
            );
            ctx.store.set_status(grain_type, grain_key, status.clone());
        }
    }
}

impl GrainRef<'_> {
    /// Handles one non-empty batch read after `from`; `first`, when known,
    /// is the outcome of the plan's first attempt.
    async fn process(
        &mut self,
        cursor: &mut Cursor,
        from: u64,
        records: &[LogRecord],
        shutdown: &mut StopSignal,
        last_status: &mut Option<ReplicaStatus>,
        mut first: Option<Result<State, CallError>>,
    ) -> Result<(), Stopped> {
        let ctx = self.ctx;
        let grain_type = ctx.grain_type.as_str();
        let grain_key = self.grain_key;
        let plan = cursor.plan(records);
        for &index in &plan.refusals {
            self.report_refusal(&records[index]);
        }

        let mut applied = None;
        let mut snapshot = None;
        let mut failures = Vec::new();
        for &index in &plan.attempts {
            let LogRecord::Entry(entry) = &records[index] else {
                continue;
            };
            let decoded = match first.take() {
                Some(known) if known_for(&known, entry) => known,
                _ => tokio::select! {
                    () = shutdown.stopped() => return Err(Stopped),
                    decoded = decode_catching(ctx.decoder.as_ref(), entry) => decoded,
                },
            };
            match decoded {
                Ok(value) => {
                    applied = Some(index);
                    snapshot = Some(DecodedSnapshot {
                        state: value,
                        sequence: entry.sequence,
                        timestamp_millis: entry.timestamp_millis,
                        source_cluster: entry.source_cluster.clone(),
                        decoded_by: ctx.decoded_by.clone(),
                    });
                    break;
                }
                Err(error) => {
                    ctx.counters.decode_failed(error.kind);
                    limited(grain_type, error.kind.as_str(), grain_key, || {
                        tracing::warn!(
                            grain_type = %grain_type,
                            grain_key = %grain_key,
                            sequence = entry.sequence,
                            kind = %error.kind,
                            plugin = %error.plugin,
                            error = %error.message,
                            "snapshot did not decode"
                        )
                    });
                    failures.push(Failure {
                        sequence: entry.sequence,
                        kind: error.kind,
                        reason: format!("{}: {}", error.kind, error.message),
                    });
                }
            }
        }

        let settlement = cursor.settle(from, records, applied, &failures);
        if !settlement.skipped.is_empty() {
            ctx.counters.snapshots_skipped(settlement.skipped.len());
            tracing::debug!(
                grain_type = %grain_type,
                grain_key = %grain_key,
                sequence = cursor.applied(),
                skipped = ?settlement.skipped,
                "older snapshots superseded without decoding"
            );
        }

        let status = cursor.status();
        let was_failing = matches!(last_status, Some(ReplicaStatus::Failing { .. }));
        if let Some(snapshot) = snapshot {
            match self.applies.as_deref_mut() {
                Some(applies) => {
                    applies
                        .batch
                        .push((Arc::clone(grain_key), snapshot, status.clone()));
                }
                None => {
                    let sequence = snapshot.sequence;
                    let outcome =
                        ctx.store
                            .apply_quietly(grain_type, grain_key, snapshot, status.clone());
                    report_applied(ctx, grain_key, sequence, &status, outcome);
                }
            }
        } else if last_status.as_ref() != Some(&status)
            && (last_status.is_some() || status != ReplicaStatus::Ok)
        {
            ctx.store.set_status(grain_type, grain_key, status.clone());
        }
        if was_failing && !matches!(status, ReplicaStatus::Failing { .. }) {
            limited(grain_type, "recovered", grain_key, || {
                tracing::info!(
                    grain_type = %grain_type,
                    grain_key = %grain_key,
                    sequence = cursor.applied(),
                    "grain recovered: a newer snapshot decoded"
                )
            });
        }
        *last_status = Some(status);
        Ok(())
    }

    /// Logs and counts a Delta or an uninterpretable row.
    fn report_refusal(&self, record: &LogRecord) {
        let grain_type = self.ctx.grain_type.as_str();
        let grain_key = self.grain_key;
        match record {
            LogRecord::Entry(entry) => {
                self.ctx.counters.delta_refused();
                limited(grain_type, "delta", grain_key, || {
                    tracing::error!(
                        grain_type = %grain_type,
                        grain_key = %grain_key,
                        sequence = entry.sequence,
                        "refused a Delta entry: only FullState snapshots are supported"
                    )
                });
            }
            LogRecord::Refused(row) => {
                self.ctx.counters.row_refused();
                limited(grain_type, "refused_row", grain_key, || {
                    tracing::error!(
                        grain_type = %grain_type,
                        grain_key = %grain_key,
                        sequence = row.sequence,
                        reason = %row.reason,
                        "refused a log row the host cannot interpret"
                    )
                });
            }
        }
    }
}

/// Whether a result decoded ahead is `entry`'s: an error names its
/// snapshot; a state is taken for the first attempt it was decoded for.
fn known_for(known: &Result<State, CallError>, entry: &LogEntry) -> bool {
    match known {
        Ok(_) => true,
        Err(e) => e.sequence == entry.sequence && e.grain_key == entry.grain_key,
    }
}

/// Calls the decoder, turning a panic into a [`CallErrorKind::Trap`].
async fn decode_catching(
    decoder: &dyn SnapshotDecoder,
    entry: &LogEntry,
) -> Result<State, CallError> {
    match AssertUnwindSafe(decoder.decode(entry)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(CallError {
            plugin: "(native decoder)".into(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind: CallErrorKind::Trap,
            message: format!("decoder panicked: {}", panic_message(panic.as_ref())),
        }),
    }
}

/// What a caught panic says (its `&str` or `String` payload), for a step's
/// error and the scheduler's log line alike.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grain with something to remember (a retry, a failure) holds one
    /// boxed `GrainProgress`, and a step moves one by value: at a million
    /// grains each 16 bytes is 16 MB. glibc serves a request from chunks of 16-byte
    /// steps after an 8-byte header, so 216 bytes is the most that still
    /// fits the 224-byte chunk this struct took before `Backoff` existed.
    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn a_grains_progress_keeps_its_allocation_size() {
        let size = std::mem::size_of::<GrainProgress>();
        assert!(size <= 216, "GrainProgress is {size} bytes");
    }
}
