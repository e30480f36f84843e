//! A directory of plugins, for embedders: every `*.wasm` file in it loaded,
//! checked and wrapped as the decoder of the grain type it describes.
//!
//! The daemon loads its plugins from `[[plugin]]` entries instead
//! (`daemon/plugins/`), each with its own limits, shadow and cache.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DecodeSlots, LoadError, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits};
use crate::decode::SnapshotDecoder;

/// Why a plugin directory could not be loaded; `Display` is one line naming
/// the directory or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum PluginDirError {
    /// The directory could not be listed.
    #[error("{dir}: cannot list the plugin directory: {source}")]
    List {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A plugin file failed to load or its checks (the error names it).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two files decode the same grain type.
    #[error("{second}: decodes grain type {grain_type}, as {first} already does")]
    Duplicate {
        /// The grain type.
        grain_type: String,
        /// The file loaded first (in name order).
        first: PathBuf,
        /// The file that repeats it.
        second: PathBuf,
    },
    /// The WebAssembly engine could not be created.
    #[error("cannot create the WebAssembly engine: {0:#}")]
    Engine(anyhow::Error),
}

/// The plugins of one directory, by the grain type each decodes.
pub struct PluginDir {
    /// Grain type → the file and the loaded plugin.
    plugins: BTreeMap<String, (PathBuf, Arc<LoadedPlugin>)>,
    /// The decode slots every decoder of the directory shares.
    slots: DecodeSlots,
}

impl PluginDir {
    /// Loads every `*.wasm` file of `dir` (in name order) with default
    /// limits, on a new engine, sharing one decode slot per core.
    pub fn load(dir: &Path) -> Result<Self, PluginDirError> {
        let engine = PluginEngine::new().map_err(PluginDirError::Engine)?;
        Self::load_with(
            &engine,
            dir,
            PluginLimits::default(),
            DecodeSlots::per_core(),
        )
    }

    /// Like [`PluginDir::load`], on `engine`, with `limits` for every
    /// plugin and `slots` shared by their decoders.
    pub fn load_with(
        engine: &PluginEngine,
        dir: &Path,
        limits: PluginLimits,
        slots: DecodeSlots,
    ) -> Result<Self, PluginDirError> {
        let list = |source| PluginDirError::List {
            dir: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(list)? {
            let path = entry.map_err(list)?.path();
            if path.extension().is_some_and(|e| e == "wasm") {
                files.push(path);
            }
        }
        files.sort();
        let mut plugins = BTreeMap::new();
        for path in files {
            let plugin = Arc::new(LoadedPlugin::load(engine, &path, limits)?);
            let grain_type = plugin.description().grain_type.clone();
            if let Some((first, _)) = plugins.get(&grain_type) {
                return Err(PluginDirError::Duplicate {
                    grain_type,
                    first: PathBuf::clone(first),
                    second: path,
                });
            }
            plugins.insert(grain_type, (path, plugin));
        }
        Ok(Self { plugins, slots })
    }

    /// Each grain type and the file that decodes it, in grain type order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.plugins
            .iter()
            .map(|(grain_type, (path, _))| (grain_type.as_str(), path.as_path()))
    }

    /// The loaded plugin of `grain_type`, if the directory has one.
    pub fn plugin(&self, grain_type: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(grain_type).map(|(_, plugin)| plugin)
    }

    /// The decoders, by grain type: what [`crate::Replicator::new`] takes.
    pub fn decoders(&self) -> HashMap<String, Arc<dyn SnapshotDecoder>> {
        self.plugins
            .iter()
            .map(|(grain_type, (_, plugin))| {
                let decoder = PluginDecoder::new(Arc::clone(plugin), self.slots.clone());
                (
                    grain_type.clone(),
                    Arc::new(decoder) as Arc<dyn SnapshotDecoder>,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_directory_is_one_line_naming_it() {
        let err = PluginDir::load(Path::new("/nonexistent/plugins"))
            .err()
            .expect("no such directory");
        let line = err.to_string();
        assert!(
            line.starts_with("/nonexistent/plugins: cannot list"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn a_bad_file_is_named_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a plugin").unwrap();
        std::fs::write(dir.path().join("broken.wasm"), "not wasm").unwrap();
        let err = PluginDir::load(dir.path())
            .err()
            .expect("broken.wasm refused");
        assert!(matches!(err, PluginDirError::Load(_)), "{err:?}");
        let line = err.to_string();
        assert!(line.contains("broken.wasm"), "{line}");
        assert!(!line.contains("notes.txt"), "{line}");
    }

    #[test]
    fn an_empty_directory_has_no_decoders() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = PluginDir::load(dir.path()).unwrap();
        assert!(plugins.decoders().is_empty());
        assert_eq!(plugins.files().count(), 0);
    }
}
