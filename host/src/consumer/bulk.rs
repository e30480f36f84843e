//! The streaming catch-up: the grains of one catch-up scan page, handled as
//! one unit of work instead of one scheduler step each.
//!
//! Each grain's first attempt (the newest FullState above what it applied,
//! exactly what its own step would decode first) is collected, and all of
//! them go to the decoder in [`SnapshotDecoder::decode_batch`] calls of its
//! `batch_max` (a plugin decodes each call's snapshots in one fresh
//! instance), several calls in flight to keep the decode slots busy. Then each grain's step runs with its result known
//! ([`Step::run_with`]): the same batch rules, status, logging and store
//! update as a step of its own, and the decoder is called again only for a
//! grain whose first attempt failed (its next newest snapshot). No grain
//! goes back through the scheduler's ready queue in between.
//!
//! [`SnapshotDecoder::decode_batch`]: crate::decode::SnapshotDecoder::decode_batch

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::grain::{Step, StepOutcome, Stopped, TypeContext};
use crate::decode::{CallError, CallErrorKind};
use crate::replication_log::LogEntry;
use crate::shutdown::StopSignal;
use crate::value::State;

/// Decoder calls of one page in flight at once: enough to keep every
/// decode slot busy, so one slow call holds only its own grains.
const CALLS_IN_FLIGHT: usize = 8;

/// Runs the steps of one page's grains (`(table index, step)`), decoding
/// their first attempts together: in calls of the decoder's
/// [`batch_max`](crate::decode::SnapshotDecoder::batch_max), several in
/// flight, each call's grains finished as soon as it returns and handed to
/// `deliver` one by one. `Err(Stopped)` when shutdown came first.
pub(crate) async fn run(
    ctx: Arc<TypeContext>,
    steps: Vec<(u32, Step)>,
    shutdown: &mut StopSignal,
    deliver: &mut (dyn FnMut(u32, StepOutcome) + Send),
) -> Result<(), Stopped> {
    let mut groups: Vec<Vec<((u32, Step), LogEntry)>> = Vec::new();
    let chunk = ctx.decoder.batch_max().max(1);
    let mut group = Vec::with_capacity(chunk);
    for (index, mut step) in steps {
        match step.first_attempt() {
            Some(entry) => {
                group.push(((index, step), entry));
                if group.len() == chunk {
                    groups.push(std::mem::replace(&mut group, Vec::with_capacity(chunk)));
                }
            }
            // Nothing to decode (Deltas, refused rows): finished at once.
            None => deliver(index, step.run_with(shutdown, None).await?),
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    let mut groups = groups.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let call = |group: Vec<((u32, Step), LogEntry)>| {
        let ctx = &ctx;
        async move {
            let (steps, entries): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let results = decode_batch_catching(ctx, &entries).await;
            (steps, results)
        }
    };
    in_flight.extend(groups.by_ref().take(CALLS_IN_FLIGHT).map(call));
    loop {
        let next = tokio::select! {
            () = shutdown.stopped() => return Err(Stopped),
            next = in_flight.next() => next,
        };
        let Some((steps, results)) = next else { break };
        in_flight.extend(groups.next().map(call));
        for ((index, step), result) in steps.into_iter().zip(results) {
            deliver(index, step.run_with(shutdown, Some(result)).await?);
        }
    }
    Ok(())
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
