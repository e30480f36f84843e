//! What one plugin may use per call: time, memory and output size; and how
//! many calls one instance serves.

use std::time::Duration;

use crate::value::OutputLimits;

/// Per-plugin resource limits, enforced on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock time one decode call may take (enforced by epoch interruption).
    pub timeout: Duration,
    /// Largest linear memory the plugin may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Bounds on the returned value.
    pub output: OutputLimits,
    /// Most snapshots one instance decodes one after another before it is
    /// dropped (`[limits] batch_max`); 1 is a fresh instance per snapshot.
    pub batch_max: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            max_memory_bytes: 64 << 20,
            output: OutputLimits::default(),
            batch_max: Self::DEFAULT_BATCH_MAX,
        }
    }
}

impl PluginLimits {
    /// What one transfer out of the guest may carry beyond the output
    /// limit: room for a result's error message or a log line.
    pub const HOSTCALL_FUEL_MARGIN: usize = 64 << 10;

    /// Snapshots one instance decodes by default before it is dropped.
    pub const DEFAULT_BATCH_MAX: usize = 64;

    /// Bytes the engine may copy out of the guest in one transfer
    /// (wasmtime's hostcall fuel): the output limit plus
    /// [`PluginLimits::HOSTCALL_FUEL_MARGIN`].
    pub fn hostcall_fuel(&self) -> usize {
        self.output
            .max_bytes
            .saturating_add(Self::HOSTCALL_FUEL_MARGIN)
    }
}
