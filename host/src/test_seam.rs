//! Internals the integration tests (`host/tests`, `tests/`) reach and an
//! embedder does not need: hidden from the documentation, not part of the
//! API, free to change. ARCHITECTURE.md ("The public API") lists why each
//! is here; a test that can become a unit test should, and leave this list.

pub use crate::consumer::shard::shard_of;
pub use crate::daemon::config::env::overrides_from;
pub use crate::daemon::plugins::set::PluginSet;
pub use crate::plugin::crash_guard::{CrashGuard, SnapshotId, Verdict};
pub use crate::store::now_millis;

#[cfg(feature = "tools")]
pub use crate::authoring::build::{componentize, ensure_target, plugin_profile_env};
#[cfg(feature = "tools")]
pub use crate::demo::orlando;
