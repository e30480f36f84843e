//! The Wasm plugin runtime: one shared engine; each plugin compiled once,
//! checked against the contract, and called in a fresh, limited instance.

pub mod breaker;
pub mod cache;
mod call_state;
mod checks;
pub mod crash_guard;
pub mod decode_slots;
pub mod decoder;
mod dir;
pub mod engine;
pub mod error;
pub mod features;
pub mod limits;
pub mod loaded;

pub use cache::{CacheDirError, CacheOutcome, ComponentCache};
pub use decode_slots::DecodeSlots;
pub use decoder::PluginDecoder;
pub use dir::{PluginDir, PluginDirError};
pub use engine::{EngineOptions, InstanceAllocation, PluginEngine};
pub use error::{LoadError, PluginError};
pub use limits::PluginLimits;
pub use loaded::{LoadedPlugin, SnapshotRef};
