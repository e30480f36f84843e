//! Errors of loading plugins. (The errors of calling one are the
//! consumer's and the runtime's common language: [`crate::decode`].)

/// Why a plugin file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LoadError {
    /// The plugin file.
    pub path: String,
    /// Why it was refused, in one line.
    pub reason: String,
}
