//! Startup loading of every configured plugin and shadow candidate: all
//! are read, compiled and checked before anything replicates, and the first failure stops startup
//! with one line naming the config entry, the file and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::daemon::config::Config;
use crate::plugin::{ComponentCache, LoadError, LoadedPlugin, PluginEngine};

/// Why a `[[plugin]]` entry of the config was refused: one line naming
/// the config file, the entry, the plugin file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: plugin[{index}] (grain_type {grain_type:?}): {error}", config.display())]
pub struct PluginSetError {
    /// The config file.
    pub config: PathBuf,
    /// The entry's position among the `[[plugin]]` entries.
    pub index: usize,
    /// The entry's grain type.
    pub grain_type: String,
    /// What is wrong with it.
    #[source]
    pub error: Box<EntryError>,
}

/// What is wrong with one `[[plugin]]` entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The file could not be read to check its pin.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the one the config pins.
    #[error(
        "{}: sha256 is {actual}{}, but the config pins {pin}",
        path.display(),
        if *changed_while_loading { " (the file changed while loading)" } else { "" }
    )]
    Pin {
        /// The plugin file.
        path: PathBuf,
        /// The file's sha256.
        actual: String,
        /// The config's `sha256`.
        pin: String,
        /// Whether the file changed between the pin check and compiling.
        changed_while_loading: bool,
    },
    /// The file is not a plugin this host can run.
    #[error("{0}")]
    Load(#[source] LoadError),
    /// The entry's shadow candidate (`shadow`) is refused, for the reason
    /// it holds.
    #[error("shadow {0}")]
    Shadow(#[source] Box<EntryError>),
    /// The plugin decodes another grain type than the entry names.
    #[error("{}: the plugin decodes grain type {declared:?}, not {configured:?}", path.display())]
    GrainType {
        /// The plugin file.
        path: PathBuf,
        /// The grain type the plugin declares.
        declared: String,
        /// The grain type the entry names.
        configured: String,
    },
}

/// The precompiled cache `[cache] dir` names, when set and usable; a
/// directory that cannot be used is reported and plugins are compiled as
/// without a cache.
pub fn open_cache(config: &Config) -> Option<ComponentCache> {
    config
        .cache_dir()
        .and_then(|dir| match ComponentCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(reason) => {
                tracing::warn!(%reason, "not using the plugin cache");
                None
            }
        })
}

/// Loads and checks the `index`th `[[plugin]]` entry of `config`: every
/// check of startup (file, component, contract, imports, grain type, pin).
pub fn load_entry(
    config: &Config,
    index: usize,
    engine: &PluginEngine,
    cache: Option<&ComponentCache>,
) -> Result<LoadedPlugin, PluginSetError> {
    let entry = &config.plugins[index];
    let file = PluginFile {
        path: config.plugin_path(entry),
        pin: entry.sha256.as_deref(),
        role: "in_force",
    };
    load_file(config, index, &file, engine, cache).map_err(|e| entry_error(config, index, e))
}

/// Loads and checks the `index`th entry's shadow candidate, when it names
/// one, with every check and the limits of the plugin in force; a refusal
/// is [`EntryError::Shadow`].
pub fn load_shadow(
    config: &Config,
    index: usize,
    engine: &PluginEngine,
    cache: Option<&ComponentCache>,
) -> Result<Option<LoadedPlugin>, PluginSetError> {
    let entry = &config.plugins[index];
    let Some(path) = config.shadow_path(entry) else {
        return Ok(None);
    };
    let file = PluginFile {
        path,
        pin: entry.shadow_sha256.as_deref(),
        role: "shadow",
    };
    load_file(config, index, &file, engine, cache)
        .map(Some)
        .map_err(|e| entry_error(config, index, EntryError::Shadow(Box::new(e))))
}

/// `error` of the `index`th entry of `config`.
fn entry_error(config: &Config, index: usize, error: EntryError) -> PluginSetError {
    PluginSetError {
        config: config.source.clone(),
        index,
        grain_type: config.plugins[index].grain_type.clone(),
        error: Box::new(error),
    }
}

/// A plugin file an entry names, and its pin.
struct PluginFile<'a> {
    /// The file, resolved against the config file's directory.
    path: PathBuf,
    /// The entry's pin of it (hex sha256), if any.
    pin: Option<&'a str>,
    /// `in_force` or `shadow`, for the log line.
    role: &'static str,
}

