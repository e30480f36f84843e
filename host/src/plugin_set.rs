//! Startup loading of every configured plugin: all are read, compiled and
//! checked before anything replicates, and the first failure stops startup
//! with one line naming the config entry, the file and the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::plugin::{ComponentCache, LoadedPlugin, PluginEngine};

/// The loaded plugins, by grain type.
#[derive(Clone, Default)]
pub struct PluginSet {
    by_grain_type: BTreeMap<String, Arc<LoadedPlugin>>,
}

impl PluginSet {
    /// Loads and checks every `[[plugin]]` of `config`: file readable, a
    /// component of our contract's major version, no forbidden imports,
    /// declared grain type equal to the configured one, sha256 equal to the pin.
    ///
    /// With `[cache] dir` set, compiled code is taken from (and stored in) the
    /// precompiled cache; a cache directory that cannot be used is reported
    /// and plugins are compiled as without a cache.
    pub fn load(config: &Config, engine: &PluginEngine) -> Result<Self, String> {
        let cache = config
            .cache_dir()
            .and_then(|dir| match ComponentCache::open(&dir) {
                Ok(cache) => Some(cache),
                Err(reason) => {
                    tracing::warn!(%reason, "not using the plugin cache");
                    None
                }
            });
        let mut by_grain_type = BTreeMap::new();
        for (i, entry) in config.plugins.iter().enumerate() {
            let path = config.plugin_path(entry);
            let fail = |reason: &str| {
                format!(
                    "{}: plugin[{i}] (grain_type {:?}): {reason}",
                    config.source.display(),
                    entry.grain_type
                )
            };
            if let Some(pin) = &entry.sha256 {
                // Check the pin on the bytes before compiling anything.
                let bytes = std::fs::read(&path)
                    .map_err(|e| fail(&format!("{}: cannot read the file: {e}", path.display())))?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if !actual.eq_ignore_ascii_case(pin) {
                    return Err(fail(&format!(
                        "{}: sha256 is {actual}, but the config pins {pin}",
                        path.display()
                    )));
                }
            }
            let plugin = LoadedPlugin::load_with_cache(
                engine,
                &path,
                config.plugin_limits(entry),
                cache.as_ref(),
            )
            .map_err(|e| fail(&e.to_string()))?;
            // The file may have changed between the pin check and the load:
            // the bytes actually compiled must match the pin too.
            if let Some(pin) = &entry.sha256
                && !plugin.sha256().eq_ignore_ascii_case(pin)
            {
                return Err(fail(&format!(
                    "{}: sha256 is {} (the file changed while loading), but the config pins {pin}",
                    path.display(),
                    plugin.sha256()
                )));
            }
            let declared = &plugin.description().grain_type;
            if declared != &entry.grain_type {
                return Err(fail(&format!(
                    "{}: the plugin decodes grain type {declared:?}, not {:?}",
                    path.display(),
                    entry.grain_type
                )));
            }
            tracing::info!(
                grain_type = %entry.grain_type,
                schema = %plugin.description().schema_name,
                schema_version = %plugin.description().schema_version,
                sha256 = &plugin.sha256()[..12],
                compile_ms = plugin.compile_time().as_millis() as u64,
                cache = ?plugin.cache_outcome(),
                path = %path.display(),
                "plugin loaded"
            );
            by_grain_type.insert(entry.grain_type.clone(), Arc::new(plugin));
        }
        Ok(Self { by_grain_type })
    }

    /// Builds a set from already loaded plugins (for embedders and tests).
    pub fn from_plugins(plugins: impl IntoIterator<Item = Arc<LoadedPlugin>>) -> Self {
        let by_grain_type = plugins
            .into_iter()
            .map(|p| (p.description().grain_type.clone(), p))
            .collect();
        Self { by_grain_type }
    }

    /// The plugin for a grain type.
    pub fn get(&self, grain_type: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_grain_type.get(grain_type)
    }

    /// All plugins, ordered by grain type.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<LoadedPlugin>)> {
        self.by_grain_type.iter()
    }

    /// How many plugins are loaded.
    pub fn len(&self) -> usize {
        self.by_grain_type.len()
    }

    /// Whether no plugin is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_grain_type.is_empty()
    }
}
