//! The Wasm plugin runtime: one shared engine; each plugin compiled once,
//! checked against the contract, and called in a fresh, limited instance.

pub mod breaker;
pub mod build;
pub mod cache;
mod call_state;
mod checks;
pub mod crash_guard;
pub mod decode_slots;
pub mod decoder;
pub mod engine;
pub mod error;
pub mod features;
pub mod limits;
pub mod loaded;

pub use crate::decode::{CallError, CallErrorKind};
pub use cache::{CacheDirError, CacheOutcome, ComponentCache};
pub use decode_slots::DecodeSlots;
pub use decoder::PluginDecoder;
pub use engine::{EngineOptions, InstanceAllocation, PluginEngine};
pub use error::{LoadError, PluginError};
pub use limits::PluginLimits;
#[cfg(feature = "tools")]
pub use loaded::WarmInstance;
pub use loaded::{LoadedPlugin, PluginDescription, PluginStats, SnapshotRef};
