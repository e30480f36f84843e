//! A cache of precompiled plugins, so a restart does not compile them again.
//!
//! # Keying
//! An artifact's file name is `sha256(file sha256 ‖ engine compatibility
//! key)` (see [`PluginEngine::compatibility_key`]: wasmtime's
//! precompile-compatibility hash of the engine's configuration and target,
//! plus the wasmtime version). A changed plugin file, engine configuration
//! or wasmtime version therefore looks for another file and never finds a
//! stale artifact. wasmtime also checks its own header on load and refuses
//! an artifact from another version or configuration.
//!
//! # Why loading is safe
//! Deserializing compiled code is `unsafe` in wasmtime: the bytes are
//! trusted to be code wasmtime itself produced. The cache therefore only
//! loads artifacts the host wrote itself, in a directory it owns:
//! - the directory must be owned by the host's effective user and not be
//!   writable by group or others (it is created `0700`); otherwise the cache
//!   is refused with an error and plugins are compiled as usual;
//! - each artifact must be a regular file (not a symlink) owned by that user
//!   and not writable by others;
//! - each artifact carries a header (magic, its own key, sha256 of the
//!   compiled bytes); any mismatch (truncation, corruption, a file renamed
//!   to another key) is treated as a miss: the file is removed, the plugin
//!   compiled and the artifact written again.
//!
//! Writes are atomic: the artifact goes to a temporary file in the same
//! directory, is synced, then renamed over the final name, so a crash or a
//! concurrent host never leaves a half-written artifact under a real key.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::PluginEngine;

/// Marks a file as one of our artifacts, format version 1.
const MAGIC: &[u8; 8] = b"RHCWASM1";
/// Magic, key (64 hex digits), sha256 of the payload.
const HEADER_LEN: usize = 8 + 64 + 32;

/// What loading through the cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// No cache in use: compiled.
    Uncached,
    /// Loaded a precompiled artifact.
    Hit,
    /// No artifact: compiled and stored one.
    Miss,
    /// An artifact was there but refused (corrupt, wrong owner, ...):
    /// compiled and stored a new one.
    Refused,
}

/// Why a cache directory cannot be used; the one line names the directory.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    /// It could not be created or examined.
    #[error("cache dir {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a directory is there.
    #[error("cache dir {}: not a directory", dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// Another user owns it: their code must not run as ours.
    #[error(
        "cache dir {}: owned by uid {owner}, not by this user ({user}); refusing to load code from it",
        dir.display()
    )]
    NotOwned {
        /// The directory.
        dir: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        user: u32,
    },
    /// Others could plant code in it.
    #[error(
        "cache dir {}: writable by group or others (mode {mode:o}); refusing to load code from it",
        dir.display()
    )]
    Writable {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A directory of precompiled plugins owned by this host.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// Opens (creating, mode `0700`) the cache directory. Refuses a directory
    /// not owned by this user or writable by group or others.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CacheDirError> {
        let dir = dir.as_ref().to_path_buf();
        let io = |source: std::io::Error| CacheDirError::Io {
            dir: dir.clone(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let meta = fs::symlink_metadata(&dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(CacheDirError::NotADirectory { dir });
        }
        let user = effective_uid();
        if meta.uid() != user {
            return Err(CacheDirError::NotOwned {
                dir,
                owner: meta.uid(),
                user,
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(CacheDirError::Writable {
                dir,
                mode: meta.mode() & 0o777,
            });
        }
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artifact key of a plugin file (hex sha256) under `engine`.
    pub fn key(engine: &PluginEngine, file_sha256: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(b"replica-host component cache v1\0");
        digest.update(file_sha256.as_bytes());
        digest.update(b"\0");
        digest.update(engine.compatibility_key().as_bytes());
        hex::encode(digest.finalize())
    }

    /// Where the artifact of `key` lives.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The compiled component for `bytes` (whose hex sha256 is `file_sha256`):
    /// loaded from the cache when a valid artifact is there, else compiled
    /// and stored. Storing failures are logged, never fatal.
    pub(crate) fn load_or_compile(
        &self,
        engine: &PluginEngine,
        bytes: &[u8],
        file_sha256: &str,
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        let key = Self::key(engine, file_sha256);
        let path = self.path_of(&key);
        let mut outcome = CacheOutcome::Miss;
        match self.read_artifact(&path, &key) {
            Ok(Some(payload)) => {
                // SAFETY: the payload is an artifact this host serialized
                // itself (header, key and checksum verified above) in a
                // directory only this user can write; see the module docs.
                match unsafe { Component::deserialize(&engine.engine, &payload) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "refusing a cached plugin artifact; recompiling");
                        outcome = CacheOutcome::Refused;
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "refusing a cached plugin artifact; recompiling");
                outcome = CacheOutcome::Refused;
                // Only remove what we may have written: a regular file of ours.
                if fs::symlink_metadata(&path)
                    .is_ok_and(|m| m.is_file() && m.uid() == effective_uid())
                {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(&engine.engine, bytes)?;
        match component.serialize() {
            Ok(payload) => {
                if let Err(e) = self.write_artifact(&path, &key, &payload) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot store a compiled plugin in the cache");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize a compiled plugin for the cache")
            }
        }
        Ok((component, outcome))
    }

    /// The artifact's payload; `Ok(None)` when there is none; `Err` when a
    /// file is there but must not be loaded.
    fn read_artifact(&self, path: &Path, key: &str) -> Result<Option<Vec<u8>>, String> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.uid() != effective_uid() || meta.mode() & 0o022 != 0 {
            return Err("not written by this user, or writable by others".into());
        }
        let data = fs::read(path).map_err(|e| e.to_string())?;
        if data.len() < HEADER_LEN || &data[..8] != MAGIC {
            return Err("not an artifact of this host (bad header)".into());
        }
        if &data[8..72] != key.as_bytes() {
            return Err("the artifact's key does not match its name".into());
        }
        let payload = &data[HEADER_LEN..];
        if Sha256::digest(payload).as_slice() != &data[72..HEADER_LEN] {
            return Err("checksum mismatch (truncated or corrupt)".into());
        }
        Ok(Some(data[HEADER_LEN..].to_vec()))
    }

    fn write_artifact(&self, path: &Path, key: &str, payload: &[u8]) -> std::io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".{key}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(key.as_bytes())?;
            file.write_all(&Sha256::digest(payload))?;
            file.write_all(payload)?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
