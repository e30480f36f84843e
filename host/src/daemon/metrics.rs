//! Prometheus metrics. Counters kept by the consumer and the plugins are
//! published at scrape time; histograms (plugin call duration, replication
//! lag, HTTP requests) are recorded as events happen through the `metrics`
//! facade. Every metric has a `# HELP` line ([`describe`]); the series of a
//! grain type no longer configured are left out of the rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::plugin::breaker::BreakerState;

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
            describe();
            build_info();
            handle
        })
        .clone()
}

/// Installs the process-wide recorder (once), so metrics recorded before
/// the first scrape (the certificate's expiry at startup) are kept.
pub fn install() {
    let _ = handle();
}

/// The wasmtime release this host embeds (checked against Cargo.lock by a
/// test).
pub const WASMTIME_VERSION: &str = "48.0.10";

/// `replica_build_info{version, wasmtime, contract}`, always 1.
fn build_info() {
    metrics::gauge!(
        "replica_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "wasmtime" => WASMTIME_VERSION,
        "contract" => crate::contract::CONTRACT_VERSION,
    )
    .set(1.0);
}

/// Every metric's `# HELP` text, by name.
pub const HELP: &[(&str, &str)] = &[
    (
        "replica_build_info",
        "Always 1; the labels name this build: version, the wasmtime release, the plugin contract version",
    ),
    (
        "replica_snapshots_applied_total",
        "Snapshots decoded and applied to the store, per grain type",
    ),
    (
        "replica_snapshots_skipped_total",
        "Snapshots skipped because a newer one was already applied, per grain type",
    ),
    (
        "replica_deltas_refused_total",
        "Delta entries refused (the host applies full snapshots only), per grain type",
    ),
    (
        "replica_rows_refused_total",
        "Log rows that could not be interpreted, per grain type",
    ),
    (
        "replica_log_read_errors_total",
        "Failed reads and listings of the replication log, per grain type",
    ),
    (
        "replica_decode_failures_total",
        "Snapshots a plugin failed to decode, per grain type and error kind",
    ),
    (
        "replica_verify_mismatches_total",
        "Replicas continuous anti-entropy ([consumer] verify_interval_s) found diverging from the log and read again, per grain type and kind (missing, behind, other_build)",
    ),
    (
        "replica_grains",
        "Grains known to the consumer, per grain type",
    ),
    (
        "replica_replicas",
        "Replicas in the store, per grain type and status (ok, behind, failing)",
    ),
    (
        "replica_http_waiting_reads",
        "Reads waiting for a min_sequence right now",
    ),
    (
        "replica_scheduler_queue_depth",
        "Grains waiting for a worker, per grain type",
    ),
    (
        "replica_scheduler_oldest_ready_seconds",
        "How long the oldest grain waiting for a worker has waited, per grain type",
    ),
    (
        "replica_scheduler_workers",
        "Workers shared by every grain type ([consumer] workers)",
    ),
    (
        "replica_scheduler_workers_busy",
        "Workers running a grain step",
    ),
    (
        "replica_unhandled_grain_type_grains",
        "Log entries of grain types without a plugin, per grain type",
    ),
    (
        "replica_plugin_calls_total",
        "Plugin decode calls, per grain type",
    ),
    (
        "replica_plugin_failures_total",
        "Plugin decode calls that failed, per grain type",
    ),
    (
        "replica_plugin_call_duration_seconds",
        "Duration of plugin decode calls, per grain type",
    ),
    (
        "replica_plugin_breaker_state",
        "1 for the circuit breaker's current state (closed, open, half_open), 0 for the others, per grain type",
    ),
    (
        "replica_plugin_consecutive_faults",
        "Consecutive guest faults counted by the circuit breaker, per grain type",
    ),
    (
        "replica_quarantined_snapshots",
        "Snapshots quarantined because the host died twice in a row while decoding them, under the grain type's current plugin",
    ),
    (
        "replica_plugin_breaker_opened_total",
        "Times the circuit breaker opened, per grain type",
    ),
    (
        "replica_plugin_breaker_rejected_calls_total",
        "Calls failed fast by an open circuit breaker, per grain type",
    ),
    (
        "replica_shadow_decodes_total",
        "Snapshots decoded by a grain type's shadow candidate beside its plugin, per grain type and result (same, fields_added, differs, candidate_failed, candidate_recovers, shed: dropped for want of a free decode slot)",
    ),
    (
        "replica_plugin_reloads_total",
        "Plugin reloads (SIGHUP or POST /v1/admin/reload), per result (applied, unchanged, refused)",
    ),
    (
        "replica_replication_lag_seconds",
        "Apply time minus the snapshot's timestamp, per grain type",
    ),
    (
        "replica_http_requests_total",
        "HTTP requests answered, per route template and status",
    ),
    (
        "replica_http_request_duration_seconds",
        "Time to answer an HTTP request's head, per route template",
    ),
    (
        "replica_http_auth_denied_total",
        "Requests refused by access control, per reason (missing, invalid, forbidden)",
    ),
    ("replica_http_connections", "Open HTTP connections"),
    (
        "replica_http_connections_closed_total",
        "HTTP connections closed by the host, per reason (shed, refused, header_timeout, idle_timeout)",
    ),
    (
        "replica_tls_cert_expiry_timestamp_seconds",
        "When the TLS certificate in force expires, Unix seconds",
    ),
];

