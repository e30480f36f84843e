//! Counters of the consumer, per grain type, for logs and a metrics exporter.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::anti_entropy::Mismatch;
use crate::decode::CallErrorKind;

/// Every [`CallErrorKind`], in the order [`GrainTypeStats::decode_failures`] lists them.
pub const CALL_ERROR_KINDS: [CallErrorKind; 9] = [
    CallErrorKind::MalformedPayload,
    CallErrorKind::UnsupportedSchemaVersion,
    CallErrorKind::Rejected,
    CallErrorKind::Trap,
    CallErrorKind::Timeout,
    CallErrorKind::OutOfMemory,
    CallErrorKind::BadOutput,
    CallErrorKind::Unavailable,
    CallErrorKind::Quarantined,
];

fn kind_index(kind: CallErrorKind) -> usize {
    match kind {
        CallErrorKind::MalformedPayload => 0,
        CallErrorKind::UnsupportedSchemaVersion => 1,
        CallErrorKind::Rejected => 2,
        CallErrorKind::Trap => 3,
        CallErrorKind::Timeout => 4,
        CallErrorKind::OutOfMemory => 5,
        CallErrorKind::BadOutput => 6,
        CallErrorKind::Unavailable => 7,
        CallErrorKind::Quarantined => 8,
    }
}

/// Live counters of one grain type; monotonic, updated by the consumer tasks.
#[derive(Debug, Default)]
pub struct GrainTypeCounters {
    /// Grains known to the consumer.
    grains: AtomicU64,
    /// Snapshots applied to the store.
    snapshots_applied: AtomicU64,
    /// Snapshots superseded by a newer one in the same batch, never decoded.
    snapshots_skipped: AtomicU64,
    /// Delta entries refused.
    deltas_refused: AtomicU64,
    /// Rows the host could not interpret, refused.
    rows_refused: AtomicU64,
    /// Failed decodes, by `CallErrorKind`.
    decode_failures: [AtomicU64; CALL_ERROR_KINDS.len()],
    /// Failed reads of a grain's entries.
    read_errors: AtomicU64,
    /// Failed listings of the grain type.
    discovery_errors: AtomicU64,
    /// Grains waiting for a worker now.
    queue_depth: AtomicU64,
    /// How long the oldest of them has waited, in ms.
    oldest_ready_ms: AtomicU64,
    /// Divergent replicas anti-entropy found (and read again), by kind.
    verify_mismatches: [AtomicU64; Mismatch::ALL.len()],
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl GrainTypeCounters {
    pub(crate) fn grain_discovered(&self) {
        bump(&self.grains);
    }
    pub(crate) fn snapshot_applied(&self) {
        bump(&self.snapshots_applied);
    }
    pub(crate) fn snapshots_skipped(&self, n: usize) {
        self.snapshots_skipped
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn delta_refused(&self) {
        bump(&self.deltas_refused);
    }
    pub(crate) fn row_refused(&self) {
        bump(&self.rows_refused);
    }
    pub(crate) fn decode_failed(&self, kind: CallErrorKind) {
        bump(&self.decode_failures[kind_index(kind)]);
    }
    pub(crate) fn read_error(&self) {
        bump(&self.read_errors);
    }
    pub(crate) fn discovery_error(&self) {
        bump(&self.discovery_errors);
    }
    pub(crate) fn verify_mismatch(&self, kind: Mismatch) {
        bump(&self.verify_mismatches[kind.index()]);
    }
    pub(crate) fn set_queue(&self, depth: u64, oldest_ready_ms: u64) {
        self.queue_depth.store(depth, Ordering::Relaxed);
        self.oldest_ready_ms
            .store(oldest_ready_ms, Ordering::Relaxed);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> GrainTypeStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GrainTypeStats {
            grains: load(&self.grains),
            snapshots_applied: load(&self.snapshots_applied),
            snapshots_skipped: load(&self.snapshots_skipped),
            deltas_refused: load(&self.deltas_refused),
            rows_refused: load(&self.rows_refused),
            decode_failures: CALL_ERROR_KINDS
                .iter()
                .map(|&kind| (kind, load(&self.decode_failures[kind_index(kind)])))
                .collect(),
            read_errors: load(&self.read_errors),
            discovery_errors: load(&self.discovery_errors),
            queue_depth: load(&self.queue_depth),
            oldest_ready_ms: load(&self.oldest_ready_ms),
            verify_mismatches: Mismatch::ALL
                .iter()
                .map(|&kind| (kind, load(&self.verify_mismatches[kind.index()])))
                .collect(),
        }
    }
}

/// The counters of one grain type at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrainTypeStats {
    /// Grains discovered (consumers started).
    pub grains: u64,
    /// Snapshots decoded and applied.
    pub snapshots_applied: u64,
    /// Older FullState entries passed over without decoding because a newer
    /// snapshot of the same batch was applied.
    pub snapshots_skipped: u64,
    /// Delta entries refused.
    pub deltas_refused: u64,
    /// Rows refused because the host cannot interpret them.
    pub rows_refused: u64,
    /// Failed decode attempts, per kind, in `CALL_ERROR_KINDS` order.
    pub decode_failures: Vec<(CallErrorKind, u64)>,
    /// Failed reads of grains' entries.
    pub read_errors: u64,
    /// Failed listings of the grain type's grains.
    pub discovery_errors: u64,
    /// Grains with a step due, waiting for a worker (a gauge).
    pub queue_depth: u64,
    /// How long the oldest of them has waited, ms (a gauge).
    pub oldest_ready_ms: u64,
    /// Divergent replicas anti-entropy found and read again, per kind, in
    /// `Mismatch::ALL` order.
    pub verify_mismatches: Vec<(Mismatch, u64)>,
}

impl GrainTypeStats {
    /// Failed decode attempts of one kind.
    pub fn decode_failures_of(&self, kind: CallErrorKind) -> u64 {
        self.decode_failures
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Failed decode attempts of all kinds.
    pub fn decode_failures_total(&self) -> u64 {
        self.decode_failures.iter().map(|(_, n)| n).sum()
    }
}

/// All counters of a [`super::Replicator`]; shared as `Arc<ConsumerMetrics>`.
#[derive(Debug, Default)]
pub struct ConsumerMetrics {
    /// Counters by grain type.
    per_type: RwLock<HashMap<String, Arc<GrainTypeCounters>>>,
    /// Grain types in the log that no plugin handles, with their grain counts.
    unhandled: Mutex<BTreeMap<String, u64>>,
    /// Failed scans for the log's grain types.
    grain_type_scan_errors: AtomicU64,
    /// The worker pool's size.
    workers: AtomicU64,
    /// Workers running a grain step now.
    workers_busy: AtomicU64,
}

/// Every counter at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Counters per replicated grain type.
    pub grain_types: BTreeMap<String, GrainTypeStats>,
    /// Grain types found in the log without a decoder, with how many grains
    /// each had when first reported.
    pub unhandled_grain_types: BTreeMap<String, u64>,
    /// Failed listings of the log's grain types.
    pub grain_type_scan_errors: u64,
    /// The worker pool's size.
    pub workers: u64,
    /// Workers running a step now.
    pub workers_busy: u64,
}

impl ConsumerMetrics {
    /// The counters of a grain type, created on first use.
    pub fn counters(&self, grain_type: &str) -> Arc<GrainTypeCounters> {
        if let Some(c) = self
            .per_type
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(grain_type)
        {
            return Arc::clone(c);
        }
        let mut per_type = self
            .per_type
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(per_type.entry(grain_type.to_owned()).or_default())
    }

