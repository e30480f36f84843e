//! The data the store keeps per grain, and the events it publishes.

use std::time::SystemTime;

use std::sync::Arc;

use crate::decode::DecodedBy;
use crate::value::State;

/// How current a replica is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplicaStatus {
    /// The newest snapshot read from the log is applied.
    Ok,
    /// The log holds something after the applied snapshot that the host
    /// refuses: a Delta, *or an unreadable row* (unknown `entry_type`, bad
    /// sequence or column type). The replica lacks it until a newer
    /// snapshot arrives. "Behind", not "failing": what is served is the
    /// newest state the host can read.
    Behind {
        /// The sequence of the newest refused entry after the applied
        /// snapshot, a Delta's or an unreadable row's (the name, which the
        /// HTTP API and the checkpoint carry, is the common case's).
        delta_sequence: u64,
    },
    /// The newest snapshot does not decode; the replica keeps its last good
    /// state and the consumer retries with backoff.
    Failing {
        /// The sequence of the newest snapshot that failed to decode.
        sequence: u64,
        /// Why it failed, in one line.
        reason: String,
    },
}

impl ReplicaStatus {
    /// A stable snake_case label: `ok`, `behind` or `failing`.
    pub fn label(&self) -> &'static str {
        match self {
            ReplicaStatus::Ok => "ok",
            ReplicaStatus::Behind { .. } => "behind",
            ReplicaStatus::Failing { .. } => "failing",
        }
    }
}

/// What a decode returns for one snapshot: its typed state and the log
/// entry's identity, ready to be applied to the store. (The plugin's input,
/// the guest SDK's `Snapshot`, is the log entry's payload.)
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSnapshot {
    /// The typed state, validated.
    pub state: State,
    /// The log entry's sequence.
    pub sequence: u64,
    /// The primary's wall clock (Unix ms) when it wrote the entry.
    pub timestamp_millis: i64,
    /// The cluster that wrote the entry.
    pub source_cluster: String,
    /// The plugin build that decoded it (`None` for a native decoder).
    pub decoded_by: Option<Arc<DecodedBy>>,
}

/// A point-in-time copy of one grain's replica. Cheap to clone: the
/// [`State`] buffer is shared, not copied.
///
/// A grain known to the store whose snapshots never decoded has no `state`,
/// `sequence` 0, `timestamp_millis` 0, an empty `source_cluster` and no
/// `applied_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The typed state of the applied snapshot, if any.
    pub state: Option<State>,
    /// The applied snapshot's sequence (0 when none).
    pub sequence: u64,
    /// The applied snapshot's timestamp (primary's Unix ms; 0 when none).
    pub timestamp_millis: i64,
    /// The cluster that wrote the applied snapshot (empty when none).
    pub source_cluster: String,
    /// When this host applied the snapshot.
    pub applied_at: Option<SystemTime>,
    /// The plugin build that decoded the state (`None` without state, or
    /// for a native decoder).
    pub decoded_by: Option<Arc<DecodedBy>>,
    /// How current the replica is.
    pub status: ReplicaStatus,
}

impl Replica {
    /// Whether a snapshot has been applied.
    pub fn has_state(&self) -> bool {
        self.state.is_some()
    }
}

/// Where one grain's replica stands ([`super::ReplicaStore::standing`]):
/// a few fields, not a copy of the replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// The applied snapshot's sequence; `None` without state.
    pub applied: Option<u64>,
    /// The plugin build that decoded the state.
    pub decoded_by: Option<Arc<DecodedBy>>,
    /// How current the replica is.
    pub status: ReplicaStatus,
}

/// A replica saved earlier, handed back to [`super::ReplicaStore::restore`]
/// (a checkpoint being loaded). Names are `Arc`s so the loader can share
/// one allocation between its rows and the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// The grain's key.
    pub grain_key: Arc<str>,
    /// The saved state; `None` for a grain that never decoded (the
    /// fields below but `status` are then not used).
    pub state: Option<State>,
    /// The applied snapshot's sequence.
    pub sequence: u64,
    /// The primary's clock when it wrote that snapshot (Unix ms).
    pub timestamp_millis: i64,
    /// The cluster that wrote it.
    pub source_cluster: Arc<str>,
    /// The plugin build that decoded it.
    pub decoded_by: Option<Arc<DecodedBy>>,
    /// How current the replica was.
    pub status: ReplicaStatus,
}

/// What changed in a [`ReplicaChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A newer snapshot was applied (the status may have changed too).
    Applied,
    /// Only the status changed.
    Status,
    /// The replica was removed.
    Removed,
}

/// A change published by [`super::ReplicaStore::subscribe`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaChange {
    /// What changed.
    pub kind: ChangeKind,
    /// The replica after the change (before it, for [`ChangeKind::Removed`]).
    pub replica: Replica,
}

/// How many replicas of one grain type are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Replicas with status [`ReplicaStatus::Ok`].
    pub ok: usize,
    /// Replicas with status [`ReplicaStatus::Behind`].
    pub behind: usize,
    /// Replicas with status [`ReplicaStatus::Failing`].
    pub failing: usize,
}

impl StatusCounts {
    /// All replicas counted.
    pub fn total(&self) -> usize {
        self.ok + self.behind + self.failing
    }
}

/// Why [`super::ReplicaStore::apply`] refused a snapshot: replicas never go
/// backwards, and the same sequence is applied again only when another
/// plugin build decoded it (a re-decode after a swap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stale snapshot for {grain_type}/{grain_key}: sequence {offered} is not above the applied {current}"
)]
pub struct StaleSnapshot {
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The sequence already applied.
    pub current: u64,
    /// The refused sequence.
    pub offered: u64,
}
