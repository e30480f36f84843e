//! # replica-host
//!
//! Keeps typed, read-only replicas of Orlando grains: it polls the
//! replication log an Orlando primary writes, hands each full-state
//! snapshot to the WebAssembly plugin of its grain type, and serves the
//! decoded state over HTTP and to embedders.
//!
//! ## The data path, in flow order
//!
//! 1. [`replication_log`]: the log and its backends (SQLite, PostgreSQL,
//!    memory); what changed since a cursor, a grain's entries, the bulk scan.
//! 2. [`consumer`]: one logical consumer per grain, run by a scheduler per
//!    grain type on a shared worker pool; [`consumer::batch`] decides which
//!    snapshot of a batch is applied (and refuses Deltas).
//! 3. [`decode`]: the seam between the two halves, the [`SnapshotDecoder`]
//!    interface and its errors.
//! 4. [`plugin`]: the Wasm runtime behind that seam: compile, check and call
//!    a plugin in a fresh, limited instance; [`plugin::limits`] bounds its
//!    time, memory and output.
//! 5. [`value`]: the typed state a plugin returns, validated, rendered as JSON.
//! 6. [`store`]: the replicas, sequence-guarded, watchable.
//! 7. [`daemon`]: `replica-host run`, whose [`daemon::http`] answers
//!    `/v1/replicas/...`, `/metrics` and the rest of the HTTP API.
//!
//! Around the path: [`contract`] (bindings of the plugin contract),
//! [`config`] and [`plugin_set`] (the daemon's config and the plugins it
//! loads at startup), [`secret`] (a password never printed), [`shutdown`]
//! (stopping every task), [`log_limiter`] (rate-limited repeated log lines),
//! [`text`] (escaping text the host did not write before it is logged or
//! served), [`json_diff`] (where two states differ, by field path) and
//! [`fixture_command`] (the command that captures a failing grain's
//! snapshot as a test case).
//!
//! The binary's tools, `bench`, `demo`, `authoring` (`plugin new`,
//! golden tests, dry runs against a log) and `verify` (a host compared
//! with the log), are built only with the `tools`
//! feature (on by default; the `replica-host` binary needs it). An
//! embedder can leave it off: `default-features = false`.
//!
//! ## Embedding
//!
//! Open a log with [`replication_log::open`], load plugins with
//! [`PluginEngine`] and [`LoadedPlugin`] (wrapped as a [`PluginDecoder`]),
//! run a [`Replicator`] into a [`ReplicaStore`], and read
//! [`Replica`]s whose [`State`] renders as JSON or reads into your own
//! Rust type. `ARCHITECTURE.md` draws the modules and their dependencies.

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
