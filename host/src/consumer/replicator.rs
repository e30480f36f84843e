//! The entry point: runs every grain type's scheduler (discovery, catch-up,
//! steps on a shared worker pool) and the report of grain types that have
//! no decoder.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};

use tokio::sync::Semaphore;

use super::SnapshotDecoder;
use super::catch_up::CatchUp;
use super::config::ConsumerConfig;
use super::grain::TypeContext;
use super::metrics::ConsumerMetrics;
use super::scheduler::Scheduler;
use super::shard::Shard;
use crate::replication_log::{DEFAULT_SCAN_ROWS, ReplicationLog};
use crate::shutdown::StopSignal;
use crate::store::ReplicaStore;

/// Steps (reads and decodes) run at once, over all grain types, by default.
pub const DEFAULT_WORKERS: usize = 16;

/// Replicates every grain of the grain types that have a decoder from a log
/// into a store, until shutdown.
pub struct Replicator {
    /// Where entries are read.
    log: Arc<dyn ReplicationLog>,
    /// Where replicas are kept.
    store: Arc<ReplicaStore>,
    /// Grain type → its decoder; only these types are replicated.
    decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
    /// Polling, batching and backoff.
    config: ConsumerConfig,
    /// Counters and scheduler gauges, shared with the metrics exporter.
    metrics: Arc<ConsumerMetrics>,
    /// The initial catch-up's progress, shared with `/readyz`.
    catch_up: Arc<CatchUp>,
    /// Most steps running at once.
    workers: usize,
    /// Rows per catch-up scan page.
    scan_rows: usize,
    /// The grains this host replicates, when sharded.
    shard: Option<Shard>,
}

impl Replicator {
    /// A replicator of the grain types in `decoders` (grain type → decoder).
    pub fn new(
        log: Arc<dyn ReplicationLog>,
        store: Arc<ReplicaStore>,
        decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
        config: ConsumerConfig,
    ) -> Self {
        let catch_up = Arc::new(CatchUp::new(decoders.keys().map(String::as_str)));
        Self {
            log,
            store,
            decoders,
            config,
            metrics: Arc::default(),
            catch_up,
            workers: DEFAULT_WORKERS,
            scan_rows: DEFAULT_SCAN_ROWS,
            shard: None,
        }
    }

    /// Runs at most `workers` steps (reads and decodes) at once (at least 1).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Reads the catch-up scan `rows` rows a page (at least 1).
    pub fn with_scan_rows(mut self, rows: usize) -> Self {
        self.scan_rows = rows.max(1);
        self
    }

    /// Replicates only the grains of `shard`.
    pub fn with_shard(mut self, shard: Option<Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// The initial catch-up's progress, live.
    pub fn catch_up(&self) -> Arc<CatchUp> {
        Arc::clone(&self.catch_up)
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
    pub fn spawn(self, shutdown: StopSignal) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` stops and every task has stopped.
    pub async fn run(self, shutdown: StopSignal) {
        let config = Arc::new(self.config);
        let mut tasks = JoinSet::new();
        let handled: HashSet<String> = self.decoders.keys().cloned().collect();
        let workers = Arc::new(Semaphore::new(self.workers));
        self.metrics.set_workers(self.workers as u64);
        if let Some(shard) = self.shard {
            tracing::info!(%shard, "replicating one shard of the grains");
        }
        for (grain_type, decoder) in self.decoders {
            let Some(catch_up) = self.catch_up.grain_type(&grain_type).cloned() else {
                continue;
            };
            let scheduler = Scheduler {
                ctx: Arc::new(TypeContext {
                    counters: self.metrics.counters(&grain_type),
                    grain_type,
                    log: Arc::clone(&self.log),
                    store: Arc::clone(&self.store),
                    decoder,
                    config: Arc::clone(&config),
                }),
                workers: Arc::clone(&workers),
                catch_up,
                metrics: Arc::clone(&self.metrics),
                scan_rows: self.scan_rows,
                shard: self.shard,
            };
            tasks.spawn(scheduler.run(shutdown.clone()));
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
    mut shutdown: StopSignal,
) {
    let interval = config.grain_type_scan_interval.max(config.poll());
    loop {
        let listed = tokio::select! {
            () = shutdown.stopped() => return,
            listed = log.grain_types() => listed,
        };
        match listed {
            Ok(types) => {
                for grain_type in types {
                    if handled.contains(&grain_type) || metrics.is_unhandled(&grain_type) {
                        continue;
                    }
                    let heads = tokio::select! {
                        () = shutdown.stopped() => return,
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
            () = shutdown.stopped() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
