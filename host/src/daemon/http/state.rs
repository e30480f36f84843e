//! What every handler reads: [`ApiState`], built once by the daemon.

use std::sync::Arc;
use std::time::Duration;

use crate::consumer::{self, CatchUp, Shard};
use crate::daemon::metrics::MetricsExporter;
use crate::daemon::plugins::{LivePlugins, PluginReloader};
use crate::daemon::problems::Problems;
use crate::replication_log::ReplicationLog;
use crate::shutdown::StopSignal;
use crate::store::ReplicaStore;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The replicas.
    pub store: Arc<ReplicaStore>,
    /// The plugins in force, with their breakers; swapped by a reload.
    pub plugins: Arc<LivePlugins>,
    /// Reloads the plugins for `POST /v1/admin/reload`; `None` when the
    /// admin endpoints are off (no admin token configured).
    pub reloader: Option<Arc<PluginReloader>>,
    /// The log, for readiness.
    pub log: Arc<dyn ReplicationLog>,
    /// Prometheus rendering.
    pub metrics: MetricsExporter,
    /// The initial catch-up's progress, for readiness and reads.
    pub catch_up: Arc<CatchUp>,
    /// How current each grain type is and the log's health, for the
    /// `Replica-Staleness-Ms` of reads and for readiness.
    pub freshness: Arc<consumer::Freshness>,
    /// `[http] max_wait_ms`: the longest a `min_sequence` read waits.
    pub max_wait: Duration,
    /// `[http] ready_during_log_outage_s`: how long a caught-up host stays
    /// ready while its listings of the log fail.
    pub ready_during_log_outage: Duration,
    /// The grains this host replicates, when sharded.
    pub shard: Option<Shard>,
    /// `[consumer] peer_url`: where each shard's host answers, `{shard}`
    /// standing for its index; the `Location` of a 421.
    pub peer_url: Option<Arc<str>>,
    /// The failing and behind grains and the lag, for the operator page.
    pub problems: Arc<Problems>,
    /// This secondary cluster's id, for the operator page.
    pub cluster_id: Arc<str>,
    /// The log's URL as the config resolves it (the fixture command of a
    /// failing grain shows it with the password hidden).
    pub log_url: Arc<str>,
    /// Becomes `true` at shutdown; ends change streams.
    pub stop: StopSignal,
    /// Becomes `true` when the drain starts (the first SIGTERM): `/readyz`
    /// answers 503 from then on.
    pub draining: StopSignal,
}

impl ApiState {
    /// The `replica-host plugin fixture` command that captures
    /// `grain_type/grain_key` at `sequence` with the grain type's plugin in
    /// force (the log URL's password hidden); `None` without a plugin.
    pub(crate) fn fixture_command(
        &self,
        grain_type: &str,
        grain_key: &str,
        sequence: u64,
    ) -> Option<String> {
        let plugins = self.plugins.current();
        let in_force = plugins.get(grain_type)?;
        let path = std::path::absolute(&in_force.path).unwrap_or_else(|_| in_force.path.clone());
        Some(crate::fixture_command::command(
            &self.log_url,
            grain_type,
            grain_key,
            sequence,
            &path,
        ))
    }
}