    /// Records a grain type without a decoder; true the first time.
    pub(crate) fn note_unhandled(&self, grain_type: &str, grains: u64) -> bool {
        let mut unhandled = self
            .unhandled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if unhandled.contains_key(grain_type) {
            return false;
        }
        unhandled.insert(grain_type.to_owned(), grains);
        true
    }

    /// Whether a grain type was already reported as having no decoder.
    pub(crate) fn is_unhandled(&self, grain_type: &str) -> bool {
        self.unhandled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(grain_type)
    }

    pub(crate) fn grain_type_scan_error(&self) {
        bump(&self.grain_type_scan_errors);
    }

    pub(crate) fn set_workers(&self, workers: u64) {
        self.workers.store(workers, Ordering::Relaxed);
    }

    pub(crate) fn worker_started(&self) {
        bump(&self.workers_busy);
    }

    pub(crate) fn worker_finished(&self) {
        self.workers_busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let grain_types = self
            .per_type
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(grain_type, c)| (grain_type.clone(), c.snapshot()))
            .collect();
        MetricsSnapshot {
            grain_types,
            unhandled_grain_types: self
                .unhandled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            grain_type_scan_errors: self.grain_type_scan_errors.load(Ordering::Relaxed),
            workers: self.workers.load(Ordering::Relaxed),
            workers_busy: self.workers_busy.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_type_and_kind() {
        let metrics = ConsumerMetrics::default();
        let counter = metrics.counters("Counter");
        counter.snapshot_applied();
        counter.snapshot_applied();
        counter.delta_refused();
        counter.row_refused();
        counter.snapshots_skipped(3);
        counter.decode_failed(CallErrorKind::Trap);
        counter.decode_failed(CallErrorKind::Trap);
        counter.decode_failed(CallErrorKind::MalformedPayload);
        metrics.counters("Counter").read_error();
        metrics.counters("Other").discovery_error();

        let snap = metrics.snapshot();
        let stats = &snap.grain_types["Counter"];
        assert_eq!(stats.snapshots_applied, 2);
        assert_eq!(stats.deltas_refused, 1);
        assert_eq!(stats.rows_refused, 1);
        assert_eq!(stats.snapshots_skipped, 3);
        assert_eq!(stats.read_errors, 1);
        assert_eq!(stats.decode_failures_of(CallErrorKind::Trap), 2);
        assert_eq!(stats.decode_failures_of(CallErrorKind::MalformedPayload), 1);
        assert_eq!(stats.decode_failures_of(CallErrorKind::Timeout), 0);
        assert_eq!(stats.decode_failures_total(), 3);
        assert_eq!(stats.decode_failures.len(), CALL_ERROR_KINDS.len());
        assert_eq!(snap.grain_types["Other"].discovery_errors, 1);
        assert_eq!(snap.grain_types["Other"].snapshots_applied, 0);
    }

    #[test]
    fn unhandled_types_are_noted_once() {
        let metrics = ConsumerMetrics::default();
        assert!(metrics.note_unhandled("Ghost", 4));
        assert!(!metrics.note_unhandled("Ghost", 5));
        assert!(metrics.is_unhandled("Ghost"));
        assert!(!metrics.is_unhandled("Counter"));
        assert_eq!(metrics.snapshot().unhandled_grain_types["Ghost"], 4);
    }

    #[test]
    fn kind_order_matches_the_index() {
        for (i, kind) in CALL_ERROR_KINDS.iter().enumerate() {
            assert_eq!(kind_index(*kind), i);
        }
    }
}
