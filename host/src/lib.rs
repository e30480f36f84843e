//! # replica-host
//!
//! Keeps typed, read-only replicas of Orlando grains: it polls the
//! replication log an Orlando primary writes, hands each full-state
//! snapshot to the WebAssembly plugin of its grain type, and serves the
//! decoded state over HTTP and to embedders.
//!
//! ## Embedding
//!
//! Everything an embedder uses is re-exported here. Open a log with
//! [`replication_log::open`], load a directory of plugins with
//! [`PluginDir::load`] (or one by one: [`PluginEngine`], [`LoadedPlugin`],
//! [`PluginDecoder`]), run a [`Replicator`] into a [`ReplicaStore`], await
//! [`CatchUp::caught_up`], and read [`Replica`]s whose [`State`] renders as
//! JSON or reads into your own Rust type. A native decoder implements
//! [`SnapshotDecoder`]. `host/examples/orlando_secondary.rs` does all of it
//! in one screen. [`daemon`] is `replica-host run`'s entry point, for a
//! host run in-process.
//!
//! ## The data path, in flow order (`host/src/`)
//!
//! 1. `replication_log/`: the log and its backends (SQLite, PostgreSQL,
//!    memory); what changed since a cursor, a grain's entries, the bulk scan.
//! 2. `consumer/`: one logical consumer per grain, run by a scheduler per
//!    grain type on a shared worker pool. **Which snapshot of a batch is
//!    applied** (the newest FullState that decodes; Deltas refused) is
//!    decided in `consumer/batch.rs`, alone and without I/O.
//! 3. `decode.rs`: the seam between the two halves, the [`SnapshotDecoder`]
//!    interface and its errors ([`CallError`]).
//! 4. `plugin/`: the Wasm runtime behind that seam: compile, check and call
//!    a plugin in a fresh instance. **What limits a plugin's memory** (and
//!    time and output) is [`PluginLimits`], enforced per call in
//!    `plugin/loaded.rs` (`new_store`: `MemoryLimiter` of
//!    `plugin/call_state.rs`, the epoch deadline, hostcall fuel).
//! 5. `value/`: the typed state a plugin returns, validated, rendered as JSON.
//! 6. `store/`: the replicas, sequence-guarded, watchable.
//! 7. `daemon/`: `replica-host run`. **What answers `/v1/replicas/...`** is
//!    `daemon/http/replicas.rs` (the routes are in `daemon/http/mod.rs`).
//!
//! Around the path: `contract.rs` (bindings of the plugin contract),
//! `checkpoint/` (the durable checkpoint), `secret.rs` (a password never
//! printed), `shutdown.rs` (stopping every task), `repeat_limiter.rs`
//! (repeated tracing lines: the first in full, then a summary), `text.rs`
//! (escaping text the host did not write), `json_diff.rs` (where two
//! states differ) and `fixture_command.rs` (the command that captures a
//! failing grain's snapshot as a test case).
//!
//! The binary's tools, `cli` (the command line), `bench`, `demo`,
//! `authoring` (`plugin new | build | test`, dry runs) and `verify`, and
//! their dependencies (clap, reqwest, wit-component, …) are built only with
//! the `tools` feature (on by default; the `replica-host` binary needs
//! it). An embedder leaves it off: `default-features = false`.
//! `ARCHITECTURE.md` draws the modules and their dependencies.

#[cfg(feature = "tools")]
pub(crate) mod authoring;
#[cfg(feature = "tools")]
pub(crate) mod bench;
pub(crate) mod checkpoint;
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod cli;
pub(crate) mod consumer;
pub(crate) mod contract;
pub mod daemon;
pub(crate) mod decode;
#[cfg(feature = "tools")]
pub(crate) mod demo;
pub(crate) mod fixture_command;
pub(crate) mod json_diff;
pub(crate) mod plugin;
pub(crate) mod repeat_limiter;
pub mod replication_log;
pub(crate) mod secret;
pub(crate) mod shutdown;
pub(crate) mod store;
#[doc(hidden)]
pub mod test_seam;
pub(crate) mod text;
pub(crate) mod value;
#[cfg(feature = "tools")]
pub(crate) mod verify;

pub use consumer::{
    CatchUp, CatchUpProgress, ConsumerConfig, ConsumerMetrics, GrainTypeStats, Replicator,
    ReplicatorControl, Shard,
};
pub use decode::{CallError, CallErrorKind, DecodedBy, SnapshotDecoder};
pub use plugin::{
    CacheDirError, CacheOutcome, ComponentCache, DecodeSlots, EngineOptions, InstanceAllocation,
    LoadError, LoadedPlugin, PluginDecoder, PluginDir, PluginDirError, PluginEngine, PluginError,
    PluginLimits, SnapshotRef,
};
pub use shutdown::{Shutdown, StopSignal};
pub use store::{ChangeKind, DecodedSnapshot, Replica, ReplicaChange, ReplicaStatus, ReplicaStore};
pub use value::{OutputLimits, State, Value};
