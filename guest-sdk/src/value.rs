//! Converts any `T: Serialize` into the contract's typed value: a flat list
//! of [`ValueNode`]s whose root is node 0 and whose children always come
//! after their parent.
//!
//! The mapping follows serde's data model so that the host can render the
//! value exactly as `serde_json::to_string` renders the original Rust value.

use serde::ser::{self, Serialize};

pub use crate::bindings::replica::plugin::types::{
    Field, MapEntry, StateValue, ValueNode, VariantValue,
};

/// Why a value could not be converted.
#[derive(Debug)]
pub struct ToValueError(String);

impl std::fmt::Display for ToValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ToValueError {}

impl ser::Error for ToValueError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ToValueError(msg.to_string())
    }
}

/// Converts `value` into a [`StateValue`].
pub fn to_state_value<T: Serialize + ?Sized>(value: &T) -> Result<StateValue, ToValueError> {
    let mut nodes = Vec::new();
    value.serialize(NodeWriter { nodes: &mut nodes })?;
    Ok(StateValue { nodes })
}

type Index = u32;

struct NodeWriter<'a> {
    nodes: &'a mut Vec<ValueNode>,
}

impl<'a> NodeWriter<'a> {
    fn push(self, node: ValueNode) -> Result<Index, ToValueError> {
        let index = Index::try_from(self.nodes.len())
            .map_err(|_| ToValueError("value has more than 2^32 nodes".into()))?;
        self.nodes.push(node);
        Ok(index)
    }

