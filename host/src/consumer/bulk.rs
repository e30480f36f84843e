//! The streaming catch-up: the grains of one catch-up scan page, handled as
//! one unit of work instead of one scheduler step each.
//!
//! Each grain's first attempt (the newest FullState above what it applied,
//! exactly what its own step would decode first) is collected, and all of
//! them go to the decoder in [`SnapshotDecoder::decode_batch`] calls of its
//! `batch_max` (a plugin's: a fresh instance per `[limits] batch_max`
//! snapshots, up to four of them per trip to the blocking pool), several
//! calls in flight to keep the decode slots busy. Then each grain's step
//! runs with its result known ([`Step::run_with`]): the same batch rules,
//! status, logging and store update as a step of its own, and the decoder
//! is called again only for a grain whose first attempt failed (its next
//! newest snapshot). No grain goes back through the scheduler's ready queue
//! in between. The grains of the calls that have returned go to the store
//! in one call and to the scheduler in one message.
//!
//! [`SnapshotDecoder::decode_batch`]: crate::decode::SnapshotDecoder::decode_batch

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use smallvec::SmallVec;

use super::grain::{Applies, Progress, Step, StepOutcome, Stopped, TypeContext};
use crate::decode::{CallError, CallErrorKind};
use crate::replication_log::{LogEntry, LogRecord};
use crate::shutdown::StopSignal;
use crate::value::State;

/// Decoder calls of one page in flight at once: enough to keep every
/// decode slot busy, so one slow call holds only its own grains.
const CALLS_IN_FLIGHT: usize = 8;

/// Calls that have returned join one [`ReplicaStore::apply_many`] and one
/// message to the scheduler until their grains reach this many. A
/// decoder of one snapshot per call (a native one) returns at once, so
/// without it every grain would take the store's lock, wake the feed's
/// readers and send a message of its own.
///
/// [`ReplicaStore::apply_many`]: crate::store::ReplicaStore::apply_many
const APPLY_MAX: usize = 256;

/// Runs the steps of one page's grains (`(table index, step)`), decoding
/// their first attempts together: in calls of the decoder's
/// [`batch_max`](crate::decode::SnapshotDecoder::batch_max), several in
/// flight, each call's grains finished as soon as it returns and handed to
/// `deliver` together. `Err(Stopped)` when shutdown came first.
pub(crate) async fn run(
    ctx: Arc<TypeContext>,
    handed: Vec<Handed>,
    shutdown: &mut StopSignal,
    deliver: &mut (dyn FnMut(Vec<(u32, StepOutcome)>) + Send),
) -> Result<(), Stopped> {
    // The steps stay here while their entries are out to the decoder: a
    // step is a few hundred bytes, an entry a hundred.
    let mut waiting: Vec<Option<Waiting>> = Vec::with_capacity(handed.len());
    let mut calls: Vec<Call> = Vec::new();
    let chunk = ctx.decoder.batch_max().max(1);
    let mut next_call = Call::default();
    let mut nothing_to_decode = Vec::new();
    for grain in handed {
        let index = grain.index;
        let Some(mut step) = grain.into_step(&ctx) else {
            continue; // a step already runs (not handed over so)
        };
        match step.first_attempt() {
            Some((at, entry)) => {
                next_call.entries.push(entry);
                waiting.push(Some(Waiting { index, step, at }));
                if next_call.entries.len() == chunk {
                    let next = waiting.len();
                    let call = std::mem::replace(&mut next_call, Call::starting(next));
                    calls.push(call);
                }
            }
            // Nothing to decode (Deltas, refused rows): finished at once.
            None => nothing_to_decode.push((index, step.run_with(shutdown, None, None).await?)),
        }
    }
    if !nothing_to_decode.is_empty() {
        deliver(nothing_to_decode);
    }
    if !next_call.entries.is_empty() {
        calls.push(next_call);
    }
    let mut calls = calls.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let call = |call: Call| {
        let ctx = &ctx;
        async move {
            let results = decode_batch_catching(ctx, &call.entries).await;
            (call, results)
        }
    };
    in_flight.extend(calls.by_ref().take(CALLS_IN_FLIGHT).map(call));
    loop {
        let next = tokio::select! {
            () = shutdown.stopped() => return Err(Stopped),
            next = in_flight.next() => next,
        };
        let Some(first) = next else { break };
        in_flight.extend(calls.next().map(call));
        // Calls that have returned meanwhile join this one, without waiting
        // for any that have not.
        let mut grains = first.0.entries.len();
        let mut returned = vec![first];
        while grains < APPLY_MAX {
            let Some(Some(more)) = in_flight.next().now_or_never() else {
                break;
            };
            in_flight.extend(calls.next().map(call));
            grains += more.0.entries.len();
            returned.push(more);
        }
        let mut finished = Vec::with_capacity(grains);
        let mut applies = Applies::default();
        for (call, results) in returned {
            let slots = &mut waiting[call.first..call.first + call.entries.len()];
            for ((slot, entry), result) in slots.iter_mut().zip(call.entries).zip(results) {
                let Some(Waiting {
                    index,
                    mut step,
                    at,
                }) = slot.take()
                else {
                    continue; // each call's grains come back once
                };
                step.give_back(at, entry);
                let outcome = step
                    .run_with(shutdown, Some(result), Some(&mut applies))
                    .await?;
                finished.push((index, outcome));
            }
        }
        // In the store before the scheduler counts them caught up.
        applies.apply(&ctx);
        deliver(finished);
    }
    Ok(())
}

