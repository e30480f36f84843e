//! The plugins in force, and swapping them without a restart.
//!
//! [`LivePlugins`] holds what `/v1/plugins`, `/metrics` and the operator
//! page read: each grain type's plugin, its breaker and, after a swap, the
//! re-decode's progress. It is replaced whole, so a reader sees one
//! generation or the next, never a mix.
//!
//! [`PluginReloader`] is what SIGHUP and `POST /v1/admin/reload` run: it
//! re-reads the config file and applies what changed in its `[[plugin]]`
//! entries (added, removed, or a changed path, pin, limits or file).
//! Every new plugin passes every startup check before anything changes; if
//! one fails, nothing changes. A change to another section is logged as
//! needing a restart. Applying goes grain type by grain type through the
//! [`ReplicatorControl`]: the swap is atomic per type, and the replicas
//! are decoded again in the background (ARCHITECTURE.md, "Changing a
//! grain's plugin").

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};

use crate::config::{Config, Override, PluginEntry};
use crate::consumer::{CatchUpProgress, ReplicatorControl, TypeCatchUp};
use crate::decode::SnapshotDecoder;
use crate::plugin::breaker::Breaker;
use crate::plugin::crash_guard::CrashGuard;
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine};
use crate::plugin_set::{self, PluginSet, PluginSetError};
use crate::store::ReplicaStore;

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
}

