//! [`PluginDecoder`]: the consumer's [`SnapshotDecoder`] over a Wasm plugin.
//! Calls run on tokio's blocking pool, each holding one of the
//! [`DecodeSlots`] shared by all plugins, so guests never stall the async
//! runtime and a burst of snapshots cannot exhaust memory.
//!
//! With a [`Breaker`], a plugin whose guest keeps faulting is paused: its
//! calls fail fast with [`CallErrorKind::Unavailable`] until one trial call
//! after the cool-down behaves. A payload larger than the plugin's memory
//! limit is refused before any guest code runs.
//!
//! With a [`CrashGuard`] on the slots, each call records its snapshot while
//! it runs; a snapshot quarantined for killing the host fails at once with
//! [`CallErrorKind::Quarantined`], and one suspected of it runs alone.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::breaker::{Admission, Breaker, Transition};
use super::crash_guard::{CrashGuard, SnapshotId, Verdict};
use super::decode_slots::DecodeSlots;
use super::{LoadedPlugin, SnapshotRef};
use crate::decode::{CallError, CallErrorKind};
use crate::decode::{DecodedBy, SnapshotDecoder};
use crate::replication_log::LogEntry;
use crate::value::State;

/// How many fresh instances' batches (of `[limits] batch_max` each) one
/// trip to the blocking pool decodes, one after another on one decode slot:
/// the hand-off, a thread wake-up each way, is shared by that many more
/// snapshots (BENCHMARKS.md, section 22).
const INSTANCES_PER_TASK: usize = 4;

/// The most payload bytes one trip to the blocking pool takes, whatever
/// the count: a slot is held for a few milliseconds at most, so a live
/// call of another grain type never waits behind a long run of large
/// snapshots.
const TASK_PAYLOAD_BYTES: usize = 1 << 20;

/// Decodes snapshots with one plugin.
pub struct PluginDecoder {
    /// The plugin that decodes.
    plugin: Arc<LoadedPlugin>,
    /// The call slots shared by all plugins.
    slots: DecodeSlots,
    /// The plugin's circuit breaker, when configured.
    breaker: Option<Arc<Breaker>>,
    /// The plugin build, recorded with every state it decodes.
    decoded_by: Arc<DecodedBy>,
}

/// Hands the trial back if a trial call ends without a verdict (its future
/// dropped at shutdown, or the host unable to run it).
struct TrialGuard<'a> {
    /// The breaker whose trial call this guards.
    breaker: Option<&'a Breaker>,
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker {
            breaker.abandon_trial(Instant::now());
        }
    }
}

impl PluginDecoder {
    /// A decoder for `plugin` whose calls each take one of `slots`.
    pub fn new(plugin: Arc<LoadedPlugin>, slots: DecodeSlots) -> Self {
        let decoded_by = Arc::new(DecodedBy {
            plugin: plugin.name().to_string(),
            sha256: plugin.sha256().to_string(),
            schema_version: plugin.description().schema_version.clone(),
        });
        Self {
            plugin,
            slots,
            decoded_by,
            breaker: None,
        }
    }

    /// Guards the plugin's calls with `breaker`.
    pub fn with_breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The plugin's circuit breaker, if it has one.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// Logs a breaker's change of state.
    fn report(&self, transition: Transition, grain_type: &str) {
        let plugin = self.plugin.name();
        let Some(breaker) = &self.breaker else { return };
        let config = breaker.config();
        let cooldown_ms = config.cooldown.as_millis() as u64;
        match transition {
            Transition::Opened => tracing::warn!(
                plugin,
                grain_type,
                faults = config.after_faults,
                cooldown_ms,
                "circuit breaker open: plugin paused after consecutive guest faults; its calls fail fast until a trial call behaves"
            ),
            Transition::Reopened => tracing::warn!(
                plugin,
                grain_type,
                cooldown_ms,
                "circuit breaker open again: the trial call faulted"
            ),
            Transition::Closed => tracing::info!(
                plugin,
                grain_type,
                "circuit breaker closed: the trial call behaved; plugin resumed"
            ),
        }
    }
}