/// A grain the catch-up scan handed over whole, as its slot had it: its
/// step is made in the worker, not on the scheduler's task.
pub(crate) struct Handed {
    /// The grain's slot in the scheduler's table.
    pub(crate) index: u32,
    /// The grain's key.
    pub(crate) grain_key: Arc<str>,
    /// Where the grain stood.
    pub(crate) progress: Progress,
    /// The grain's newest sequence in the log.
    pub(crate) head: u64,
    /// Every row of the grain, from the scan.
    pub(crate) records: Vec<LogRecord>,
}

impl Handed {
    /// The grain's step over its scanned rows.
    fn into_step(self, ctx: &Arc<TypeContext>) -> Option<Step> {
        let progress = self.progress.into_progress(ctx, &self.grain_key)?;
        Some(Step {
            ctx: Arc::clone(ctx),
            grain_key: self.grain_key,
            progress,
            head: self.head,
            prefetched: Some(self.records),
        })
    }
}

/// A grain whose first attempt is out to the decoder: its table index, its
/// step, and where in the step's rows the lent entry was.
struct Waiting {
    index: u32,
    step: Step,
    at: usize,
}

/// One decoder call: the entries lent from the steps at `first..` of the
/// waiting steps, in their order. A call of one entry (a decoder of one
/// snapshot per call) allocates nothing for them.
#[derive(Default)]
struct Call {
    first: usize,
    entries: SmallVec<[LogEntry; 1]>,
}

impl Call {
    /// A call whose first entry is that of the waiting step at `first`.
    fn starting(first: usize) -> Self {
        Self {
            first,
            entries: SmallVec::new(),
        }
    }
}

/// The decoder's batch call, a panic turned into a trap of every entry.
async fn decode_batch_catching(
    ctx: &TypeContext,
    entries: &[LogEntry],
) -> Vec<Result<State, CallError>> {
    if entries.is_empty() {
        return Vec::new();
    }
    match AssertUnwindSafe(ctx.decoder.decode_batch(entries))
        .catch_unwind()
        .await
    {
        Ok(results) if results.len() == entries.len() => results,
        Ok(results) => failed_all(
            entries,
            &format!(
                "the decoder returned {} results for {} snapshots",
                results.len(),
                entries.len()
            ),
        ),
        Err(_) => failed_all(entries, "decoder panicked during a batch"),
    }
}

/// A trap for every entry, with `message`.
fn failed_all(entries: &[LogEntry], message: &str) -> Vec<Result<State, CallError>> {
    entries
        .iter()
        .map(|e| {
            Err(CallError {
                plugin: "(decoder)".into(),
                grain_type: e.grain_type.clone(),
                grain_key: e.grain_key.clone(),
                sequence: e.sequence,
                kind: CallErrorKind::Trap,
                message: message.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::ConsumerConfig;
    use crate::consumer::metrics::ConsumerMetrics;
    use crate::decode::SnapshotDecoder;
    use crate::replication_log::{EntryType, MemoryLog};
    use crate::shutdown::Shutdown;
    use crate::store::ReplicaStore;

    /// Decodes any snapshot as `{"count": sequence}`, one per call.
    struct Native;

    #[async_trait::async_trait]
    impl SnapshotDecoder for Native {
        async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
            Ok(State::from_serialize(&serde_json::json!({ "count": entry.sequence })).unwrap())
        }
    }

    /// A decoder of one snapshot per call returns at once: its grains reach
    /// the store and the scheduler together, not one message each, and
    /// every grain arrives exactly once.
    #[tokio::test]
    async fn a_one_snapshot_decoder_s_grains_arrive_together_each_once() {
        const GRAINS: u32 = 1_000;
        let store = Arc::new(ReplicaStore::new());
        let ctx = Arc::new(TypeContext {
            grain_type: "Counter".into(),
            log: Arc::new(MemoryLog::new()),
            store: Arc::clone(&store),
            decoder: Arc::new(Native),
            config: Arc::new(ConsumerConfig::default()),
            counters: ConsumerMetrics::default().counters("Counter"),
            decoded_by: None,
            redecode: false,
        });
        let handed = (0..GRAINS)
            .map(|n| {
                let key = format!("c{n:05}");
                Handed {
                    index: n,
                    grain_key: key.as_str().into(),
                    progress: Progress::Unseen,
                    head: u64::from(n) + 1,
                    records: vec![LogRecord::Entry(LogEntry {
                        grain_type: "Counter".into(),
                        grain_key: key,
                        sequence: u64::from(n) + 1,
                        timestamp_millis: 7,
                        source_cluster: "eu".into(),
                        entry_type: EntryType::FullState,
                        payload: vec![1].into(),
                    })],
                }
            })
            .collect();
        let shutdown = Shutdown::new();
        let mut messages = 0;
        let mut seen = vec![0u32; GRAINS as usize];
        let mut deliver = |outcomes: Vec<(u32, StepOutcome)>| {
            messages += 1;
            for (index, outcome) in outcomes {
                assert!(outcome.caught_up, "grain {index} not caught up");
                seen[index as usize] += 1;
            }
        };
        let ran = run(ctx, handed, &mut shutdown.signal(), &mut deliver).await;
        assert!(ran.is_ok(), "stopped without a shutdown");
        assert!(seen.iter().all(|&n| n == 1), "a grain missing or twice");
        assert!(
            messages <= GRAINS as usize / 64,
            "{messages} messages for {GRAINS} grains"
        );
        for n in [0, 499, GRAINS - 1] {
            let replica = store.get("Counter", &format!("c{n:05}")).unwrap();
            assert_eq!(replica.sequence, u64::from(n) + 1);
        }
    }
}