impl InForce {
    /// `plugin`, loaded from `entry` of `config`, with a fresh breaker when
    /// the entry configures one.
    fn new(config: &Config, entry: &PluginEntry, plugin: Arc<LoadedPlugin>) -> Self {
        Self {
            plugin,
            breaker: config
                .plugin_breaker(entry)
                .map(|b| Arc::new(Breaker::new(b))),
            entry: entry.clone(),
            redecode: None,
        }
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
                Some((
                    entry.grain_type.clone(),
                    InForce::new(config, entry, Arc::clone(plugin)),
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

    fn replace(&self, plugins: BTreeMap<String, InForce>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(plugins);
    }
}

/// The consumer's decoder for a plugin in force.
fn decoder(in_force: &InForce, slots: &DecodeSlots) -> Arc<dyn SnapshotDecoder> {
    let mut decoder = PluginDecoder::new(Arc::clone(&in_force.plugin), slots.clone());
    if let Some(breaker) = &in_force.breaker {
        decoder = decoder.with_breaker(Arc::clone(breaker));
    }
    Arc::new(decoder)
}

/// What a reload did, as `POST /v1/admin/reload` answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadOutcome {
    /// `applied`, `unchanged` or `refused`.
    pub result: &'static str,
    /// Grain types whose plugin was added.
    pub added: Vec<String>,
    /// Grain types whose plugin was swapped for another.
    pub changed: Vec<String>,
    /// Grain types no longer replicated.
    pub removed: Vec<String>,
    /// Config sections that changed but only take effect after a restart.
    pub restart_needed: Vec<String>,
    /// Why the reload was refused: one line naming the file and entry.
    pub error: Option<String>,
}

impl ReloadOutcome {
    fn refused(error: String) -> Self {
        Self {
            result: "refused",
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            restart_needed: Vec::new(),
            error: Some(error),
        }
    }
}

/// Re-reads the config file's `[[plugin]]` entries and swaps plugins in.
pub struct PluginReloader {
    /// The config file.
    path: PathBuf,
    /// The environment's overrides, applied over the file again.
    overrides: Vec<Override>,
    /// The config's other sections as in force, to tell what needs a restart.
    sections: Mutex<toml::Table>,
    /// Compiles the new plugins.
    engine: PluginEngine,
    /// The decode slots every decoder shares.
    slots: DecodeSlots,
    /// What is in force.
    live: Arc<LivePlugins>,
    /// Swaps the consumers' decoders.
    control: ReplicatorControl,
    /// Drops the replicas of a removed grain type.
    store: Arc<ReplicaStore>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

impl PluginReloader {
    /// A reloader of `config`'s file, applying through `control`.
    pub fn new(
        config: &Config,
        engine: PluginEngine,
        slots: DecodeSlots,
        live: Arc<LivePlugins>,
        control: ReplicatorControl,
        store: Arc<ReplicaStore>,
    ) -> Self {
        let sections = std::fs::read_to_string(&config.source)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .map(other_sections)
            .unwrap_or_default();
        Self {
            path: config.source.clone(),
            overrides: config.overrides.clone(),
            sections: Mutex::new(sections),
            engine,
            slots,
            live,
            control,
            store,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Re-reads the config file and applies what changed in its plugins;
    /// logs the outcome in one line and counts it in
    /// `replica_plugin_reloads_total{result}`.
    pub async fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().await;
        let outcome = self.reload_inner().await;
        metrics::counter!("replica_plugin_reloads_total", "result" => outcome.result).increment(1);
        match &outcome.error {
            Some(error) => tracing::error!(
                config = %self.path.display(),
                %error,
                "plugin reload refused; the plugins in force stay"
            ),
            None => tracing::info!(
                config = %self.path.display(),
                result = outcome.result,
                added = ?outcome.added,
                changed = ?outcome.changed,
                removed = ?outcome.removed,
                "plugins reloaded"
            ),
        }
        outcome
    }

    async fn reload_inner(&self) -> ReloadOutcome {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => return ReloadOutcome::refused(format!("{}: {e}", self.path.display())),
        };
        let config = match Config::parse_with(&text, &self.path, &self.overrides) {
            Ok(config) => config,
            Err(e) => return ReloadOutcome::refused(e),
        };
        let restart_needed = self.sections_changed(&text);
        let in_force = self.live.current();
        let plan = Plan::of(&config, &in_force);

        // Every new plugin is loaded and checked before anything changes.
        let loaded = {
            let config = config.clone();
            let engine = self.engine.clone();
            let indexes = plan.load.clone();
            tokio::task::spawn_blocking(move || load_all(&config, &engine, &indexes)).await
        };
        let loaded = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return ReloadOutcome::refused(e.to_string()),
            Err(e) => return ReloadOutcome::refused(format!("loading the plugins failed: {e}")),
        };

        let mut next: BTreeMap<String, InForce> = (*in_force).clone();
        for grain_type in &plan.removed {
            self.control.remove(grain_type).await;
            next.remove(grain_type);
            let dropped = self.store.remove_type(grain_type);
            // `/metrics` renders the types in force only: zero the gone one's.
            for status in ["ok", "behind", "failing"] {
                metrics::gauge!("replica_replicas", "grain_type" => grain_type.clone(), "status" => status)
                    .set(0.0);
            }
            tracing::info!(
                grain_type,
                replicas = dropped,
                "plugin removed: its replicas are dropped"
            );
        }
        for (index, plugin) in loaded {
            let entry = &config.plugins[index];
            let mut swapped = InForce::new(&config, entry, Arc::new(plugin));
            swapped.redecode = self
                .control
                .replace(&entry.grain_type, decoder(&swapped, &self.slots))
                .await;
            next.insert(entry.grain_type.clone(), swapped);
        }
        let applied = !plan.removed.is_empty() || !plan.load.is_empty();
        if applied {
            self.live.replace(next);
        }
        ReloadOutcome {
            result: if applied { "applied" } else { "unchanged" },
            added: plan.added,
            changed: plan.changed,
            removed: plan.removed,
            restart_needed,
            error: None,
        }
    }

    /// The top-level sections other than `[[plugin]]` that differ from the
    /// ones in force; each is logged as needing a restart.
    fn sections_changed(&self, text: &str) -> Vec<String> {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Vec::new();
        };
        let now = other_sections(table);
        let before = self.sections.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(key, value)| before.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .chain(before.keys().filter(|key| !now.contains_key(*key)).cloned())
            .collect();
        changed.sort();
        changed.dedup();
        for section in &changed {
            tracing::warn!(
                config = %self.path.display(),
                section,
                "config section changed: it takes effect after a restart, not on reload"
            );
        }
        changed
    }
}

/// The config's top-level keys without the `[[plugin]]` entries.
fn other_sections(mut table: toml::Table) -> toml::Table {
    table.remove("plugin");
    table
}

/// What a reload changes.
struct Plan {
    /// Indexes of the entries to load: new grain types and changed entries.
    load: Vec<usize>,
    /// New grain types.
    added: Vec<String>,
    /// Grain types whose entry or file changed.
    changed: Vec<String>,
    /// Grain types no longer configured.
    removed: Vec<String>,
}

impl Plan {
    fn of(config: &Config, in_force: &BTreeMap<String, InForce>) -> Self {
        let mut plan = Plan {
            load: Vec::new(),
            added: Vec::new(),
            changed: Vec::new(),
            removed: in_force
                .keys()
                .filter(|t| !config.plugins.iter().any(|e| &e.grain_type == *t))
                .cloned()
                .collect(),
        };
        for (index, entry) in config.plugins.iter().enumerate() {
            match in_force.get(&entry.grain_type) {
                None => {
                    plan.load.push(index);
                    plan.added.push(entry.grain_type.clone());
                }
                Some(current)
                    if current.entry != *entry
                        || file_sha256(&config.plugin_path(entry)).as_deref()
                            != Some(current.plugin.sha256()) =>
                {
                    plan.load.push(index);
                    plan.changed.push(entry.grain_type.clone());
                }
                Some(_) => {}
            }
        }
        plan
    }
}

/// The file's hex sha256, `None` when it cannot be read (then it counts as
/// changed, and loading it gives the reason).
fn file_sha256(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| hex::encode(Sha256::digest(bytes)))
}

/// Loads the entries at `indexes` with every startup check; the first
/// failure refuses them all.
fn load_all(
    config: &Config,
    engine: &PluginEngine,
    indexes: &[usize],
) -> Result<Vec<(usize, LoadedPlugin)>, PluginSetError> {
    let cache = plugin_set::open_cache(config);
    indexes
        .iter()
        .map(|&index| {
            plugin_set::load_entry(config, index, engine, cache.as_ref()).map(|p| (index, p))
        })
        .collect()
}
