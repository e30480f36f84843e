//! Swapping plugins without a restart: what SIGHUP and
//! `POST /v1/admin/reload` run ([`PluginReloader`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::set::PluginSetError;
use crate::consumer::ReplicatorControl;
use crate::daemon::config::{Config, Override};
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginEngine};
use crate::store::ReplicaStore;

use super::live::{InForce, LivePlugins, decoder, log_outgoing_shadow};

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
            let loads = plan.load.clone();
            tokio::task::spawn_blocking(move || load_all(&config, &engine, &loads)).await
        };
        let loaded = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return ReloadOutcome::refused(e.to_string()),
            Err(e) => return ReloadOutcome::refused(format!("loading the plugins failed: {e}")),
        };

        let mut next: BTreeMap<String, InForce> = (*in_force).clone();
        for grain_type in &plan.removed {
            self.control.remove(grain_type).await;
            if let Some(shadow) = next.remove(grain_type).and_then(|p| p.shadow) {
                log_outgoing_shadow(grain_type, &shadow, None);
            }
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
        for Loaded {
            index,
            plugin,
            shadow,
        } in loaded
        {
            let entry = &config.plugins[index];
            let current = in_force.get(&entry.grain_type);
            let mut swapped = match (plugin, current) {
                (Some(plugin), _) => InForce::new(&config, entry, Arc::new(plugin), shadow),
                // Only the shadow changed: the plugin in force, its breaker
                // and its counts stay.
                (None, Some(current)) => {
                    InForce::new(&config, entry, Arc::clone(&current.plugin), shadow)
                        .keeping(current)
                }
                (None, None) => unreachable!("an added type loads its plugin"),
            };
            if let Some(outgoing) = current.and_then(|c| c.shadow.as_ref()) {
                log_outgoing_shadow(&entry.grain_type, outgoing, Some(&swapped));
            }
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
    /// The entries to load: new grain types and changed entries.
    load: Vec<Load>,
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
            let Some(current) = in_force.get(&entry.grain_type) else {
                plan.load.push(Load {
                    index,
                    plugin: true,
                });
                plan.added.push(entry.grain_type.clone());
                continue;
            };
            let plugin_changed = current.entry.without_shadow() != entry.without_shadow()
                || file_sha256(&config.plugin_path(entry)).as_deref()
                    != Some(current.plugin.sha256());
            let shadow_changed = current.entry.shadow_sha256 != entry.shadow_sha256
                || current.entry.shadow_sample != entry.shadow_sample
                || match (config.shadow_path(entry), &current.shadow) {
                    (None, None) => false,
                    (Some(path), Some(shadow)) => {
                        path != shadow.path
                            || file_sha256(&path).as_deref() != Some(shadow.plugin.sha256())
                    }
                    _ => true,
                };
            if plugin_changed || shadow_changed {
                plan.load.push(Load {
                    index,
                    plugin: plugin_changed,
                });
                plan.changed.push(entry.grain_type.clone());
            }
        }
        plan
    }
}

/// One entry a reload loads.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// The entry's index among the `[[plugin]]` entries.
    index: usize,
    /// Whether its plugin is loaded too, or only its shadow changed.
    plugin: bool,
}

/// What a reload loaded for one entry.
struct Loaded {
    /// The entry's index.
    index: usize,
    /// Its plugin, when it changed (or is new).
    plugin: Option<LoadedPlugin>,
    /// Its shadow candidate, when it names one.
    shadow: Option<Arc<LoadedPlugin>>,
}

/// The file's hex sha256, `None` when it cannot be read (then it counts as
/// changed, and loading it gives the reason).
fn file_sha256(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| hex::encode(Sha256::digest(bytes)))
}

/// Loads what `loads` names (plugins and shadow candidates) with every
/// startup check; the first failure refuses them all.
fn load_all(
    config: &Config,
    engine: &PluginEngine,
    loads: &[Load],
) -> Result<Vec<Loaded>, PluginSetError> {
    let cache = super::set::open_cache(config);
    loads
        .iter()
        .map(|load| {
            let plugin = load
                .plugin
                .then(|| super::set::load_entry(config, load.index, engine, cache.as_ref()))
                .transpose()?;
            let shadow = super::set::load_shadow(config, load.index, engine, cache.as_ref())?;
            Ok(Loaded {
                index: load.index,
                plugin,
                shadow: shadow.map(Arc::new),
            })
        })
        .collect()
}
