//! The typed replica state: what a plugin's decode returns, owned by the host.
//!
//! A plugin returns its state in the replica value encoding
//! (`guest-sdk/encoding/ENCODING.md`). [`State::validate`] checks a buffer in one
//! pass (well-formed, within [`OutputLimits`], renderable as JSON) and keeps
//! it as it is: the store holds that compact buffer, and HTTP renders JSON
//! straight from it, exactly as `serde_json::to_string` renders the plugin's
//! Rust value. Embedders read it into their own Rust type
//! ([`State::deserialize`]) or walk a [`Value`] tree built on demand
//! ([`State::to_value`]).

mod de;
mod limits;
mod reader;
mod render;
mod tree;
mod validate;

use std::sync::Arc;

use serde::Serialize;

pub use limits::OutputLimits;
pub use validate::StateError;

/// A grain's state: a validated buffer in the replica value encoding.
/// Cheap to clone (shared behind an [`Arc`]); renders with `Serialize`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct State(Arc<[u8]>);

/// Why a Rust value could not become a [`State`].
#[derive(Debug, thiserror::Error)]
pub enum FromSerializeError {
    /// The value has no encoding (e.g. a `u128` above `u64::MAX`).
    #[error("cannot encode the value: {0}")]
    Encode(#[from] replica_encoding::EncodeError),
    /// The encoding exceeds the default limits or cannot be rendered.
    #[error("the host refuses the value: {0}")]
    Refused(#[from] StateError),
}

impl State {
    /// Checks `bytes` against `limits` and keeps a copy of them.
    pub fn validate(bytes: &[u8], limits: &OutputLimits) -> Result<State, StateError> {
        validate::validate(bytes, limits)?;
        Ok(State(Arc::from(bytes)))
    }

    /// Encodes a Rust value as the guest SDK does and validates it under
    /// the default limits: a native decoder's way to produce a state.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<State, FromSerializeError> {
        let bytes = replica_encoding::to_bytes(value)?;
        Ok(State::validate(&bytes, &OutputLimits::default())?)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }

    /// Renders the state as serde_json renders the plugin's Rust value.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The state as a [`Value`] tree, built on demand.
    pub fn to_value(&self) -> Value {
        let mut reader = reader::Reader::new(&self.0);
        reader.u8();
        tree::read(&mut reader, &mut Vec::new())
            .expect("a validated state always reads back as a value")
    }

    /// Reads the state into the grain's own Rust type: a typed view for
    /// embedders, as the plugin's `Serialize` wrote it.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<T, serde::de::value::Error> {
        T::deserialize(self.to_value())
    }

    /// Looks up a top-level struct field by name (see [`Value::field`]).
    pub fn field(&self, name: &str) -> Option<Value> {
        match self.to_value() {
            Value::Record(fields) => fields.into_iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_json() {
            Ok(json) => write!(f, "State({json})"),
            Err(_) => write!(f, "State({:02x?})", self.as_bytes()),
        }
    }
}

/// A typed, self-describing state value: a tree built from a [`State`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `()` or a unit struct; renders as `null`.
    Unit,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A 32-bit float (rendered with `f32` precision).
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A string.
    String(String),
    /// A byte string; renders as an array of numbers.
    Bytes(Vec<u8>),
    /// `None`.
    None,
    /// `Some(value)`.
    Some(Box<Value>),
    /// A sequence or tuple.
    List(Vec<Value>),
    /// A struct with its field names, in declaration order.
    Record(Vec<(String, Value)>),
    /// A map with arbitrary keys.
    Map(Vec<(Value, Value)>),
    /// An enum variant: its name and, unless a unit variant, its payload.
    Variant(String, Option<Box<Value>>),
}

impl Value {
    /// Renders the value as serde_json renders the plugin's Rust value.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Looks up a record field by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
