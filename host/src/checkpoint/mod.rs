//! The durable checkpoint (`[store] checkpoint`): a file of the host's
//! replicas, so a restart serves them at once and reads only what the log
//! changed since, instead of rebuilding everything from the log.
//!
//! - **What it holds**, per replica: grain type, key, applied sequence,
//!   timestamp, source cluster, `decoded_by`, status, the state's encoded
//!   buffer, and a checksum of all of these. Plus the log URL (password
//!   hidden) and cluster id it was written for.
//! - **The engine** is SQLite (`file.rs`, ARCHITECTURE.md says why): one
//!   file, each flush one transaction in WAL mode, so a process killed at
//!   any point leaves the last committed flush intact.
//! - **Writing** (`writer.rs`) runs in the background: every few seconds
//!   the replicas changed since the last pass (by the store's version) are
//!   written, at most a bounded number of rows per flush; at SIGTERM
//!   everything left is written.
//! - **Loading** (`load.rs`) happens before the consumers start. Every row's
//!   checksum is checked and every state validated under its plugin's
//!   limits; any failure (corrupt, truncated, not a checkpoint) refuses the
//!   whole file with one warning line: nothing of it is served, and the
//!   host catches up in full. A file of another log or cluster is refused
//!   the same way. Replicas of grain types no longer configured are left
//!   out.

mod file;
mod load;
mod writer;

pub use file::{CheckpointError, CheckpointFile, Identity};
pub use load::load_into;
pub use writer::CheckpointWriter;
#[cfg(feature = "tools")]
pub use writer::WriterStats;
