//! A test-only plugin built against the previous contract,
//! `replica:plugin@1.0.0` (the value as a list of nodes), as every plugin
//! built with the first SDK was: that contract's WIT, bound with wit-bindgen
//! directly. It is otherwise complete (describe, decode, logging), so the
//! host's only reason to refuse it is the contract's major version.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::replica::plugin::decoder::{Guest, PluginInfo};
use replica::plugin::types::{DecodeError, Snapshot, StateValue, ValueNode};

/// Decodes any payload to its length.
pub struct ContractV1;

impl Guest for ContractV1 {
    fn describe() -> PluginInfo {
        PluginInfo {
            grain_type: "Counter".into(),
            schema_name: "PayloadLength".into(),
            schema_version: "1".into(),
            sdk_version: "0.1.0".into(),
        }
    }

    fn decode(snapshot: Snapshot) -> Result<StateValue, DecodeError> {
        replica::plugin::logging::log(
            replica::plugin::logging::Level::Debug,
            "decoding with contract 1.0.0",
        );
        Ok(StateValue {
            nodes: vec![ValueNode::Unsigned(snapshot.payload.len() as u64)],
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(ContractV1);
