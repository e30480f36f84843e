//! The replication consumer: keeps a typed replica of every grain of the
//! configured grain types, from the replication log.
//!
//! # Model
//! Logically there is one consumer per replicated grain, as in Orlando's
//! own secondary-side consumer loop (`bench/seed.rs` reproduces it).
//! Physically no task waits on a grain: every grain is a compact entry
//! in its grain type's table (`scheduler.rs`), and a bounded pool of workers
//! runs one step of a grain at a time (`grain.rs`: read, decode, apply):
//! - per grain type ONE driver task asks the log every poll interval which
//!   grains have new entries (`discovery.rs`:
//!   [`ReplicationLog::changes_since`](crate::replication_log::ReplicationLog::changes_since),
//!   a full listing first and periodically, incremental in between where the
//!   backend has a change watermark), adds new grains to its table, and
//!   queues a grain only when its head is above what it has read, when its
//!   last batch was full, or when a retry is due. Idle grains cost no
//!   queries and no task.
//! - at startup the grains of the first listing are caught up in bulk: the
//!   log's ordered scan hands each grain all its rows, a page at a time
//!   ([`ReplicationLog::scan`](crate::replication_log::ReplicationLog::scan)),
//!   instead of one query per grain; [`CatchUp`] tells how far that is.
//!
//! - with `[consumer] verify_interval_s`, each scheduler also re-checks a
//!   slice of its grains against the log every interval and reads a
//!   divergent grain again ([`anti_entropy`]).
//!
//! # Semantics (ARCHITECTURE.md, "The consumer, and where it differs from Orlando's")
//! - Deltas and uninterpretable rows ([`LogRecord::Refused`](crate::replication_log::LogRecord))
//!   never reach a decoder: each is logged at error level with grain type,
//!   key and sequence, counted once, and passed over. Unlike Orlando's consumer, they do
//!   not throw away the rest of the batch.
//! - The newest FullState of a batch is decoded and applied; older ones are
//!   skipped without decoding. If the newest fails, the next newest above the
//!   applied sequence is tried, and so on.
//! - The position never passes a snapshot that was neither applied nor
//!   superseded by an applied one; the pure rules live in [`batch`].
//! - A grain whose newest snapshot does not decode keeps its last good state,
//!   is marked failing, and retries with capped exponential backoff; new
//!   entries are read as they arrive, so a newer snapshot that decodes
//!   recovers it at once. Grains never wait for each other beyond the
//!   worker pool's bound: a grain's step holds no lock across a read or a
//!   decode, and a slow grain holds one worker.
//! - Read errors are logged, counted and retried with backoff from the same
//!   position: nothing is lost or reordered.
//! - Shutdown: every driver and step watches the shutdown signal, including
//!   during reads and decodes, so all stop within one poll interval (in
//!   practice at once).

pub mod anti_entropy;
mod backoff;
pub mod batch;
mod bulk;
pub mod catch_up;
pub mod config;
mod discovery;
pub mod freshness;
mod grain;
pub mod metrics;
mod replicator;
mod scheduler;
pub mod shard;

pub use crate::decode::SnapshotDecoder;
pub use anti_entropy::VerifySettings;
pub use catch_up::{CatchUp, CatchUpProgress, TypeCatchUp};
pub use config::{ConsumerConfig, DEFAULT_WORKERS};
pub use discovery::list_first;
pub use freshness::Freshness;
pub use metrics::{ConsumerMetrics, GrainTypeStats};
pub use replicator::{Replicator, ReplicatorControl};
pub use shard::Shard;
