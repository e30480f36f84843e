//! The daemon's plugins: loading and checking every `[[plugin]]` entry at
//! startup ([`set`]), the plugins in force (`live.rs`), and swapping them
//! without a restart (`swap.rs`). The Wasm runtime itself is
//! `crate::plugin`.
//!
//! [`LivePlugins`] holds what `/v1/plugins`, `/metrics` and the operator
//! page read: each grain type's plugin, its breaker and, after a swap, the
//! re-decode's progress. It is replaced whole, so a reader sees one
//! generation or the next, never a mix.
//!
//! [`PluginReloader`] is what SIGHUP and `POST /v1/admin/reload` run: it
//! re-reads the config file and applies what changed in its `[[plugin]]`
//! entries (added, removed, or a changed path, pin, limits, file or
//! shadow candidate).
//! Every new plugin passes every startup check before anything changes; if
//! one fails, nothing changes. A change to another section is logged as
//! needing a restart. Applying goes grain type by grain type through the
//! [`ReplicatorControl`](crate::consumer::ReplicatorControl): the swap is atomic per type, and the replicas
//! are decoded again in the background (ARCHITECTURE.md, "Changing a
//! grain's plugin").

mod live;
pub(crate) mod set;
mod swap;

pub use live::{InForce, LivePlugins};
pub use swap::PluginReloader;
