//! Serde rendering of [`Value`], matching serde_json's output for the
//! original Rust value.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::Value;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Unit => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::I64(n) => s.serialize_i64(*n),
            Value::U64(n) => s.serialize_u64(*n),
            Value::F32(n) => s.serialize_f32(*n),
            Value::F64(n) => s.serialize_f64(*n),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::None => s.serialize_none(),
            Value::Some(v) => s.serialize_some(v.as_ref()),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            // serde_json writes structs and maps alike: `{"name":value,...}`.
            Value::Record(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            // Externally tagged, as serde_json writes enums.
            Value::Variant(name, None) => s.serialize_str(name),
            Value::Variant(name, Some(payload)) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(name, payload.as_ref())?;
                map.end()
            }
        }
    }
}
