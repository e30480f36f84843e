//! What the daemon runs until shutdown, and the order it stops in: the
//! drain (`/readyz` 503, reads still served), then the consumers, the
//! checkpoint's last flush, the HTTP server, the plugin calls in flight,
//! the background tasks, the log and the crash guard.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::plugin::DecodeSlots;
use crate::plugin::crash_guard::CrashGuard;
use crate::repeat_limiter;
use crate::replication_log::ReplicationLog;
use crate::shutdown::Shutdown;

/// How long shutdown waits for plugin calls already running.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every task of a running daemon, and what stops each.
pub(super) struct Running {
    /// Turns `/readyz` 503 when the drain starts.
    pub draining: Shutdown,
    /// How long reads are still served after that (`[http] drain_ms`).
    pub drain: Duration,
    /// Stops the consumers, the HTTP server and the background tasks.
    pub stopping: Shutdown,
    /// The consumers.
    pub replicator: JoinHandle<()>,
    /// Stops the checkpoint writer, after the consumers, so its last flush
    /// has everything they applied.
    pub writer_stop: Shutdown,
    /// The checkpoint writer, when `[store] checkpoint` is set.
    pub writer: Option<JoinHandle<()>>,
    /// The HTTP server.
    pub server: JoinHandle<()>,
    /// The decode slots, drained so no plugin call outlives the daemon.
    pub slots: DecodeSlots,
    /// The lag recorder, the problems index and the SIGHUP handler.
    pub tasks: Vec<JoinHandle<()>>,
    /// The log, dropped last but one.
    pub log: Arc<dyn ReplicationLog>,
    /// The crash guard, closed last: a clean exit.
    pub crash_guard: Option<Arc<CrashGuard>>,
}

impl Running {
    /// Drains, then stops everything in order.
    pub async fn stop(self) {
        self.draining.stop();
        tracing::info!(
            drain_ms = self.drain.as_millis() as u64,
            "draining: /readyz answers 503; reads are served until the drain ends"
        );
        tokio::time::sleep(self.drain).await;
        tracing::info!("shutting down");
        self.stopping.stop();
        let _ = self.replicator.await;
        self.writer_stop.stop();
        if let Some(writer) = self.writer {
            let _ = writer.await;
        }
        if let Err(e) = self.server.await {
            tracing::warn!(error = %e, "HTTP server task failed");
        }
        // Let plugin calls already running on the blocking pool finish.
        if !self.slots.drain(DRAIN_TIMEOUT).await {
            tracing::warn!("plugin calls still running after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        for task in self.tasks {
            let _ = task.await;
        }
        repeat_limiter::flush_all();
        drop(self.log);
        if let Some(guard) = self.crash_guard {
            guard.close();
        }
        tracing::info!("stopped");
    }
}
