//! A loaded plugin: compiled once (or loaded from the precompiled cache),
//! pre-instantiated, and called in a fresh instance for every snapshot.
//!
//! # Isolation
//! [`LoadedPlugin::decode`] instantiates the plugin anew from its
//! `InstancePre` for every call and drops the instance afterwards, so no
//! guest state survives a call and one grain's payload can never reach
//! another grain's replica. With the engine's default pooling allocator the
//! instance's slot is reset by wasmtime when the store is dropped (memory
//! back to its copy-on-write image, see [`super::engine`]), which is what
//! makes a fresh instance cost microseconds rather than a fresh mapping.
//! [`LoadedPlugin::decode_batch`] lets one fresh instance decode several
//! snapshots in a row (`batch.rs`), dropping it at the first fault.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::PluginLimits;
use super::cache::{CacheOutcome, ComponentCache};
use super::call_state::CallState;
use super::checks::{check_component, check_header};
use super::engine::{PluginEngine, deadline_ticks};
use super::error::{LoadError, PluginError, one_line};
use crate::contract::types::{self, ErrorKind};
use crate::contract::{Plugin as PluginWorld, PluginPre};
use crate::decode::{CallError, CallErrorKind};
use crate::text::escape;
use crate::value::State;

mod batch;
#[cfg(feature = "tools")]
mod warm;

/// What a plugin says about itself, plus what the host measured of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginDescription {
    /// The grain type the plugin decodes.
    pub grain_type: String,
    /// Its state schema's name.
    pub schema_name: String,
    /// Its state schema's version.
    pub schema_version: String,
    /// The guest SDK version it was built with.
    pub sdk_version: String,
    /// Every state schema version it decodes, newest first.
    pub state_versions: Vec<String>,
}

/// Call counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Decode calls made.
    calls: AtomicU64,
    /// Decode calls that failed.
    failures: AtomicU64,
}

impl PluginStats {
    /// Decode calls made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// Decode calls that failed, for any reason.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// A plugin ready to decode snapshots. Shareable across threads.
pub struct LoadedPlugin {
    /// The file name, which tags logs and errors.
    name: Arc<str>,
    /// What the plugin says about itself (escaped).
    description: PluginDescription,
    /// Hex sha256 of the file.
    sha256: String,
    /// The same sha256 as bytes (the crash guard's snapshot identities).
    sha256_bytes: [u8; 32],
    /// The file's size in bytes.
    size: usize,
    /// The component's import names, as checked.
    imports: Vec<String>,
    /// How long compiling (or loading the cached artifact) took.
    compile_time: Duration,
    /// Whether the compiled code came from the cache.
    cache_outcome: CacheOutcome,
    /// When it was loaded: shown by `/v1/plugins`, which a reload changes.
    loaded_at: SystemTime,
    /// Time, memory and output limits of every call.
    limits: PluginLimits,
    /// The engine it was compiled for.
    engine: PluginEngine,
    /// The pre-instantiated template every call instantiates.
    pre: PluginPre<CallState>,
    /// Call counters.
    stats: PluginStats,
}

/// The snapshot fields a decode call needs; borrowed so callers keep ownership.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRef<'a> {
    /// The grain's type.
    pub grain_type: &'a str,
    /// The grain's key.
    pub grain_key: &'a str,
    /// The entry's sequence.
    pub sequence: u64,
    /// The primary's timestamp (Unix ms).
    pub timestamp_millis: i64,
    /// The writing cluster.
    pub source_cluster: &'a str,
    /// The serialized state.
    pub payload: &'a [u8],
}

impl LoadedPlugin {
    /// Reads, checks and compiles the plugin at `path`.
    pub fn load(
        engine: &PluginEngine,
        path: &Path,
        limits: PluginLimits,
    ) -> Result<Self, LoadError> {
        Self::load_with_cache(engine, path, limits, None)
    }

    /// Like [`LoadedPlugin::load`], taking the compiled code from `cache`
    /// when it holds a valid artifact for this file and engine, and storing
    /// it there otherwise.
    pub fn load_with_cache(
        engine: &PluginEngine,
        path: &Path,
        limits: PluginLimits,
        cache: Option<&ComponentCache>,
    ) -> Result<Self, LoadError> {
        let fail = |error: PluginError| LoadError {
            path: path.display().to_string(),
            error,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(PluginError::Read(e)))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_bytes_with_cache(engine, &name, &bytes, limits, cache).map_err(fail)
    }

