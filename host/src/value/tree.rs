//! Building a [`Value`] tree from a validated state, for embedders who want
//! to walk the state rather than render it.

use replica_encoding::tag;

use super::Value;
use super::reader::{NameRef, Reader, small_int};

/// Reads the value at `r`; `None` when the buffer is broken (never for a
/// validated state). Recursion is bounded by the validated depth.
pub(crate) fn read<'a>(r: &mut Reader<'a>, names: &mut Vec<&'a str>) -> Option<Value> {
    Some(match r.u8()? {
        tag::UNIT => Value::Unit,
        tag::FALSE => Value::Bool(false),
        tag::TRUE => Value::Bool(true),
        tag::SIGNED => Value::I64(r.signed()?),
        tag::UNSIGNED => Value::U64(r.varint()?),
        tag::F32 => Value::F32(f32::from_le_bytes(r.array()?)),
        tag::F64 => Value::F64(f64::from_le_bytes(r.array()?)),
        tag::STRING => Value::String(r.str()?.to_owned()),
        tag::BYTES => Value::Bytes(r.bytes()?.to_vec()),
        tag::NONE => Value::None,
        tag::SOME => Value::Some(Box::new(read(r, names)?)),
        tag::SEQ => {
            let mut items = Vec::new();
            while r.peek()? != tag::END {
                items.push(read(r, names)?);
            }
            r.u8();
            Value::List(items)
        }
        tag::MAP => {
            let mut entries = Vec::new();
            while r.peek()? != tag::END {
                let key = read(r, names)?;
                entries.push((key, read(r, names)?));
            }
            r.u8();
            Value::Map(entries)
        }
        tag::STRUCT => {
            let mut fields = Vec::new();
            while let NameRef::Name(name) = r.name(names)? {
                fields.push((name.to_owned(), read(r, names)?));
            }
            Value::Record(fields)
        }
        tag::UNIT_VARIANT => match r.name(names)? {
            NameRef::Name(name) => Value::Variant(name.to_owned(), None),
            NameRef::End => return None,
        },
        tag::VARIANT => match r.name(names)? {
            NameRef::Name(name) => Value::Variant(name.to_owned(), Some(Box::new(read(r, names)?))),
            NameRef::End => return None,
        },
        t => match small_int(t)? {
            Ok(n) => Value::U64(n),
            Err(n) => Value::I64(n),
        },
    })
}