#[async_trait]
impl SnapshotDecoder for PluginDecoder {
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
        let fail = |kind: CallErrorKind, message: String| CallError {
            plugin: self.plugin.name().to_string(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind,
            message,
        };
        let unavailable = |message: String| fail(CallErrorKind::Unavailable, message);
        if let Some(refused) = self.refuse(entry) {
            return Err(refused);
        }
        let crash_guard = self.slots.crash_guard().cloned();
        let trial = match self.breaker.as_deref().map(|b| b.admit(Instant::now())) {
            None | Some(Admission::Call { trial: false }) => false,
            Some(Admission::Call { trial: true }) => true,
            Some(Admission::Reject { retry_in, faults }) => {
                let next = if retry_in.is_zero() {
                    "a trial call is running".to_string()
                } else {
                    format!("next trial in {} ms", retry_in.as_millis())
                };
                return Err(unavailable(format!(
                    "plugin paused by its circuit breaker after {faults} consecutive guest faults; {next}"
                )));
            }
        };
        let mut guard = TrialGuard {
            breaker: self.breaker.as_deref().filter(|_| trial),
        };
        let permit = self
            .slots
            .acquire()
            .await
            .ok_or_else(|| unavailable("the host is shutting down".into()))?;
        let plugin = self.plugin.clone();
        // The blocking task needs its own entry: the payload is shared
        // (`Bytes`), so this copies the names, not the state.
        let entry_owned = entry.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = crash_guard.as_deref().map(|guard| {
                InFlightCall::start(guard, snapshot_id(&plugin, &snapshot_ref(&entry_owned)))
            });
            plugin.decode(snapshot_ref(&entry_owned))
        })
        .await
        .map_err(|e| unavailable(format!("the decode task failed: {e}")))?;
        metrics::histogram!("replica_plugin_call_duration_seconds", "grain_type" => entry.grain_type.clone())
            .record(started.elapsed().as_secs_f64());
        if let Some(breaker) = &self.breaker {
            guard.breaker = None;
            let fault = result.as_ref().is_err_and(|e| e.kind.is_guest_fault());
            if let Some(transition) = breaker.record(Instant::now(), fault, trial) {
                self.report(transition, &entry.grain_type);
            }
        }
        result
    }

    /// Up to `batch_max` snapshots per fresh instance (one per snapshot
    /// when it is 1), several instances one after another per trip to the
    /// blocking pool (see `tasks`), each trip on a decode slot of its
    /// own. With a circuit breaker, one call per snapshot (a trial is one
    /// snapshot).
    async fn decode_batch(&self, entries: &[LogEntry]) -> Vec<Result<State, CallError>> {
        if self.breaker.is_some() || entries.len() <= 1 {
            let mut results = Vec::with_capacity(entries.len());
            for entry in entries {
                results.push(self.decode(entry).await);
            }
            return results;
        }
        let mut results: Vec<Option<Result<State, CallError>>> =
            entries.iter().map(|e| self.refuse(e).map(Err)).collect();
        let runs: Vec<usize> = (0..entries.len())
            .filter(|&i| results[i].is_none())
            .collect();
        let tasks = tasks(&runs, entries, self.batch_max());
        let calls = tasks.iter().map(|indices| {
            let batch: Vec<&LogEntry> = indices.iter().map(|&i| &entries[i]).collect();
            self.run_batch(batch)
        });
        let decoded = futures::future::join_all(calls).await;
        for (indices, outcome) in tasks.iter().zip(decoded) {
            for (&i, result) in indices.iter().zip(outcome) {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every entry has a result"))
            .collect()
    }

    fn batch_max(&self) -> usize {
        if self.breaker.is_some() {
            1
        } else {
            self.plugin
                .limits()
                .batch_max
                .saturating_mul(INSTANCES_PER_TASK)
        }
    }

    fn decoded_by(&self) -> Option<Arc<DecodedBy>> {
        Some(Arc::clone(&self.decoded_by))
    }
}

impl PluginDecoder {
    /// Why `entry` must not reach the guest, if it must not: quarantined
    /// for killing the host, or a payload larger than the memory limit.
    fn refuse(&self, entry: &LogEntry) -> Option<CallError> {
        let fail = |kind: CallErrorKind, message: String| CallError {
            plugin: self.plugin.name().to_string(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind,
            message,
        };
        if let Some(guard) = self.slots.crash_guard()
            && guard.quarantines_any()
            && guard.verdict(&snapshot_id(&self.plugin, &snapshot_ref(entry)))
                == Verdict::Quarantined
        {
            return Some(fail(
                CallErrorKind::Quarantined,
                "the host died twice while decoding this snapshot; it is decoded again only when the grain type's plugin changes".into(),
            ));
        }
        // The payload is copied into the guest's memory: one larger than the
        // memory limit can never decode, so no guest code runs for it.
        let max_memory = self.plugin.limits().max_memory_bytes;
        if entry.payload.len() > max_memory {
            return Some(fail(
                CallErrorKind::OutOfMemory,
                format!(
                    "the payload is {} bytes, more than the plugin's memory limit of {max_memory} bytes; refused without calling the plugin",
                    entry.payload.len()
                ),
            ));
        }
        None
    }

    /// Decodes the snapshots `entries` makes on a decode slot that is free
    /// now, or not at all: returns `false` at once when every slot is busy
    /// (or closed), having made nothing, and otherwise `true`, having
    /// handed the work to the blocking pool. There the snapshots are
    /// decoded (up to `batch_max` per fresh instance, each marked in flight
    /// in the crash guard like any call) and `then` receives them with one
    /// result each, still on the slot. The caller never waits: shadow
    /// decoding uses this, so the candidate runs on spare capacity only
    /// and delays a served call by at most one call of its own. No breaker
    /// and no call-duration histogram: the calls are not the grain type's.
    pub fn decode_on_spare_slot(
        &self,
        entries: impl FnOnce() -> Vec<LogEntry>,
        then: impl FnOnce(Vec<LogEntry>, Vec<Result<State, CallError>>) + Send + 'static,
    ) -> bool {
        let Some(permit) = self.slots.try_acquire() else {
            return false;
        };
        let entries = entries();
        let refused: Vec<Option<CallError>> = entries.iter().map(|e| self.refuse(e)).collect();
        let plugin = self.plugin.clone();
        let crash_guard = self.slots.crash_guard().cloned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let runs: Vec<usize> = (0..entries.len())
                .filter(|&i| refused[i].is_none())
                .collect();
            let mut results: Vec<Option<Result<State, CallError>>> =
                refused.into_iter().map(|r| r.map(Err)).collect();
            let snapshots: Vec<SnapshotRef<'_>> =
                runs.iter().map(|&i| snapshot_ref(&entries[i])).collect();
            let decoded = plugin.decode_batch(&snapshots, |k| {
                crash_guard
                    .as_deref()
                    .map(|guard| InFlightCall::start(guard, snapshot_id(&plugin, &snapshots[k])))
            });
            for (&i, result) in runs.iter().zip(decoded) {
                results[i] = Some(result);
            }
            let results = results
                .into_iter()
                .map(|r| r.expect("every entry has a result"))
                .collect();
            drop(snapshots);
            then(entries, results);
        });
        true
    }

    /// Decodes `batch` on the blocking pool with one decode slot, each
    /// snapshot marked in flight in the crash guard while the guest runs it.
    async fn run_batch(&self, batch: Vec<&LogEntry>) -> Vec<Result<State, CallError>> {
        let Some(permit) = self.slots.acquire().await else {
            return self.unavailable_all(&batch, "the host is shutting down");
        };
        let plugin = self.plugin.clone();
        let crash_guard = self.slots.crash_guard().cloned();
        let owned = OwnedBatch::new(&batch);
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let snapshots = owned.snapshots();
            plugin.decode_batch(&snapshots, |i| {
                crash_guard
                    .as_deref()
                    .map(|guard| InFlightCall::start(guard, snapshot_id(&plugin, &snapshots[i])))
            })
        })
        .await;
        let per_call = started.elapsed().as_secs_f64() / batch.len() as f64;
        let histogram = metrics::histogram!("replica_plugin_call_duration_seconds", "grain_type" => batch[0].grain_type.clone());
        for _ in 0..batch.len() {
            histogram.record(per_call);
        }
        joined.unwrap_or_else(|e| {
            self.unavailable_all(&batch, &format!("the decode task failed: {e}"))
        })
    }

    /// `unavailable` for every entry of `batch`.
    fn unavailable_all(&self, batch: &[&LogEntry], message: &str) -> Vec<Result<State, CallError>> {
        batch
            .iter()
            .map(|entry| {
                Err(CallError {
                    plugin: self.plugin.name().to_string(),
                    grain_type: entry.grain_type.clone(),
                    grain_key: entry.grain_key.clone(),
                    sequence: entry.sequence,
                    kind: CallErrorKind::Unavailable,
                    message: message.to_string(),
                })
            })
            .collect()
    }
}