/// Registers every metric's `# HELP` text (the exporter keeps one text per
/// name, whatever the kind).
fn describe() {
    for (name, help) in HELP {
        metrics::describe_gauge!(*name, *help);
    }
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
            for (kind, n) in &s.verify_mismatches {
                metrics::counter!("replica_verify_mismatches_total", "grain_type" => gt.clone(), "kind" => kind.as_str())
                    .absolute(*n);
            }
            for (kind, n) in &s.decode_failures {
                metrics::counter!("replica_decode_failures_total", "grain_type" => gt.clone(), "kind" => kind.as_str())
                    .absolute(*n);
            }
        }
        metrics::gauge!("replica_scheduler_workers").set(snapshot.workers as f64);
        metrics::gauge!("replica_http_waiting_reads").set(store.waiting() as f64);
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
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                metrics::gauge!("replica_plugin_breaker_state", "grain_type" => gt.clone(), "state" => state.as_str())
                    .set(if status.state == state { 1.0 } else { 0.0 });
            }
            metrics::gauge!("replica_plugin_consecutive_faults", "grain_type" => gt.clone())
                .set(f64::from(status.consecutive_faults));
            metrics::counter!("replica_plugin_breaker_opened_total", "grain_type" => gt.clone())
                .absolute(status.times_opened);
            metrics::counter!("replica_plugin_breaker_rejected_calls_total", "grain_type" => gt)
                .absolute(status.rejected_calls);
        }
        let mut kept: BTreeSet<&str> = plugins.keys().map(String::as_str).collect();
        kept.extend(snapshot.unhandled_grain_types.keys().map(String::as_str));
        without_other_grain_types(&self.handle.render(), &kept)
    }
}

/// `text` without the samples labelled with a grain type not in `kept`: the
/// series of a removed grain type go with it.
fn without_other_grain_types(text: &str, kept: &BTreeSet<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let removed = !line.starts_with('#')
            && grain_type_label(line).is_some_and(|grain_type| !kept.contains(grain_type.as_str()));
        if !removed {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The (unescaped) `grain_type` label of a sample line, if it has one.
fn grain_type_label(line: &str) -> Option<String> {
    let labels = &line[line.find('{')? + 1..];
    let start = labels
        .match_indices("grain_type=\"")
        .find(|(i, _)| *i == 0 || labels[..*i].ends_with(','))?
        .0
        + "grain_type=\"".len();
    let mut value = String::new();
    let mut chars = labels[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Records `replica_http_requests_total{route, status}` and
/// `replica_http_request_duration_seconds{route}` for every request: the
/// route is the matched template (`/v1/replicas/{grain_type}/{*grain_key}`),
/// never the raw path; `unmatched` for paths no route serves.
pub async fn count_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!("replica_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("replica_http_requests_total", "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_removed_grain_types_are_left_out() {
        let text = "# HELP replica_grains Grains\n# TYPE replica_grains gauge\nreplica_grains{grain_type=\"Counter\"} 3\nreplica_grains{grain_type=\"Gone\"} 1\nreplica_replicas{status=\"ok\",grain_type=\"Gone\"} 1\nreplica_scheduler_workers 16\nreplica_x{other_grain_type=\"Gone\"} 1\n";
        let kept = BTreeSet::from(["Counter"]);
        let out = without_other_grain_types(text, &kept);
        assert!(out.contains("replica_grains{grain_type=\"Counter\"} 3"));
        assert!(!out.contains("\"Gone\"} 1\nreplica_replicas"));
        assert!(!out.contains("status=\"ok\",grain_type=\"Gone\""));
        assert!(out.contains("replica_scheduler_workers 16"));
        assert!(out.contains("other_grain_type=\"Gone\""));
        assert!(out.contains("# HELP replica_grains"));
    }

    #[test]
    fn the_wasmtime_version_is_the_locked_one() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map(|v| v.trim_end_matches('"'));
        assert_eq!(locked, Some(WASMTIME_VERSION));
    }
}
