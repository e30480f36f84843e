//! The replication consumer: keeps a typed replica of every grain of the
//! configured grain types, from the replication log.
//!
//! # Model
//! Logically there is one consumer per replicated grain, as in Orlando's
//! seed. Physically:
//! - per grain type, ONE discovery task (`discovery.rs`) asks the log every
//!   poll interval which grains have new entries:
//!   [`ReplicationLog::changes_since`](crate::replication_log::ReplicationLog::changes_since),
//!   a full listing first and periodically, incremental in between where the
//!   backend has a change watermark (SQLite's rowid). It starts a grain task
//!   for each grain it has not seen (so grains created while running are
//!   found) and tells every grain task its grain's newest sequence through a
//!   `tokio::sync::watch` channel;
//! - each grain task (`grain.rs`) reads its grain's entries only when that head
//!   is above what it has read, when its last batch was full, or when a retry
//!   is due. Idle grains cost no queries: a poll costs one query per grain
//!   type plus one per grain with new entries.
//!
//! # Semantics (issue 3; where the seed differed)
//! - Deltas and uninterpretable rows ([`LogRecord::Refused`](crate::replication_log::LogRecord))
//!   never reach a decoder: each is logged at error level with grain type,
//!   key and sequence, counted once, and passed over. Unlike the seed, they do
//!   not throw away the rest of the batch.
//! - The newest FullState of a batch is decoded and applied; older ones are
//!   skipped without decoding. If the newest fails, the next newest above the
//!   applied sequence is tried, and so on.
//! - The position never passes a snapshot that was neither applied nor
//!   superseded by an applied one; the pure rules live in [`batch`].
//! - A grain whose newest snapshot does not decode keeps its last good state,
//!   is marked failing, and retries with capped exponential backoff; new
//!   entries are read as they arrive, so a newer snapshot that decodes
//!   recovers it at once. Grains never wait for each other: each has its own
//!   task and no lock is held across a read or a decode.
//! - Read errors are logged, counted and retried with backoff from the same
//!   position: nothing is lost or reordered.
//! - Shutdown: every task watches the shutdown signal, including during reads
//!   and decodes, so all stop within one poll interval (in practice at once).

pub mod batch;
pub mod config;
mod discovery;
mod grain;
pub mod log_limiter;
pub mod metrics;
mod replicator;
mod shutdown;

use async_trait::async_trait;

use crate::plugin::CallError;
use crate::replication_log::LogEntry;
use crate::value::Value;

pub use config::ConsumerConfig;
pub use metrics::{ConsumerMetrics, GrainTypeCounters, GrainTypeStats, MetricsSnapshot};
pub use replicator::Replicator;

/// Turns a FullState entry's payload into the grain's typed state. The
/// consumer calls it only with FullState entries, possibly concurrently for
/// different grains. A panic is treated as a [`CallErrorKind::Trap`](crate::plugin::CallErrorKind::Trap).
#[async_trait]
pub trait SnapshotDecoder: Send + Sync + 'static {
    /// Decodes one snapshot.
    async fn decode(&self, entry: &LogEntry) -> Result<Value, CallError>;
}
