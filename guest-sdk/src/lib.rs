//! # replica-guest: write a replica-host decoding plugin
//!
//! A plugin turns the opaque payload of one grain type's snapshots into
//! typed state. Write your serde state type, implement [`Plugin`], and export
//! it with [`export_plugin!`]:
//!
//! ```
//! use replica_guest::{DecodeError, Plugin, Snapshot};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct CounterState {
//!     pub count: i64,
//! }
//!
//! pub struct Counter;
//!
//! impl Plugin for Counter {
//!     const GRAIN_TYPE: &'static str = "Counter";
//!     const SCHEMA_NAME: &'static str = "CounterState";
//!     const SCHEMA_VERSION: &'static str = "1";
//!     type State = CounterState;
//!
//!     fn decode(snapshot: &Snapshot) -> Result<CounterState, DecodeError> {
//!         replica_guest::formats::bincode(&snapshot.payload)
//!     }
//! }
//!
//! replica_guest::export_plugin!(Counter);
//! ```
//!
//! Build it with `replica-host plugin build`. The SDK takes care of the
//! bindings, the encoding of your state for the host (the replica value
//! encoding, [`encoding`], the `replica-encoding` crate), errors,
//! logging and the panic hook. Your decode runs natively too, so a plain
//! `cargo test` can exercise it (see [`decode_to_state`]).
//!
//! When the state type changes, keep the old layouts and upcast them: see
//! [`versions`].
//!
//! This SDK implements contract `replica:plugin@2.0.0`. Plugins built
//! against an earlier SDK (contract 1.x) are refused by the host: rebuild
//! them against this one.

pub mod arena;
#[doc(hidden)]
pub mod bindings;
pub use replica_encoding as encoding;
mod error;
pub mod formats;
pub mod log;
pub mod versions;

pub use error::{DecodeError, ErrorKind};

use serde::Serialize;

/// The plugin's allocator in the Wasm build (see [`arena`]). The cfg
/// `replica_guest_no_arena` (set through `RUSTFLAGS`) turns it off for a
/// whole build; `bench decode` uses it to measure what the arena buys.
#[cfg(all(target_arch = "wasm32", feature = "arena", not(replica_guest_no_arena)))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

/// The SDK version a plugin reports to the host.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One snapshot of a grain, as the host hands it to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The grain's type name, e.g. `Counter`.
    pub grain_type: String,
    /// The grain's key within its type.
    pub grain_key: String,
    /// The log sequence of this snapshot.
    pub sequence: u64,
    /// The primary's wall clock (Unix ms) when it wrote the entry.
    pub timestamp_millis: i64,
    /// The cluster that wrote the entry.
    pub source_cluster: String,
    /// The grain's serialized state.
    pub payload: Vec<u8>,
}

/// A decoding plugin for one grain type.
///
/// `decode` must be a pure function of the snapshot: the host may run every
/// call in a fresh instance, so nothing kept between calls survives.
pub trait Plugin {
    /// The Orlando grain type this plugin decodes.
    const GRAIN_TYPE: &'static str;
    /// The name of the state schema, usually the state type's name.
    const SCHEMA_NAME: &'static str;
    /// The version of the state schema: the one `decode` returns.
    const SCHEMA_VERSION: &'static str;
    /// Every schema version `decode` accepts in a payload, newest first.
    /// Empty (the default) means only [`Plugin::SCHEMA_VERSION`]. With
    /// [`versions::Versions`], set it to `&VERSIONS.names()`.
    const STATE_VERSIONS: &'static [&'static str] = &[];
    /// The decoded state.
    type State: Serialize;

    /// Decodes one snapshot's payload.
    fn decode(snapshot: &Snapshot) -> Result<Self::State, DecodeError>;
}

/// Runs `P`'s decode and encodes the state for the host, exactly as the
/// exported Wasm function does. Useful in native tests.
pub fn decode_to_state<P: Plugin>(snapshot: &Snapshot) -> Result<Vec<u8>, DecodeError> {
    let state = P::decode(snapshot)?;
    // The encoding is about as long as a compact payload: start there.
    let capacity = snapshot.payload.len() + snapshot.payload.len() / 4 + 32;
    encoding::to_bytes_with_capacity(&state, capacity)
        .map_err(|e| DecodeError::rejected(format!("state cannot be encoded: {e}")))
}

/// The schema versions `P` reports to the host.
pub fn state_versions<P: Plugin>() -> Vec<String> {
    if P::STATE_VERSIONS.is_empty() {
        vec![P::SCHEMA_VERSION.to_string()]
    } else {
        P::STATE_VERSIONS.iter().map(|v| v.to_string()).collect()
    }
}

#[doc(hidden)]
pub mod __export {
    //! Glue used by [`export_plugin!`](crate::export_plugin); not a public API.
    use super::*;
    use crate::bindings::exports::replica::plugin::decoder as wit;
    use crate::bindings::replica::plugin::types as t;

    pub use crate::bindings::exports::replica::plugin::decoder::Guest;

    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("plugin panicked: {info}"));
            }))
        });
    }

    /// The exported `describe`.
    pub fn describe<P: Plugin>() -> wit::PluginInfo {
        wit::PluginInfo {
            grain_type: P::GRAIN_TYPE.to_string(),
            schema_name: P::SCHEMA_NAME.to_string(),
            schema_version: P::SCHEMA_VERSION.to_string(),
            sdk_version: SDK_VERSION.to_string(),
            state_versions: state_versions::<P>(),
        }
    }

    /// The exported `decode`.
    pub fn decode<P: Plugin>(s: wit::Snapshot) -> Result<Vec<u8>, wit::DecodeError> {
        install_panic_hook();
        let snapshot = Snapshot {
            grain_type: s.grain_type,
            grain_key: s.grain_key,
            sequence: s.sequence,
            timestamp_millis: s.timestamp_millis,
            source_cluster: s.source_cluster,
            payload: s.payload,
        };
        decode_to_state::<P>(&snapshot).map_err(|e| t::DecodeError {
            kind: match e.kind {
                ErrorKind::MalformedPayload => t::ErrorKind::MalformedPayload,
                ErrorKind::UnsupportedSchemaVersion => t::ErrorKind::UnsupportedSchemaVersion,
                ErrorKind::Rejected => t::ErrorKind::Rejected,
            },
            message: e.message,
        })
    }
}

/// Exports a [`Plugin`] implementation as the component's `decoder`.
/// Use it once per plugin crate, at the crate's top level.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __ReplicaGuestExport;

        impl $crate::__export::Guest for __ReplicaGuestExport {
            fn describe() -> $crate::bindings::exports::replica::plugin::decoder::PluginInfo {
                $crate::__export::describe::<$plugin>()
            }
            fn decode(
                snapshot: $crate::bindings::exports::replica::plugin::decoder::Snapshot,
            ) -> ::core::result::Result<
                ::std::vec::Vec<u8>,
                $crate::bindings::exports::replica::plugin::decoder::DecodeError,
            > {
                $crate::__export::decode::<$plugin>(snapshot)
            }
        }

        // The component exports exist only in the Wasm build; natively the
        // crate stays an ordinary library that `cargo test` can link.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_world!(__ReplicaGuestExport with_types_in $crate::bindings);
    };
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
