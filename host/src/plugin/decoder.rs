//! [`PluginDecoder`]: the consumer's [`SnapshotDecoder`] over a Wasm plugin.
//! Calls run on tokio's blocking pool, at most `max_concurrent` at a time
//! across all plugins sharing the limiter, so guests never stall the async
//! runtime and a burst of snapshots cannot exhaust memory.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{CallError, CallErrorKind, LoadedPlugin, SnapshotRef};
use crate::consumer::SnapshotDecoder;
use crate::replication_log::LogEntry;
use crate::value::Value;

/// Decodes snapshots with one plugin.
pub struct PluginDecoder {
    plugin: Arc<LoadedPlugin>,
    limiter: Arc<Semaphore>,
}

impl PluginDecoder {
    /// A decoder for `plugin` whose calls take a permit from `limiter`.
    pub fn new(plugin: Arc<LoadedPlugin>, limiter: Arc<Semaphore>) -> Self {
        Self { plugin, limiter }
    }

    /// A limiter allowing as many concurrent calls as the machine has cores.
    pub fn default_limiter() -> Arc<Semaphore> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Arc::new(Semaphore::new(cores))
    }
}

#[async_trait]
impl SnapshotDecoder for PluginDecoder {
    async fn decode(&self, entry: &LogEntry) -> Result<Value, CallError> {
        let unavailable = |message: String| CallError {
            plugin: self.plugin.name().to_string(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind: CallErrorKind::Unavailable,
            message,
        };
        let permit = self
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the host is shutting down".into()))?;
        let plugin = self.plugin.clone();
        let entry_owned = entry.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            plugin.decode(SnapshotRef {
                grain_type: &entry_owned.grain_type,
                grain_key: &entry_owned.grain_key,
                sequence: entry_owned.sequence,
                timestamp_millis: entry_owned.timestamp_millis,
                source_cluster: &entry_owned.source_cluster,
                payload: &entry_owned.payload,
            })
        })
        .await
        .map_err(|e| unavailable(format!("the decode task failed: {e}")))?;
        metrics::histogram!("replica_plugin_call_duration_seconds", "grain_type" => entry.grain_type.clone())
            .record(started.elapsed().as_secs_f64());
        result
    }
}
