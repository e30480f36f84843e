//! Serde rendering of a [`State`] (straight from its buffer) and of a
//! [`Value`], matching serde_json's output for the original Rust value.

use std::cell::RefCell;

use replica_encoding::tag;
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use super::reader::{NameRef, Reader, small_int};
use super::{State, Value};

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut reader = Reader::new(self.as_bytes());
        reader.u8(); // the version byte, checked when the state was validated
        let walk = Walk(RefCell::new((reader, Vec::new())));
        walk.serialize(s)
    }
}

/// Renders the next value of a validated buffer. The reader and the names
/// seen so far sit in a `RefCell` because serde hands `Serialize` values
/// out by shared reference, one element after another.
struct Walk<'a>(RefCell<(Reader<'a>, Vec<&'a str>)>);

fn broken<E: serde::ser::Error>() -> E {
    E::custom("the state's encoding is broken")
}

impl Walk<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.borrow().0.peek()
    }
}

impl Serialize for Walk<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut guard = self.0.borrow_mut();
        let (r, names) = &mut *guard;
        let t = r.u8().ok_or_else(broken)?;
        match t {
            tag::UNIT => s.serialize_unit(),
            tag::FALSE => s.serialize_bool(false),
            tag::TRUE => s.serialize_bool(true),
            tag::SIGNED => s.serialize_i64(r.signed().ok_or_else(broken)?),
            tag::UNSIGNED => s.serialize_u64(r.varint().ok_or_else(broken)?),
            tag::F32 => s.serialize_f32(f32::from_le_bytes(r.array().ok_or_else(broken)?)),
            tag::F64 => s.serialize_f64(f64::from_le_bytes(r.array().ok_or_else(broken)?)),
            tag::STRING => s.serialize_str(r.str().ok_or_else(broken)?),
            tag::BYTES => s.serialize_bytes(r.bytes().ok_or_else(broken)?),
            tag::NONE => s.serialize_none(),
            tag::SOME => {
                drop(guard);
                s.serialize_some(self)
            }
            tag::SEQ => {
                drop(guard);
                let mut seq = s.serialize_seq(None)?;
                while self.peek().ok_or_else(broken)? != tag::END {
                    seq.serialize_element(self)?;
                }
                self.0.borrow_mut().0.u8();
                seq.end()
            }
            tag::MAP => {
                drop(guard);
                let mut map = s.serialize_map(None)?;
                while self.peek().ok_or_else(broken)? != tag::END {
                    map.serialize_key(self)?;
                    map.serialize_value(self)?;
                }
                self.0.borrow_mut().0.u8();
                map.end()
            }
            // serde_json writes structs and maps alike: `{"name":value,...}`.
            tag::STRUCT => {
                drop(guard);
                let mut map = s.serialize_map(None)?;
                loop {
                    let name = {
                        let mut guard = self.0.borrow_mut();
                        let (r, names) = &mut *guard;
                        match r.name(names).ok_or_else(broken)? {
                            NameRef::End => break,
                            NameRef::Name(name) => name,
                        }
                    };
                    map.serialize_entry(name, self)?;
                }
                map.end()
            }
            // Externally tagged, as serde_json writes enums.
            tag::UNIT_VARIANT => match r.name(names).ok_or_else(broken)? {
                NameRef::Name(name) => s.serialize_str(name),
                NameRef::End => Err(S::Error::custom("a variant without a name")),
            },
            tag::VARIANT => {
                let name = match r.name(names).ok_or_else(broken)? {
                    NameRef::Name(name) => name,
                    NameRef::End => return Err(S::Error::custom("a variant without a name")),
                };
                drop(guard);
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(name, self)?;
                map.end()
            }
            t => match small_int(t) {
                Some(Ok(n)) => s.serialize_u64(n),
                Some(Err(n)) => s.serialize_i64(n),
                None => Err(broken()),
            },
        }
    }
}

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
            Value::Variant(name, None) => s.serialize_str(name),
            Value::Variant(name, Some(payload)) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(name, payload.as_ref())?;
                map.end()
            }
        }
    }
}
