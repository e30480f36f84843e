//! A test-only plugin built against `replica:plugin@2.0.0`: the contract's
//! WIT copied with the major version bumped, bound with wit-bindgen
//! directly. It is otherwise complete (describe, decode, logging), so the
//! host's only reason to refuse it is the contract's major version.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::replica::plugin::decoder::{Guest, PluginInfo};
use replica::plugin::types::{DecodeError, Snapshot, StateValue, ValueNode};

/// Decodes any payload to its length.
pub struct ContractV2;

impl Guest for ContractV2 {
    fn describe() -> PluginInfo {
        PluginInfo {
            grain_type: "Counter".into(),
            schema_name: "PayloadLength".into(),
            schema_version: "1".into(),
            sdk_version: "2.0.0".into(),
        }
    }

    fn decode(snapshot: Snapshot) -> Result<StateValue, DecodeError> {
        replica::plugin::logging::log(
            replica::plugin::logging::Level::Debug,
            "decoding with contract 2.0.0",
        );
        Ok(StateValue {
            nodes: vec![ValueNode::Unsigned(snapshot.payload.len() as u64)],
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(ContractV2);