/// A batch's snapshots as the blocking task owns them: every name in one
/// string, and each payload's shared buffer. A copy of each entry costs
/// three `String`s apiece: ~10 % of a Counter catch-up through the plugin.
struct OwnedBatch {
    /// Each snapshot's grain type, grain key and source cluster, one after
    /// the other.
    names: String,
    snapshots: Vec<OwnedSnapshot>,
}

/// One snapshot of an [`OwnedBatch`].
struct OwnedSnapshot {
    /// Where its grain type, grain key and source cluster end in `names`
    /// (each starts where the one before ends).
    ends: [usize; 3],
    sequence: u64,
    timestamp_millis: i64,
    payload: bytes::Bytes,
}

impl OwnedBatch {
    fn new(entries: &[&LogEntry]) -> Self {
        let length = entries
            .iter()
            .map(|e| e.grain_type.len() + e.grain_key.len() + e.source_cluster.len())
            .sum();
        let mut names = String::with_capacity(length);
        let snapshots = entries
            .iter()
            .map(|e| {
                let mut ends = [0; 3];
                for (end, name) in
                    ends.iter_mut()
                        .zip([&e.grain_type, &e.grain_key, &e.source_cluster])
                {
                    names.push_str(name);
                    *end = names.len();
                }
                OwnedSnapshot {
                    ends,
                    sequence: e.sequence,
                    timestamp_millis: e.timestamp_millis,
                    payload: e.payload.clone(),
                }
            })
            .collect();
        Self { names, snapshots }
    }

