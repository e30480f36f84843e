//! The plugins in force: each grain type's plugin, breaker, shadow and
//! re-decode progress, replaced whole by a swap ([`LivePlugins`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use super::set::PluginSet;
use crate::consumer::{CatchUpProgress, TypeCatchUp};
use crate::daemon::config::{Config, PluginEntry};
use crate::daemon::shadow::Shadow;
use crate::decode::SnapshotDecoder;
use crate::plugin::breaker::Breaker;
use crate::plugin::crash_guard::CrashGuard;
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder};

/// One grain type's plugin in force.
#[derive(Clone)]
pub struct InForce {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its circuit breaker, when configured.
    pub breaker: Option<Arc<Breaker>>,
    /// The config entry it was loaded from.
    pub entry: PluginEntry,
    /// The re-decode that followed its swap in, if it was swapped in.
    pub redecode: Option<Arc<TypeCatchUp>>,
    /// The plugin file, as the config resolves it: what the fixture
    /// command of a failing grain names.
    pub path: std::path::PathBuf,
    /// The candidate decoding beside it (`shadow`), when configured.
    pub shadow: Option<Arc<Shadow>>,
}

impl InForce {
    /// `plugin`, loaded from `entry` of `config`, with a fresh breaker when
    /// the entry configures one, and `shadow` (the entry's candidate,
    /// loaded) beside it.
    pub(super) fn new(
        config: &Config,
        entry: &PluginEntry,
        plugin: Arc<LoadedPlugin>,
        shadow: Option<Arc<LoadedPlugin>>,
    ) -> Self {
        let shadow = shadow
            .zip(config.shadow_path(entry))
            .map(|(candidate, path)| {
                Arc::new(Shadow::new(
                    &entry.grain_type,
                    candidate,
                    path,
                    entry.shadow_sample.unwrap_or(1.0),
                ))
            });
        Self {
            plugin,
            breaker: config
                .plugin_breaker(entry)
                .map(|b| Arc::new(Breaker::new(b))),
            entry: entry.clone(),
            redecode: None,
            path: config.plugin_path(entry),
            shadow,
        }
    }

    /// This entry with `current`'s breaker and re-decode kept: the same
    /// plugin stays in force (its counters are its own), only its shadow
    /// changed.
    pub(super) fn keeping(mut self, current: &InForce) -> Self {
        self.breaker = current.breaker.clone();
        self.redecode = current.redecode.clone();
        self
    }
}

/// The plugins in force, by grain type; replaced whole on a reload.
#[derive(Default)]
pub struct LivePlugins {
    /// The current generation.
    current: RwLock<Arc<BTreeMap<String, InForce>>>,
    /// The crash guard, whose quarantine is shown per grain type.
    crash_guard: Option<Arc<CrashGuard>>,
}

impl LivePlugins {
    /// The plugins of `set`, with their breakers and config entries.
    pub fn new(config: &Config, set: &PluginSet) -> Self {
        let plugins = config
            .plugins
            .iter()
            .filter_map(|entry| {
                let plugin = set.get(&entry.grain_type)?;
                let shadow = set.shadow(&entry.grain_type).cloned();
                Some((
                    entry.grain_type.clone(),
                    InForce::new(config, entry, Arc::clone(plugin), shadow),
                ))
            })
            .collect();
        Self {
            current: RwLock::new(Arc::new(plugins)),
            crash_guard: None,
        }
    }

    /// Shows `guard`'s quarantine with the plugins.
    pub fn with_crash_guard(mut self, guard: Option<Arc<CrashGuard>>) -> Self {
        self.crash_guard = guard;
        self
    }

    /// How many snapshots of each grain type in force are quarantined under
    /// its current plugin (every type, zero without a crash guard).
    pub fn quarantined(&self) -> BTreeMap<String, usize> {
        let current = self.current();
        match &self.crash_guard {
            Some(guard) => guard
                .quarantined_counts(current.iter().map(|(t, p)| (t.as_str(), p.plugin.sha256())))
                .into_iter()
                .collect(),
            None => current.keys().map(|t| (t.clone(), 0)).collect(),
        }
    }

    /// The plugins in force now.
    pub fn current(&self) -> Arc<BTreeMap<String, InForce>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The progress of `grain_type`'s re-decode (after a swap) or catch-up
    /// (after an add), while it runs.
    pub fn reading_again(&self, grain_type: &str) -> Option<CatchUpProgress> {
        self.current()
            .get(grain_type)?
            .redecode
            .as_ref()
            .map(|r| r.progress())
            .filter(|p| !p.complete)
    }

    /// Whether `grain_type` has a plugin in force.
    pub fn contains(&self, grain_type: &str) -> bool {
        self.current().contains_key(grain_type)
    }

    /// The decoder of each grain type in force, over `slots`.
    pub fn decoders(&self, slots: &DecodeSlots) -> HashMap<String, Arc<dyn SnapshotDecoder>> {
        self.current()
            .iter()
            .map(|(grain_type, in_force)| (grain_type.clone(), decoder(in_force, slots)))
            .collect()
    }

    pub(super) fn replace(&self, plugins: BTreeMap<String, InForce>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(plugins);
    }
}

/// The consumer's decoder for a plugin in force, with its shadow beside
/// it when it has one.
pub(super) fn decoder(in_force: &InForce, slots: &DecodeSlots) -> Arc<dyn SnapshotDecoder> {
    let mut decoder = PluginDecoder::new(Arc::clone(&in_force.plugin), slots.clone());
    if let Some(breaker) = &in_force.breaker {
        decoder = decoder.with_breaker(Arc::clone(breaker));
    }
    let decoder: Arc<dyn SnapshotDecoder> = Arc::new(decoder);
    match &in_force.shadow {
        Some(shadow) => shadow.wrap(decoder, slots),
        None => decoder,
    }
}

/// Logs, in one line, what an outgoing shadow showed: when the entry drops
/// or changes its shadow, or the type goes. `promoted` when the candidate
/// became the plugin in force.
pub(super) fn log_outgoing_shadow(grain_type: &str, outgoing: &Shadow, next: Option<&InForce>) {
    let promoted = next.is_some_and(|n| n.plugin.sha256() == outgoing.plugin.sha256());
    tracing::info!(
        grain_type,
        candidate = %crate::text::escape(&outgoing.path.display().to_string()),
        sha256 = &outgoing.plugin.sha256()[..12],
        promoted,
        counts = %outgoing.tally.summary(),
        "shadow ended"
    );
}