    /// Reserves the slot of a composite node; `Compound::finish` fills it.
    fn open(self, kind: Kind, variant: Option<&'static str>) -> Result<Compound<'a>, ToValueError> {
        let nodes = self.nodes;
        let index = NodeWriter { nodes: &mut *nodes }.push(ValueNode::Unit)?;
        // A variant's payload gets a node of its own after the variant node.
        let (variant, body) = match variant {
            Some(name) => {
                let body = NodeWriter { nodes: &mut *nodes }.push(ValueNode::Unit)?;
                (Some((index, name)), body)
            }
            None => (None, index),
        };
        Ok(Compound {
            nodes,
            variant,
            body,
            kind,
            items: Vec::new(),
            fields: Vec::new(),
            entries: Vec::new(),
            pending_key: None,
        })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    List,
    Record,
    Map,
}

struct Compound<'a> {
    nodes: &'a mut Vec<ValueNode>,
    variant: Option<(Index, &'static str)>,
    body: Index,
    kind: Kind,
    items: Vec<Index>,
    fields: Vec<Field>,
    entries: Vec<MapEntry>,
    pending_key: Option<Index>,
}

impl Compound<'_> {
    fn child<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<Index, ToValueError> {
        value.serialize(NodeWriter {
            nodes: &mut *self.nodes,
        })
    }

    fn finish(self) -> Result<Index, ToValueError> {
        self.nodes[self.body as usize] = match self.kind {
            Kind::List => ValueNode::List(self.items),
            Kind::Record => ValueNode::Record(self.fields),
            Kind::Map => ValueNode::Map(self.entries),
        };
        match self.variant {
            Some((index, name)) => {
                self.nodes[index as usize] = ValueNode::Variant(VariantValue {
                    name: name.to_string(),
                    payload: Some(self.body),
                });
                Ok(index)
            }
            None => Ok(self.body),
        }
    }
}

impl<'a> ser::Serializer for NodeWriter<'a> {
    type Ok = Index;
    type Error = ToValueError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<Index, ToValueError> {
        self.push(ValueNode::Boolean(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Index, ToValueError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Index, ToValueError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Index, ToValueError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Index, ToValueError> {
        self.push(ValueNode::Signed(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Index, ToValueError> {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => Err(ToValueError(format!(
                "i128 value {v} does not fit in 64 bits"
            ))),
        }
    }
    fn serialize_u8(self, v: u8) -> Result<Index, ToValueError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Index, ToValueError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Index, ToValueError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Index, ToValueError> {
        self.push(ValueNode::Unsigned(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Index, ToValueError> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(ToValueError(format!(
                "u128 value {v} does not fit in 64 bits"
            ))),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<Index, ToValueError> {
        self.push(ValueNode::Float32(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Index, ToValueError> {
        self.push(ValueNode::Float64(v))
    }
    fn serialize_char(self, v: char) -> Result<Index, ToValueError> {
        self.push(ValueNode::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Index, ToValueError> {
        self.push(ValueNode::Text(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Index, ToValueError> {
        self.push(ValueNode::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Index, ToValueError> {
        self.push(ValueNode::Absent)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Index, ToValueError> {
        let nodes = self.nodes;
        let index = NodeWriter { nodes: &mut *nodes }.push(ValueNode::Absent)?;
        let child = value.serialize(NodeWriter { nodes: &mut *nodes })?;
        nodes[index as usize] = ValueNode::Present(child);
        Ok(index)
    }
    fn serialize_unit(self) -> Result<Index, ToValueError> {
        self.push(ValueNode::Unit)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Index, ToValueError> {
        self.push(ValueNode::Unit)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Index, ToValueError> {
        self.push(ValueNode::Variant(VariantValue {
            name: variant.to_string(),
            payload: None,
        }))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Index, ToValueError> {
        // Transparent, as in serde_json.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Index, ToValueError> {
        let nodes = self.nodes;
        let index = NodeWriter { nodes: &mut *nodes }.push(ValueNode::Unit)?;
        let child = value.serialize(NodeWriter { nodes: &mut *nodes })?;
        nodes[index as usize] = ValueNode::Variant(VariantValue {
            name: variant.to_string(),
            payload: Some(child),
        });
        Ok(index)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::List, None)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::List, None)
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::List, None)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::List, Some(variant))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::Map, None)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::Record, None)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ToValueError> {
        self.open(Kind::Record, Some(variant))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ToValueError> {
        let child = self.child(value)?;
        self.items.push(child);
        Ok(())
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ToValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ToValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ToValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ToValueError> {
        self.pending_key = Some(self.child(key)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ToValueError> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| ToValueError("map value serialized before its key".into()))?;
        let value = self.child(value)?;
        self.entries.push(MapEntry { key, value });
        Ok(())
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ToValueError> {
        let value = self.child(value)?;
        self.fields.push(Field {
            name: key.to_string(),
            value,
        });
        Ok(())
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = Index;
    type Error = ToValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ToValueError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Index, ToValueError> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tup(i8, bool),
        Str { x: Option<Option<u64>> },
    }

    #[derive(Serialize)]
    struct Outer {
        big: u64,
        neg: i64,
        name: String,
        tags: Vec<E>,
        map: BTreeMap<String, f64>,
    }

    fn check_tree(v: &StateValue) {
        // Every child index is greater than its parent's and referenced once.
        let mut seen = vec![false; v.nodes.len()];
        seen[0] = true;
        for (i, node) in v.nodes.iter().enumerate() {
            let children: Vec<u32> = match node {
                ValueNode::Present(c) => vec![*c],
                ValueNode::List(items) => items.clone(),
                ValueNode::Record(fields) => fields.iter().map(|f| f.value).collect(),
                ValueNode::Map(entries) => entries.iter().flat_map(|e| [e.key, e.value]).collect(),
                ValueNode::Variant(v) => v.payload.into_iter().collect(),
                _ => vec![],
            };
            for c in children {
                assert!(c as usize > i, "child {c} of {i} is not after it");
                assert!(!seen[c as usize], "node {c} referenced twice");
                seen[c as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "orphan nodes");
    }

    #[test]
    fn converts_the_serde_data_model() {
        let value = Outer {
            big: u64::MAX,
            neg: i64::MIN,
            name: "zoë ✓".into(),
            tags: vec![
                E::Unit,
                E::New(7),
                E::Tup(-1, true),
                E::Str { x: Some(None) },
            ],
            map: [("a".to_string(), 1.5)].into_iter().collect(),
        };
        let v = to_state_value(&value).unwrap();
        check_tree(&v);
        let ValueNode::Record(fields) = &v.nodes[0] else {
            panic!("root is not a record")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["big", "neg", "name", "tags", "map"]);
        assert!(matches!(
            v.nodes[fields[0].value as usize],
            ValueNode::Unsigned(u64::MAX)
        ));
        assert!(matches!(
            v.nodes[fields[1].value as usize],
            ValueNode::Signed(i64::MIN)
        ));
        assert!(matches!(&v.nodes[fields[2].value as usize], ValueNode::Text(s) if s == "zoë ✓"));
        // Some(None) keeps both layers.
        let present = v
            .nodes
            .iter()
            .position(|n| matches!(n, ValueNode::Present(_)))
            .unwrap();
        let ValueNode::Present(inner) = v.nodes[present] else {
            unreachable!()
        };
        assert!(matches!(v.nodes[inner as usize], ValueNode::Absent));
    }

    #[test]
    fn refuses_128_bit_overflow() {
        assert!(to_state_value(&u128::MAX).is_err());
        assert!(to_state_value(&5u128).is_ok());
    }
}
