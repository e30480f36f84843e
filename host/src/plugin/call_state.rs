//! Per-call store data: who is being called (for log tagging and errors),
//! the memory limiter, and the logging import.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use crate::contract::replica::plugin::logging::{self, Level};
use crate::contract::replica::plugin::types;

/// Most log lines one call may emit; later ones are dropped and counted.
const MAX_LOG_LINES: u32 = 64;

/// Data owned by the store of one plugin call.
pub(crate) struct CallState {
    /// The plugin's name, for log lines.
    pub plugin: Arc<str>,
    /// The grain being decoded, for log lines and errors.
    pub grain_type: String,
    /// Its key.
    pub grain_key: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// Refuses growth past the memory limit.
    pub memory: MemoryLimiter,
    /// Log lines the guest emitted in this call.
    log_lines: u32,
    /// The last error-level line, which carries a panic's message.
    pub last_error: Option<String>,
}

impl CallState {
    pub fn new(
        plugin: Arc<str>,
        grain_type: &str,
        grain_key: &str,
        sequence: u64,
        max_memory: usize,
    ) -> Self {
        Self {
            plugin,
            grain_type: grain_type.to_string(),
            grain_key: grain_key.to_string(),
            sequence,
            memory: MemoryLimiter {
                max_bytes: max_memory,
                denied: false,
            },
            log_lines: 0,
            last_error: None,
        }
    }

    /// Readies the state for the next call on the same instance (a batch):
    /// who is decoded now, and fresh per-call counters.
    pub fn begin_call(&mut self, grain_type: &str, grain_key: &str, sequence: u64) {
        grain_type.clone_into(&mut self.grain_type);
        grain_key.clone_into(&mut self.grain_key);
        self.sequence = sequence;
        self.memory.denied = false;
        self.log_lines = 0;
        self.last_error = None;
    }

    /// Log lines dropped because the call exceeded [`MAX_LOG_LINES`].
    pub fn dropped_log_lines(&self) -> u32 {
        self.log_lines.saturating_sub(MAX_LOG_LINES)
    }
}

/// Refuses memory growth past the plugin's limit and remembers that it did,
/// so that the resulting trap is reported as out-of-memory.
pub(crate) struct MemoryLimiter {
    /// The memory limit.
    pub max_bytes: usize,
    /// Whether a growth was refused, so the trap reads as out-of-memory.
    pub denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl types::Host for CallState {}

impl logging::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let message = crate::text::escape(&message);
        let (plugin, grain_type, grain_key, sequence) = (
            &*self.plugin,
            &self.grain_type,
            &self.grain_key,
            self.sequence,
        );
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "replica_host::plugin", $lvl, plugin, grain_type, grain_key, sequence, "{message}")
            };
        }
        // Warnings and errors are what many failing grains repeat: like the
        // host's own errors, they are rate-limited per grain type and level.
        use crate::repeat_limiter::limited;
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => limited(grain_type, "plugin_warn", grain_key, || {
                emit!(tracing::Level::WARN)
            }),
            Level::Error => limited(grain_type, "plugin_error", grain_key, || {
                emit!(tracing::Level::ERROR)
            }),
        }
        if level == Level::Error {
            self.last_error = Some(message);
        }
    }
}
