//! The entry point: runs every grain type's discovery, the grain tasks, and
//! the report of grain types that have no decoder.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::SnapshotDecoder;
use super::config::ConsumerConfig;
use super::discovery::Discovery;
use super::metrics::ConsumerMetrics;
use super::shutdown::stopped;
use crate::replication_log::ReplicationLog;
use crate::store::ReplicaStore;

/// Replicates every grain of the grain types that have a decoder from a log
/// into a store, until shutdown.
pub struct Replicator {
    log: Arc<dyn ReplicationLog>,
    store: Arc<ReplicaStore>,
    decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
    config: ConsumerConfig,
    metrics: Arc<ConsumerMetrics>,
}

impl Replicator {
    /// A replicator of the grain types in `decoders` (grain type → decoder).
    pub fn new(
        log: Arc<dyn ReplicationLog>,
        store: Arc<ReplicaStore>,
        decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            log,
            store,
            decoders,
            config,
            metrics: Arc::default(),
        }
    }

    /// Uses `metrics` for the counters instead of a fresh set.
    pub fn with_metrics(mut self, metrics: Arc<ConsumerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters, live.
    pub fn metrics(&self) -> Arc<ConsumerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs [`Self::run`] on a new task.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until shutdown is signalled (the value becomes `true` or the
    /// sender is dropped) and every task has stopped.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let config = Arc::new(self.config);
        let mut tasks = JoinSet::new();
        let handled: HashSet<String> = self.decoders.keys().cloned().collect();
        for (grain_type, decoder) in self.decoders {
            let discovery = Discovery {
                counters: self.metrics.counters(&grain_type),
                grain_type,
                log: Arc::clone(&self.log),
                store: Arc::clone(&self.store),
                decoder,
                config: Arc::clone(&config),
            };
            tasks.spawn(discovery.run(shutdown.clone()));
        }
        tasks.spawn(report_unhandled_types(
            Arc::clone(&self.log),
            handled,
            Arc::clone(&self.metrics),
            Arc::clone(&config),
            shutdown.clone(),
        ));
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a replication task failed");
            }
        }
        tracing::info!("replication stopped");
    }
}

/// Lists the log's grain types every scan interval and reports, once each,
/// those without a decoder: a warning with the number of grains, and
/// [`super::MetricsSnapshot::unhandled_grain_types`].
async fn report_unhandled_types(
    log: Arc<dyn ReplicationLog>,
    handled: HashSet<String>,
    metrics: Arc<ConsumerMetrics>,
    config: Arc<ConsumerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = config.grain_type_scan_interval.max(config.poll());
    loop {
        let listed = tokio::select! {
            () = stopped(&mut shutdown) => return,
            listed = log.grain_types() => listed,
        };
        match listed {
            Ok(types) => {
                for grain_type in types {
                    if handled.contains(&grain_type) || metrics.is_unhandled(&grain_type) {
                        continue;
                    }
                    let heads = tokio::select! {
                        () = stopped(&mut shutdown) => return,
                        heads = log.grain_heads(&grain_type) => heads,
                    };
                    let grains = heads.map_or(0, |heads| heads.len() as u64);
                    if metrics.note_unhandled(&grain_type, grains) {
                        tracing::warn!(
                            grain_type = %grain_type,
                            grains,
                            "the log holds a grain type without a decoder; it is not replicated"
                        );
                    }
                }
            }
            Err(error) => {
                metrics.grain_type_scan_error();
                tracing::warn!(%error, "failed to list the log's grain types");
            }
        }
        tokio::select! {
            () = stopped(&mut shutdown) => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
