//! The typed replica state: what a plugin's decode returns, owned by the host.
//!
//! [`Value`] mirrors serde's data model. Its `Serialize` impl renders it
//! exactly as `serde_json::to_string` renders the plugin's original Rust
//! value, so HTTP clients see the grain author's own JSON.

mod from_serialize;
mod lift;
mod render;

pub use from_serialize::{FromSerializeError, to_value};
pub use lift::{LiftError, OutputLimits, lift};

/// A typed, self-describing state value.
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
