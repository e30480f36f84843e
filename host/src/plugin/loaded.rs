//! A loaded plugin: compiled once, pre-instantiated, and called in a fresh
//! instance for every snapshot.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::call_state::CallState;
use super::checks::{check_component, check_header};
use super::engine::{PluginEngine, deadline_ticks};
use super::{CallError, CallErrorKind, LoadError, PluginLimits};
use crate::contract::types::{self, ErrorKind};
use crate::contract::{Plugin as PluginWorld, PluginPre};
use crate::value::{Value, lift};

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
}

/// Call counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
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
    name: Arc<str>,
    description: PluginDescription,
    sha256: String,
    size: usize,
    imports: Vec<String>,
    compile_time: Duration,
    limits: PluginLimits,
    engine: PluginEngine,
    pre: PluginPre<CallState>,
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
        let fail = |reason: String| LoadError {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_bytes(engine, &name, &bytes, limits).map_err(fail)
    }

    /// Checks and compiles a plugin from its bytes; `name` tags its logs and errors.
    pub fn from_bytes(
        engine: &PluginEngine,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
    ) -> Result<Self, String> {
        check_header(bytes)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let component = Component::new(&engine.engine, bytes)
            .map_err(|e| format!("not a valid component: {}", one_line(&e)))?;
        let compile_time = started.elapsed();
        let imports = check_component(&engine.engine, &component)?;
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot be linked: {}", one_line(&e)))?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| format!("does not match the contract: {}", one_line(&e)))?;
        let mut plugin = Self {
            name: Arc::from(name),
            description: PluginDescription {
                grain_type: String::new(),
                schema_name: String::new(),
                schema_version: String::new(),
                sdk_version: String::new(),
            },
            sha256,
            size: bytes.len(),
            imports,
            compile_time,
            limits,
            engine: engine.clone(),
            pre,
            stats: PluginStats::default(),
        };
        plugin.description = plugin
            .describe()
            .map_err(|e| format!("describe failed: {}", e.message))?;
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
    /// Size of the plugin file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// The component's import names.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// How long compilation took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
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
        store.set_epoch_deadline(deadline_ticks(self.limits.timeout));
        store.epoch_deadline_trap();
        store
    }

    fn describe(&self) -> Result<PluginDescription, CallError> {
        let mut store = self.new_store("", "", 0);
        let info = self
            .pre
            .instantiate(&mut store)
            .and_then(|world| world.replica_plugin_decoder().call_describe(&mut store))
            .map_err(|e| self.classify(&store, e, SnapshotRef::empty()))?;
        Ok(PluginDescription {
            grain_type: info.grain_type,
            schema_name: info.schema_name,
            schema_version: info.schema_version,
            sdk_version: info.sdk_version,
        })
    }

    /// Decodes one snapshot in a fresh instance, under the plugin's limits.
    /// Never panics because of the guest: every failure is a [`CallError`].
    pub fn decode(&self, snapshot: SnapshotRef<'_>) -> Result<Value, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.decode_inner(snapshot);
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn decode_inner(&self, s: SnapshotRef<'_>) -> Result<Value, CallError> {
        let mut store = self.new_store(s.grain_type, s.grain_key, s.sequence);
        let input = types::Snapshot {
            grain_type: s.grain_type.to_string(),
            grain_key: s.grain_key.to_string(),
            sequence: s.sequence,
            timestamp_millis: s.timestamp_millis,
            source_cluster: s.source_cluster.to_string(),
            payload: s.payload.to_vec(),
        };
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|world: PluginWorld| {
                world
                    .replica_plugin_decoder()
                    .call_decode(&mut store, &input)
            });
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
            Ok(Ok(state)) => lift(state.nodes, &self.limits.output).map_err(|e| {
                self.error(
                    s,
                    CallErrorKind::BadOutput,
                    format!("returned a value the host refuses: {e}"),
                )
            }),
            Ok(Err(e)) => {
                let kind = match e.kind {
                    ErrorKind::MalformedPayload => CallErrorKind::MalformedPayload,
                    ErrorKind::UnsupportedSchemaVersion => CallErrorKind::UnsupportedSchemaVersion,
                    ErrorKind::Rejected => CallErrorKind::Rejected,
                };
                Err(self.error(s, kind, e.message))
            }
            Err(e) => Err(self.classify(&store, e, s)),
        }
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

impl SnapshotRef<'_> {
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

/// An error and its causes on one line.
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