/// Loads `file` for the `index`th entry with every check of startup.
fn load_file(
    config: &Config,
    index: usize,
    file: &PluginFile<'_>,
    engine: &PluginEngine,
    cache: Option<&ComponentCache>,
) -> Result<LoadedPlugin, EntryError> {
    let entry = &config.plugins[index];
    let path = file.path.clone();
    if let Some(pin) = file.pin {
        // Check the pin on the bytes before compiling anything.
        let bytes = std::fs::read(&path).map_err(|source| EntryError::Read {
            path: path.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(pin) {
            return Err(EntryError::Pin {
                path,
                actual,
                pin: pin.to_string(),
                changed_while_loading: false,
            });
        }
    }
    let plugin = LoadedPlugin::load_with_cache(engine, &path, config.plugin_limits(entry), cache)
        .map_err(EntryError::Load)?;
    // The file may have changed between the pin check and the load: the
    // bytes actually compiled must match the pin too.
    if let Some(pin) = file.pin
        && !plugin.sha256().eq_ignore_ascii_case(pin)
    {
        return Err(EntryError::Pin {
            path,
            actual: plugin.sha256().to_string(),
            pin: pin.to_string(),
            changed_while_loading: true,
        });
    }
    let declared = &plugin.description().grain_type;
    if declared != &entry.grain_type {
        return Err(EntryError::GrainType {
            path,
            declared: declared.clone(),
            configured: entry.grain_type.clone(),
        });
    }
    tracing::info!(
        grain_type = %entry.grain_type,
        schema = %plugin.description().schema_name,
        schema_version = %plugin.description().schema_version,
        sha256 = &plugin.sha256()[..12],
        compile_ms = plugin.compile_time().as_millis() as u64,
        cache = ?plugin.cache_outcome(),
        path = %path.display(),
        role = file.role,
        "plugin loaded"
    );
    Ok(plugin)
}

/// The loaded plugins, by grain type.
#[derive(Clone, Default)]
pub struct PluginSet {
    /// The plugin in force of each grain type.
    by_grain_type: BTreeMap<String, Arc<LoadedPlugin>>,
    /// The shadow candidate of the grain types whose entry names one.
    shadows: BTreeMap<String, Arc<LoadedPlugin>>,
}

impl PluginSet {
    /// Loads and checks every `[[plugin]]` of `config`: file readable, a
    /// component of our contract's major version, no forbidden imports,
    /// declared grain type equal to the configured one, sha256 equal to the pin.
    ///
    /// With `[cache] dir` set, compiled code is taken from (and stored in) the
    /// precompiled cache; a cache directory that cannot be used is reported
    /// and plugins are compiled as without a cache.
    pub fn load(config: &Config, engine: &PluginEngine) -> Result<Self, PluginSetError> {
        let cache = open_cache(config);
        let mut by_grain_type = BTreeMap::new();
        let mut shadows = BTreeMap::new();
        for index in 0..config.plugins.len() {
            let grain_type = &config.plugins[index].grain_type;
            let plugin = load_entry(config, index, engine, cache.as_ref())?;
            by_grain_type.insert(grain_type.clone(), Arc::new(plugin));
            if let Some(shadow) = load_shadow(config, index, engine, cache.as_ref())? {
                shadows.insert(grain_type.clone(), Arc::new(shadow));
            }
        }
        Ok(Self {
            by_grain_type,
            shadows,
        })
    }

    /// Builds a set from already loaded plugins (for embedders and tests).
    pub fn from_plugins(plugins: impl IntoIterator<Item = Arc<LoadedPlugin>>) -> Self {
        let by_grain_type = plugins
            .into_iter()
            .map(|p| (p.description().grain_type.clone(), p))
            .collect();
        Self {
            by_grain_type,
            shadows: BTreeMap::new(),
        }
    }

    /// The plugin for a grain type.
    pub fn get(&self, grain_type: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_grain_type.get(grain_type)
    }

    /// The shadow candidate of a grain type, when its entry names one.
    pub fn shadow(&self, grain_type: &str) -> Option<&Arc<LoadedPlugin>> {
        self.shadows.get(grain_type)
    }

    /// The hex sha256 of every plugin and shadow candidate loaded.
    pub fn sha256s(&self) -> Vec<&str> {
        self.by_grain_type
            .values()
            .chain(self.shadows.values())
            .map(|p| p.sha256())
            .collect()
    }

    /// All plugins in force (not the shadows), ordered by grain type.
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