    /// The snapshots as a decode call reads them, in order.
    fn snapshots(&self) -> Vec<SnapshotRef<'_>> {
        let mut start = 0;
        self.snapshots
            .iter()
            .map(|s| {
                let [grain_type, grain_key, source_cluster] = s.ends;
                let snapshot = SnapshotRef {
                    grain_type: &self.names[start..grain_type],
                    grain_key: &self.names[grain_type..grain_key],
                    sequence: s.sequence,
                    timestamp_millis: s.timestamp_millis,
                    source_cluster: &self.names[grain_key..source_cluster],
                    payload: &s.payload,
                };
                start = source_cluster;
                snapshot
            })
            .collect()
    }
}

/// `runs` (indices into `entries`) split into the trips to the blocking
/// pool: consecutive runs of at most `max` snapshots and, past the first,
/// at most [`TASK_PAYLOAD_BYTES`] of payload.
fn tasks<'r>(runs: &'r [usize], entries: &[LogEntry], max: usize) -> Vec<&'r [usize]> {
    let mut tasks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, &i) in runs.iter().enumerate() {
        let len = entries[i].payload.len();
        if at > start && (at - start == max || bytes + len > TASK_PAYLOAD_BYTES) {
            tasks.push(&runs[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += len;
    }
    if start < runs.len() {
        tasks.push(&runs[start..]);
    }
    tasks
}

/// `snapshot`'s identity for the crash guard, as decoded by `plugin`.
fn snapshot_id<'a>(plugin: &LoadedPlugin, snapshot: &SnapshotRef<'a>) -> SnapshotId<'a> {
    SnapshotId::of(
        plugin.sha256_bytes(),
        snapshot.grain_type,
        snapshot.grain_key,
        snapshot.sequence,
    )
}

/// The fields of `entry` a decode call reads.
fn snapshot_ref(e: &LogEntry) -> SnapshotRef<'_> {
    SnapshotRef {
        grain_type: &e.grain_type,
        grain_key: &e.grain_key,
        sequence: e.sequence,
        timestamp_millis: e.timestamp_millis,
        source_cluster: &e.source_cluster,
        payload: &e.payload,
    }
}

/// A guarded call on the blocking pool: its slot is written before the
/// guest runs and cleared after; a suspect runs alone and, having not
/// killed the host, is acquitted.
struct InFlightCall<'g, 'a> {
    guard: &'g CrashGuard,
    id: SnapshotId<'a>,
    suspect: bool,
    _slot: super::crash_guard::InFlight<'g>,
}

impl<'g, 'a> InFlightCall<'g, 'a> {
    fn start(guard: &'g CrashGuard, id: SnapshotId<'a>) -> Self {
        let verdict = guard.verdict(&id);
        let slot = guard.enter(&id, &verdict);
        Self {
            guard,
            suspect: verdict == Verdict::Suspect,
            id,
            _slot: slot,
        }
    }
}

impl Drop for InFlightCall<'_, '_> {
    fn drop(&mut self) {
        if self.suspect {
            self.guard.acquit(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication_log::EntryType;

    fn entry(payload_bytes: usize) -> LogEntry {
        LogEntry {
            grain_type: "T".into(),
            grain_key: "k".into(),
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: String::new(),
            entry_type: EntryType::FullState,
            payload: vec![0; payload_bytes].into(),
        }
    }

    #[test]
    fn trips_to_the_blocking_pool_are_bounded_by_count_and_bytes() {
        let small: Vec<LogEntry> = (0..10).map(|_| entry(10)).collect();
        let runs: Vec<usize> = (0..10).filter(|i| i % 3 != 1).collect();
        let lengths = |tasks: Vec<&[usize]>| tasks.iter().map(|t| t.len()).collect::<Vec<_>>();
        assert_eq!(lengths(tasks(&runs, &small, 3)), [3, 3, 1]);
        assert_eq!(tasks(&runs, &small, 3).concat(), runs);
        assert_eq!(lengths(tasks(&runs, &small, 100)), [7]);
        assert!(tasks(&[], &small, 3).is_empty());
        // Large payloads: cut by bytes; one larger than the bound goes alone.
        let third = TASK_PAYLOAD_BYTES / 3;
        let large = vec![
            entry(third),
            entry(third),
            entry(third),
            entry(third),
            entry(TASK_PAYLOAD_BYTES * 2),
            entry(1),
        ];
        assert_eq!(
            lengths(tasks(&[0, 1, 2, 3, 4, 5], &large, 100)),
            [3, 1, 1, 1]
        );
    }
}
