//! The entry point: runs every grain type's scheduler (discovery, catch-up,
//! steps on a shared worker pool) and the report of grain types that have
//! no decoder.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::SnapshotDecoder;
use super::catch_up::{CatchUp, TypeCatchUp};
use super::config::ConsumerConfig;
use super::discovery::FirstListing;
use super::freshness::Freshness;
use super::grain::TypeContext;
use super::metrics::ConsumerMetrics;
use super::scheduler::Scheduler;
use super::shard::Shard;
use crate::replication_log::ReplicationLog;
use crate::shutdown::{Shutdown, StopSignal};
use crate::store::ReplicaStore;

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
    /// How current each grain type is, and the log's health.
    freshness: Arc<Freshness>,
    /// Most steps running at once (`ConsumerConfig::workers`, at least 1).
    workers: usize,
    /// Rows per catch-up scan page.
    scan_rows: usize,
    /// The grains this host replicates, when sharded.
    shard: Option<Shard>,
    /// First listings made ahead ([`super::list_first`]), by grain type.
    first_listings: HashMap<String, FirstListing>,
    /// Commands from [`ReplicatorControl`] handles, to the run loop.
    commands: (
        mpsc::UnboundedSender<Command>,
        mpsc::UnboundedReceiver<Command>,
    ),
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
        let (workers, scan_rows, shard) =
            (config.workers.max(1), config.scan_rows.max(1), config.shard);
        Self {
            log,
            store,
            decoders,
            config,
            metrics: Arc::default(),
            catch_up,
            freshness: Arc::default(),
            workers,
            scan_rows,
            shard,
            first_listings: HashMap::new(),
            commands: mpsc::unbounded_channel(),
        }
    }

    /// Starts each grain type from its first listing in `listings` (made
    /// ahead with [`super::list_first`], e.g. beside a checkpoint's load)
    /// instead of listing it again.
    pub(crate) fn with_first_listings(mut self, listings: HashMap<String, FirstListing>) -> Self {
        self.first_listings = listings;
        self
    }

    /// The initial catch-up's progress, live.
    pub fn catch_up(&self) -> Arc<CatchUp> {
        Arc::clone(&self.catch_up)
    }

    /// How current each grain type is (`Replica-Staleness-Ms`) and what the
    /// listings saw of the log's health, live.
    pub fn freshness(&self) -> Arc<Freshness> {
        Arc::clone(&self.freshness)
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

    /// A handle to swap, add or remove grain types' decoders while the
    /// replicator runs (see [`ReplicatorControl`]).
    pub fn control(&self) -> ReplicatorControl {
        ReplicatorControl {
            commands: self.commands.0.clone(),
        }
    }

    /// Runs [`Self::run`] on a new task.
    pub fn spawn(self, shutdown: StopSignal) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` stops and every task has stopped.
    pub async fn run(self, mut shutdown: StopSignal) {
        let Replicator {
            log,
            store,
            decoders,
            config,
            metrics,
            catch_up,
            freshness,
            workers,
            scan_rows,
            shard,
            mut first_listings,
            commands: (_, mut commands),
        } = self;
        let running = Running {
            log,
            store,
            config: Arc::new(config),
            metrics,
            workers: Arc::new(Semaphore::new(workers)),
            scan_rows,
            shard,
            handled: Arc::default(),
            freshness,
        };
        running.metrics.set_workers(workers as u64);
        if let Some(shard) = shard {
            tracing::info!(%shard, "replicating one shard of the grains");
        }
        let mut types: HashMap<String, TypeRun> = HashMap::new();
        for (grain_type, decoder) in decoders {
            let Some(progress) = catch_up.grain_type(&grain_type).cloned() else {
                continue;
            };
            let first = first_listings.remove(&grain_type);
            let run = running.start(&grain_type, decoder, progress, false, first);
            types.insert(grain_type, run);
        }
        let unhandled = tokio::spawn(report_unhandled_types(
            Arc::clone(&running.log),
            Arc::clone(&running.handled),
            Arc::clone(&running.metrics),
            Arc::clone(&running.config),
            shutdown.clone(),
        ));
        loop {
            let command = tokio::select! {
                () = shutdown.stopped() => break,
                command = commands.recv() => command,
            };
            let Some(Command::Replace {
                grain_type,
                decoder,
                done,
            }) = command
            else {
                // Every control handle is gone: run until shutdown.
                shutdown.stopped().await;
                break;
            };
            if let Some(old) = types.remove(&grain_type) {
                old.stop().await;
            }
            let progress = decoder.map(|decoder| {
                let progress = Arc::new(TypeCatchUp::default());
                let run = running.start(&grain_type, decoder, Arc::clone(&progress), true, None);
                types.insert(grain_type.clone(), run);
                progress
            });
            if progress.is_none() {
                running.handled_write().remove(&grain_type);
                running.freshness.remove(&grain_type);
            }
            let _ = done.send(progress);
        }
        for (_, run) in types {
            run.stop().await;
        }
        let _ = unhandled.await;
        tracing::info!("replication stopped");
    }
}

/// Swaps, adds and removes grain types' decoders of a running
/// [`Replicator`]. Cheap to clone.
#[derive(Clone)]
pub struct ReplicatorControl {
    /// To the replicator's run loop.
    commands: mpsc::UnboundedSender<Command>,
}

/// What the run loop is asked to do.
enum Command {
    /// Stop the grain type's consumers; start them again with `decoder`.
    Replace {
        /// The grain type.
        grain_type: String,
        /// The new decoder; `None` to stop replicating the type.
        decoder: Option<Arc<dyn SnapshotDecoder>>,
        /// The new run's progress, once it started.
        done: oneshot::Sender<Option<Arc<TypeCatchUp>>>,
    },
}

impl ReplicatorControl {
    /// Makes `decoder` the grain type's decoder, atomically for the type:
    /// its consumers stop (a decode in flight on the old decoder is not
    /// applied), then start again on the new one, which decodes again
    /// every replica another plugin build decoded, from its applied
    /// snapshot, through the bulk catch-up. Replicas keep serving their
    /// state meanwhile and never go backwards. A new grain type starts
    /// replicating. Returns the re-decode's progress (grains listed, and
    /// caught up), or `None` if the replicator has stopped.
    pub async fn replace(
        &self,
        grain_type: &str,
        decoder: Arc<dyn SnapshotDecoder>,
    ) -> Option<Arc<TypeCatchUp>> {
        self.send(grain_type, Some(decoder)).await.flatten()
    }

    /// Stops replicating a grain type; returns once its consumers stopped
    /// (`false` if the replicator has stopped). The store keeps its
    /// replicas: drop them with [`ReplicaStore::remove_type`].
    pub async fn remove(&self, grain_type: &str) -> bool {
        self.send(grain_type, None).await.is_some()
    }

    async fn send(
        &self,
        grain_type: &str,
        decoder: Option<Arc<dyn SnapshotDecoder>>,
    ) -> Option<Option<Arc<TypeCatchUp>>> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Replace {
                grain_type: grain_type.to_string(),
                decoder,
                done,
            })
            .ok()?;
        answer.await.ok()
    }
}

/// What every grain type's run shares, while the replicator runs.
struct Running {
    /// Where entries are read.
    log: Arc<dyn ReplicationLog>,
    /// Where replicas are kept.
    store: Arc<ReplicaStore>,
    /// Polling, batching and backoff.
    config: Arc<ConsumerConfig>,
    /// Counters and gauges.
    metrics: Arc<ConsumerMetrics>,
    /// The worker pool, shared by every grain type.
    workers: Arc<Semaphore>,
    /// Rows per catch-up scan page.
    scan_rows: usize,
    /// The grains this host replicates, when sharded.
    shard: Option<Shard>,
    /// The grain types with a decoder, for the report of the others.
    handled: Arc<RwLock<HashSet<String>>>,
    /// How current each grain type is, and the log's health.
    freshness: Arc<Freshness>,
}

/// One grain type's scheduler, running.
struct TypeRun {
    /// Stops this type's scheduler alone.
    stop: Shutdown,
    /// The scheduler's task.
    task: JoinHandle<()>,
}

impl TypeRun {
    /// Stops the scheduler and waits until its steps have stopped.
    async fn stop(self) {
        self.stop.stop();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "a grain type's scheduler failed");
        }
    }
}

impl Running {
    /// Starts a grain type's scheduler; `redecode` when it replaces another;
    /// from `first_listing` when it was made ahead.
    fn start(
        &self,
        grain_type: &str,
        decoder: Arc<dyn SnapshotDecoder>,
        progress: Arc<TypeCatchUp>,
        redecode: bool,
        first_listing: Option<FirstListing>,
    ) -> TypeRun {
        self.handled_write().insert(grain_type.to_string());
        let stop = Shutdown::new();
        let scheduler = Scheduler {
            ctx: Arc::new(TypeContext {
                counters: self.metrics.counters(grain_type),
                grain_type: grain_type.to_string(),
                log: Arc::clone(&self.log),
                store: Arc::clone(&self.store),
                decoded_by: decoder.decoded_by(),
                decoder,
                config: Arc::clone(&self.config),
                redecode,
            }),
            workers: Arc::clone(&self.workers),
            catch_up: progress,
            metrics: Arc::clone(&self.metrics),
            scan_rows: self.scan_rows,
            shard: self.shard,
            freshness: Arc::clone(&self.freshness),
            first_listing,
        };
        let task = tokio::spawn(scheduler.run(stop.signal()));
        TypeRun { stop, task }
    }

    fn handled_write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.handled.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Lists the log's grain types every scan interval and reports, once each,
/// those without a decoder: a warning with the number of grains, and
/// [`super::MetricsSnapshot::unhandled_grain_types`].
async fn report_unhandled_types(
    log: Arc<dyn ReplicationLog>,
    handled: Arc<RwLock<HashSet<String>>>,
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
                    let is_handled = handled
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&grain_type);
                    if is_handled || metrics.is_unhandled(&grain_type) {
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
