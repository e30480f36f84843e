//! Native `T: Serialize` → [`Value`], with the mapping the guest SDK uses
//! (`replica_guest::to_state_value`) followed by [`super::lift`], but built
//! directly, with no node list in between. The benchmarks use it as the
//! native baseline: the same typed value a plugin returns, produced by the
//! same Rust decode run in the host.

use serde::ser::{self, Serialize};

use super::Value;

/// Why a value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FromSerializeError(String);

impl ser::Error for FromSerializeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        FromSerializeError(msg.to_string())
    }
}

/// Converts `value` into a [`Value`] exactly as a plugin built with the
/// guest SDK returns it to the host.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value.serialize(ValueSerializer)
}

type Result<T> = std::result::Result<T, FromSerializeError>;

struct ValueSerializer;

/// A composite being built.
pub struct Compound {
    variant: Option<&'static str>,
    kind: Kind,
}

enum Kind {
    List(Vec<Value>),
    Record(Vec<(String, Value)>),
    Map(Vec<(Value, Value)>, Option<Value>),
}

impl Compound {
    fn new(kind: Kind, variant: Option<&'static str>) -> Self {
        Self { variant, kind }
    }

    fn finish(self) -> Value {
        let body = match self.kind {
            Kind::List(items) => Value::List(items),
            Kind::Record(fields) => Value::Record(fields),
            Kind::Map(entries, _) => Value::Map(entries),
        };
        match self.variant {
            Some(name) => Value::Variant(name.to_owned(), Some(Box::new(body))),
            None => body,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let value = value.serialize(ValueSerializer)?;
        match &mut self.kind {
            Kind::List(items) => items.push(value),
            _ => return Err(ser::Error::custom("element outside a sequence")),
        }
        Ok(())
    }
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = FromSerializeError;
    type SerializeSeq = Compound;
    type SerializeTuple = Compound;
    type SerializeTupleStruct = Compound;
    type SerializeTupleVariant = Compound;
    type SerializeMap = Compound;
    type SerializeStruct = Compound;
    type SerializeStructVariant = Compound;

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(Value::I64(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(Value::I64(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value> {
        i64::try_from(v)
            .map(Value::I64)
            .map_err(|_| FromSerializeError(format!("i128 value {v} does not fit in 64 bits")))
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(Value::U64(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(Value::U64(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value> {
        u64::try_from(v)
            .map(Value::U64)
            .map_err(|_| FromSerializeError(format!("u128 value {v} does not fit in 64 bits")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(Value::F32(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::F64(v))
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value> {
        Ok(Value::Some(Box::new(value.serialize(self)?)))
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::Unit)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::Unit)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(Value::Variant(variant.to_owned(), None))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value> {
        Ok(Value::Variant(
            variant.to_owned(),
            Some(Box::new(value.serialize(self)?)),
        ))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound> {
        Ok(Compound::new(
            Kind::List(Vec::with_capacity(len.unwrap_or(0).min(4096))),
            None,
        ))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound> {
        Ok(Compound::new(
            Kind::List(Vec::with_capacity(len.min(4096))),
            Some(variant),
        ))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound> {
        Ok(Compound::new(
            Kind::Map(Vec::with_capacity(len.unwrap_or(0).min(4096)), None),
            None,
        ))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound> {
        Ok(Compound::new(
            Kind::Record(Vec::with_capacity(len.min(4096))),
            None,
        ))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound> {
        Ok(Compound::new(
            Kind::Record(Vec::with_capacity(len.min(4096))),
            Some(variant),
        ))
    }
}

impl ser::SerializeSeq for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        let key = key.serialize(ValueSerializer)?;
        match &mut self.kind {
            Kind::Map(_, pending) => *pending = Some(key),
            _ => return Err(ser::Error::custom("key outside a map")),
        }
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let value = value.serialize(ValueSerializer)?;
        match &mut self.kind {
            Kind::Map(entries, pending) => {
                let key = pending.take().ok_or_else(|| {
                    FromSerializeError("map value serialized before its key".into())
                })?;
                entries.push((key, value));
                Ok(())
            }
            _ => Err(ser::Error::custom("value outside a map")),
        }
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        let value = value.serialize(ValueSerializer)?;
        match &mut self.kind {
            Kind::Record(fields) => fields.push((key.to_owned(), value)),
            _ => return Err(ser::Error::custom("field outside a struct")),
        }
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for Compound {
    type Ok = Value;
    type Error = FromSerializeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;
    use crate::demo::orlando;

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tup(i8, bool),
        Str { x: Option<Option<u64>> },
    }

    #[derive(Serialize)]
    struct Newtype(char);

    #[test]
    fn renders_like_serde_json() {
        let values = (
            vec![
                E::Unit,
                E::New(7),
                E::Tup(-1, true),
                E::Str { x: Some(None) },
            ],
            BTreeMap::from([(1u8, "a"), (2, "b")]),
            Newtype('é'),
            (1.5f32, -2.25f64, (), u128::from(u64::MAX)),
        );
        let value = to_value(&values).unwrap();
        assert_eq!(
            value.to_json().unwrap(),
            serde_json::to_string(&values).unwrap()
        );
        let account = orlando::sample_account(3);
        assert_eq!(
            to_value(&account).unwrap().to_json().unwrap(),
            serde_json::to_string(&account).unwrap()
        );
        assert!(to_value(&i128::MAX).is_err());
    }
}