    /// Checks and compiles a plugin from its bytes; `name` tags its logs and errors.
    pub fn from_bytes(
        engine: &PluginEngine,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        Self::from_bytes_with_cache(engine, name, bytes, limits, None)
    }

    /// Like [`LoadedPlugin::from_bytes`], through `cache` when given.
    pub fn from_bytes_with_cache(
        engine: &PluginEngine,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
        cache: Option<&ComponentCache>,
    ) -> Result<Self, PluginError> {
        check_header(bytes)?;
        let sha256_bytes: [u8; 32] = Sha256::digest(bytes).into();
        let sha256 = hex::encode(sha256_bytes);
        let started = Instant::now();
        let (component, cache_outcome) = match cache {
            Some(cache) => cache.load_or_compile(engine, bytes, &sha256),
            None => Component::new(&engine.engine, bytes).map(|c| (c, CacheOutcome::Uncached)),
        }
        .map_err(|e| match super::features::refused_proposal(bytes) {
            Some(proposal) => PluginError::RefusedProposal(proposal),
            None => PluginError::Invalid(e),
        })?;
        let compile_time = started.elapsed();
        let imports = check_component(&engine.engine, &component)?;
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(PluginError::Link)?;
        let pre = PluginPre::new(instance_pre).map_err(PluginError::Contract)?;
        let mut plugin = Self {
            name: Arc::from(name),
            description: PluginDescription {
                grain_type: String::new(),
                schema_name: String::new(),
                schema_version: String::new(),
                sdk_version: String::new(),
                state_versions: Vec::new(),
            },
            sha256,
            sha256_bytes,
            size: bytes.len(),
            imports,
            compile_time,
            cache_outcome,
            loaded_at: SystemTime::now(),
            limits,
            engine: engine.clone(),
            pre,
            stats: PluginStats::default(),
        };
        plugin.description = plugin
            .describe()
            .map_err(|e| PluginError::Describe(Box::new(e)))?;
        Ok(plugin)
    }

