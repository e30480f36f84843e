//! Prometheus metrics. Counters kept by the consumer and the plugins are
//! published at scrape time; histograms (plugin call duration, replication
//! lag) are recorded as events happen through the `metrics` facade.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::plugins::InForce;
use crate::consumer::ConsumerMetrics;
use crate::shutdown::StopSignal;
use crate::store::{ChangeKind, ReplicaStore, now_millis};

/// Renders the process's metrics in Prometheus text format.
#[derive(Clone)]
pub struct MetricsExporter {
    handle: PrometheusHandle,
    consumer: Arc<ConsumerMetrics>,
}

/// The process-wide Prometheus recorder, installed on first use.
fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // An embedder may have installed its own recorder: then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl MetricsExporter {
    /// An exporter reading the consumer's counters.
    pub fn new(consumer: Arc<ConsumerMetrics>) -> Self {
        Self {
            handle: handle(),
            consumer,
        }
    }

    /// Publishes the current counters and renders everything.
    /// `quarantined`: snapshots quarantined by the crash guard, by grain type.
    pub fn render(
        &self,
        store: &ReplicaStore,
        plugins: &BTreeMap<String, InForce>,
        quarantined: BTreeMap<String, usize>,
    ) -> String {
        let snapshot = self.consumer.snapshot();
        for (grain_type, s) in &snapshot.grain_types {
            let gt = grain_type.clone();
            metrics::counter!("replica_snapshots_applied_total", "grain_type" => gt.clone())
                .absolute(s.snapshots_applied);
            metrics::counter!("replica_snapshots_skipped_total", "grain_type" => gt.clone())
                .absolute(s.snapshots_skipped);
            metrics::counter!("replica_deltas_refused_total", "grain_type" => gt.clone())
                .absolute(s.deltas_refused);
            metrics::counter!("replica_rows_refused_total", "grain_type" => gt.clone())
                .absolute(s.rows_refused);
            metrics::counter!("replica_log_read_errors_total", "grain_type" => gt.clone())
                .absolute(s.read_errors + s.discovery_errors);
            metrics::gauge!("replica_grains", "grain_type" => gt.clone()).set(s.grains as f64);
            metrics::gauge!("replica_scheduler_queue_depth", "grain_type" => gt.clone())
                .set(s.queue_depth as f64);
            metrics::gauge!("replica_scheduler_oldest_ready_seconds", "grain_type" => gt.clone())
                .set(s.oldest_ready_ms as f64 / 1000.0);
            for (kind, n) in &s.decode_failures {
                metrics::counter!("replica_decode_failures_total", "grain_type" => gt.clone(), "kind" => kind.as_str())
                    .absolute(*n);
            }
        }
        metrics::gauge!("replica_scheduler_workers").set(snapshot.workers as f64);
        metrics::gauge!("replica_scheduler_workers_busy").set(snapshot.workers_busy as f64);
        for (grain_type, entries) in &snapshot.unhandled_grain_types {
            metrics::gauge!("replica_unhandled_grain_type_grains", "grain_type" => grain_type.clone()).set(*entries as f64);
        }
        for (grain_type, in_force) in plugins {
            let plugin = &in_force.plugin;
            let counts = store.status_counts(grain_type);
            for (status, n) in [
                ("ok", counts.ok),
                ("behind", counts.behind),
                ("failing", counts.failing),
            ] {
                metrics::gauge!("replica_replicas", "grain_type" => grain_type.clone(), "status" => status).set(n as f64);
            }
            metrics::counter!("replica_plugin_calls_total", "grain_type" => grain_type.clone())
                .absolute(plugin.stats().calls());
            metrics::counter!("replica_plugin_failures_total", "grain_type" => grain_type.clone())
                .absolute(plugin.stats().failures());
        }
        for (grain_type, n) in quarantined {
            metrics::gauge!("replica_quarantined_snapshots", "grain_type" => grain_type)
                .set(n as f64);
        }
        let now = Instant::now();
        for (grain_type, breaker) in plugins
            .iter()
            .filter_map(|(t, p)| Some((t, p.breaker.as_ref()?)))
        {
            let status = breaker.status(now);
            let gt = grain_type.clone();
            // 0 closed, 1 open, 2 half open.
            metrics::gauge!("replica_plugin_breaker_state", "grain_type" => gt.clone())
                .set(status.state.gauge());
            metrics::gauge!("replica_plugin_consecutive_faults", "grain_type" => gt.clone())
                .set(f64::from(status.consecutive_faults));
            metrics::counter!("replica_plugin_breaker_opened_total", "grain_type" => gt.clone())
                .absolute(status.times_opened);
            metrics::counter!("replica_plugin_breaker_rejected_calls_total", "grain_type" => gt)
                .absolute(status.rejected_calls);
        }
        self.handle.render()
    }
}

/// Records replication lag (apply time minus the entry's timestamp) for
/// every applied snapshot, until the store's change channel closes.
pub async fn record_lag(store: Arc<ReplicaStore>, mut shutdown: StopSignal) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = store.subscribe();
    drop(store);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.kind == ChangeKind::Applied => {
                    let applied = change.replica.applied_at.map_or_else(now_millis, |t| {
                        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
                    });
                    let lag = (applied - change.replica.timestamp_millis).max(0) as f64 / 1000.0;
                    metrics::histogram!("replica_replication_lag_seconds", "grain_type" => change.replica.grain_type)
                        .record(lag);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.stopped() => return,
        }
    }
}