    /// The plugin's name (its file name).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the plugin says about itself.
    pub fn description(&self) -> &PluginDescription {
        &self.description
    }
    /// Hex sha256 of the plugin file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The plugin file's sha256 as bytes.
    pub fn sha256_bytes(&self) -> [u8; 32] {
        self.sha256_bytes
    }
    /// Size of the plugin file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// The component's import names.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// How long compilation (or loading the precompiled artifact) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache_outcome
    }
    /// When it was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
    /// The limits every call runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }
    /// Call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    fn new_store(&self, grain_type: &str, grain_key: &str, sequence: u64) -> Store<CallState> {
        let state = CallState::new(
            self.name.clone(),
            grain_type,
            grain_key,
            sequence,
            self.limits.max_memory_bytes,
        );
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.memory);
        // The most the engine copies out of the guest in one transfer (the
        // returned state, or one log line): the output limit plus room for
        // the result's other fields. A larger declared length traps before
        // anything is copied.
        store.set_hostcall_fuel(self.limits.hostcall_fuel());
        store.set_epoch_deadline(deadline_ticks(self.limits.timeout));
        store.epoch_deadline_trap();
        store
    }

    fn describe(&self) -> Result<PluginDescription, CallError> {
        let _slot = self.engine.gate.acquire();
        let mut store = self.new_store("", "", 0);
        let info = self
            .pre
            .instantiate(&mut store)
            .and_then(|world| world.replica_plugin_decoder().call_describe(&mut store))
            .map_err(|e| self.classify(&store, e, SnapshotRef::empty()))?;
        Ok(PluginDescription {
            grain_type: escape(&info.grain_type),
            schema_name: escape(&info.schema_name),
            schema_version: escape(&info.schema_version),
            sdk_version: escape(&info.sdk_version),
            state_versions: info.state_versions.iter().map(|v| escape(v)).collect(),
        })
    }

    /// Decodes one snapshot in a fresh instance, under the plugin's limits.
    /// Never panics because of the guest: every failure is a [`CallError`].
    pub fn decode(&self, snapshot: SnapshotRef<'_>) -> Result<State, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.decode_inner(snapshot);
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn decode_inner(&self, s: SnapshotRef<'_>) -> Result<State, CallError> {
        let input = s.to_input();
        // Declared before the store, so the slot is released after the
        // store (and its instance) is dropped.
        let _slot = self.engine.gate.acquire();
        let mut store = self.new_store(s.grain_type, s.grain_key, s.sequence);
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|world: PluginWorld| {
                world
                    .replica_plugin_decoder()
                    .call_decode(&mut store, input)
            });
        self.finish(&store, s, outcome)
    }

    /// Turns a call's outcome into the validated state or a [`CallError`].
    fn finish(
        &self,
        store: &Store<CallState>,
        s: SnapshotRef<'_>,
        outcome: wasmtime::Result<Result<Vec<u8>, types::DecodeError>>,
    ) -> Result<State, CallError> {
        let dropped = store.data().dropped_log_lines();
        if dropped > 0 {
            tracing::warn!(
                plugin = &*self.name,
                grain_type = s.grain_type,
                grain_key = s.grain_key,
                sequence = s.sequence,
                dropped,
                "plugin log lines dropped (limit per call reached)"
            );
        }
        match outcome {
            Ok(Ok(bytes)) => self.validate(s, &bytes),
            Ok(Err(e)) => Err(self.decode_error(s, e)),
            Err(e) => Err(self.classify(store, e, s)),
        }
    }

    /// Keeps a returned state the host can store and serve, or refuses it.
    fn validate(&self, s: SnapshotRef<'_>, bytes: &[u8]) -> Result<State, CallError> {
        State::validate(bytes, &self.limits.output).map_err(|e| {
            self.error(
                s,
                CallErrorKind::BadOutput,
                format!("returned a state the host refuses: {e}"),
            )
        })
    }

    /// The plugin's own decode error, its message made safe to log.
    fn decode_error(&self, s: SnapshotRef<'_>, e: types::DecodeError) -> CallError {
        let kind = match e.kind {
            ErrorKind::MalformedPayload => CallErrorKind::MalformedPayload,
            ErrorKind::UnsupportedSchemaVersion => CallErrorKind::UnsupportedSchemaVersion,
            ErrorKind::Rejected => CallErrorKind::Rejected,
        };
        self.error(s, kind, escape(&e.message))
    }

    fn error(&self, s: SnapshotRef<'_>, kind: CallErrorKind, message: String) -> CallError {
        CallError {
            plugin: self.name.to_string(),
            grain_type: s.grain_type.to_string(),
            grain_key: s.grain_key.to_string(),
            sequence: s.sequence,
            kind,
            message,
        }
    }

    /// Turns a wasmtime error from instantiating or calling into a typed error.
    fn classify(
        &self,
        store: &Store<CallState>,
        err: wasmtime::Error,
        s: SnapshotRef<'_>,
    ) -> CallError {
        let data = store.data();
        let trap = err.downcast_ref::<Trap>().copied();
        let (kind, message) = if data.memory.denied {
            (
                CallErrorKind::OutOfMemory,
                format!(
                    "memory limit of {} bytes reached",
                    self.limits.max_memory_bytes
                ),
            )
        } else if trap == Some(Trap::Interrupt) {
            (
                CallErrorKind::Timeout,
                format!("call exceeded its time limit of {:?}", self.limits.timeout),
            )
        } else if is_hostcall_fuel_exhausted(&err) {
            (
                CallErrorKind::BadOutput,
                format!(
                    "tried to hand the host more than {} bytes in one transfer (max_output_bytes {} plus {})",
                    self.limits.hostcall_fuel(),
                    self.limits.output.max_bytes,
                    PluginLimits::HOSTCALL_FUEL_MARGIN
                ),
            )
        } else {
            let mut message = match trap {
                Some(trap) => trap.to_string(),
                None => one_line(&err),
            };
            if let Some(last) = &data.last_error {
                message = format!("{message} ({last})");
            }
            (CallErrorKind::Trap, message)
        };
        self.error(s, kind, message)
    }
}

impl<'a> SnapshotRef<'a> {
    /// The contract's snapshot record, borrowing the fields: wasmtime
    /// copies them into the guest's memory, and nothing copies them before.
    fn to_input(self) -> types::Snapshot<'a> {
        types::Snapshot {
            grain_type: self.grain_type,
            grain_key: self.grain_key,
            sequence: self.sequence,
            timestamp_millis: self.timestamp_millis,
            source_cluster: self.source_cluster,
            payload: self.payload,
        }
    }

    fn empty() -> Self {
        SnapshotRef {
            grain_type: "",
            grain_key: "",
            sequence: 0,
            timestamp_millis: 0,
            source_cluster: "",
            payload: &[],
        }
    }
}

/// Whether wasmtime refused to copy a guest's string or list because it
/// exceeded the store's hostcall fuel. wasmtime's error type for it is
/// private; its message is pinned by a test of the hostile-plugin suite.
fn is_hostcall_fuel_exhausted(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|e| e.to_string().contains("fuel allocated for hostcalls"))
}
