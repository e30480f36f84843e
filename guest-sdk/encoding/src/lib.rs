//! # replica-encoding: the replica value encoding
//!
//! Writes any `T: Serialize` in the replica value encoding (version 1,
//! specified in `ENCODING.md` beside this crate): the one buffer a
//! replica-host plugin's `decode` returns to the host. Plugins use it
//! through the `replica-guest` SDK (`replica_guest::encoding`); the host
//! depends on this crate alone to read what plugins write.
//!
//! The writer follows serde's data model call by call, straight into a
//! `Vec<u8>`: no intermediate tree, one allocation that grows as needed.
//! Struct field and variant names are interned per buffer, so a list of a
//! thousand structs writes each field name once.

use serde::ser::{self, Serialize};

/// The encoding's version, the first byte of every buffer.
pub const VERSION: u8 = 1;

/// The one-byte tags that start every value (see `ENCODING.md`).
#[allow(missing_docs)]
pub mod tag {
    pub const UNIT: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const SIGNED: u8 = 0x03;
    pub const UNSIGNED: u8 = 0x04;
    pub const F32: u8 = 0x05;
    pub const F64: u8 = 0x06;
    pub const STRING: u8 = 0x07;
    pub const BYTES: u8 = 0x08;
    pub const NONE: u8 = 0x09;
    pub const SOME: u8 = 0x0A;
    pub const SEQ: u8 = 0x0B;
    pub const STRUCT: u8 = 0x0C;
    pub const MAP: u8 = 0x0D;
    pub const UNIT_VARIANT: u8 = 0x0E;
    pub const VARIANT: u8 = 0x0F;
    /// Ends a seq or a map.
    pub const END: u8 = 0xFF;
    /// `SMALL_UNSIGNED + n` is the unsigned integer `n`, for `n` below 64.
    pub const SMALL_UNSIGNED: u8 = 0x40;
    /// `SMALL_SIGNED + zigzag(n)` is the signed integer `n`, for `n` in −32…31.
    pub const SMALL_SIGNED: u8 = 0x80;
    /// How many values each small-integer range holds.
    pub const SMALL_RANGE: u8 = 64;
}

/// The name-ref that ends a struct.
pub const END_OF_STRUCT: u64 = 0;
/// The name-ref that announces a new name (its length and bytes follow).
pub const NEW_NAME: u64 = 1;
/// Added to a name's index to make its name-ref.
pub const NAME_INDEX_BASE: u64 = 2;

/// Why a value could not be encoded.
#[derive(Debug)]
pub struct EncodeError(String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// Encodes `value` into a new buffer.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    to_bytes_with_capacity(value, 64)
}

/// Encodes `value` into a new buffer that starts with `capacity` bytes, so
/// that a caller who knows roughly how big the state is (the payload's size,
/// say) spares the buffer its regrowth.
pub fn to_bytes_with_capacity<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, EncodeError> {
    let mut writer = Writer {
        buf: Vec::with_capacity(capacity.max(16)),
        names: Names::default(),
    };
    writer.buf.push(VERSION);
    value.serialize(&mut writer)?;
    Ok(writer.buf)
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn write_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Zigzag-maps a signed integer so that small magnitudes get short varints.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Names already written to this buffer. Serde hands names over as
/// `&'static str`, so a name is recognised by its address and length; the
/// fields of a struct come in declaration order, so the name after the last
/// one found is tried first.
#[derive(Default)]
struct Names {
    seen: Vec<(usize, usize)>,
    next: usize,
}

impl Names {
    /// The index of `name`, if it was written before.
    fn find(&mut self, name: &'static str) -> Option<usize> {
        let key = (name.as_ptr() as usize, name.len());
        let found = if self.seen.get(self.next) == Some(&key) {
            Some(self.next)
        } else {
            self.seen.iter().position(|k| *k == key)
        };
        if let Some(i) = found {
            self.next = i + 1;
        }
        found
    }

    fn add(&mut self, name: &'static str) {
        self.seen.push((name.as_ptr() as usize, name.len()));
        self.next = self.seen.len();
    }
}

struct Writer {
    buf: Vec<u8>,
    names: Names,
}

impl Writer {
    fn tag(&mut self, tag: u8) {
        self.buf.push(tag);
    }

    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        self.buf.push(tag);
        write_varint(&mut self.buf, bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    fn name(&mut self, name: &'static str) {
        match self.names.find(name) {
            Some(index) => write_varint(&mut self.buf, index as u64 + NAME_INDEX_BASE),
            None => {
                self.names.add(name);
                write_varint(&mut self.buf, NEW_NAME);
                write_varint(&mut self.buf, name.len() as u64);
                self.buf.extend_from_slice(name.as_bytes());
            }
        }
    }
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.tag(if v { tag::TRUE } else { tag::FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        let z = zigzag(v);
        if z < u64::from(tag::SMALL_RANGE) {
            self.tag(tag::SMALL_SIGNED + z as u8);
        } else {
            self.tag(tag::SIGNED);
            write_varint(&mut self.buf, z);
        }
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => Err(EncodeError(format!(
                "i128 value {v} does not fit in 64 bits"
            ))),
        }
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        if v < u64::from(tag::SMALL_RANGE) {
            self.tag(tag::SMALL_UNSIGNED + v as u8);
        } else {
            self.tag(tag::UNSIGNED);
            write_varint(&mut self.buf, v);
        }
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(EncodeError(format!(
                "u128 value {v} does not fit in 64 bits"
            ))),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.tag(tag::F32);
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.tag(tag::F64);
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.bytes(tag::STRING, v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.bytes(tag::STRING, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.bytes(tag::BYTES, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.tag(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.tag(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.tag(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.tag(tag::UNIT_VARIANT);
        self.name(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        // Transparent, as in serde_json.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.tag(tag::VARIANT);
        self.name(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, None, tag::SEQ))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, None, tag::SEQ))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, None, tag::SEQ))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, Some(variant), tag::SEQ))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, None, tag::MAP))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, None, tag::STRUCT))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self, Some(variant), tag::STRUCT))
    }
}

/// A seq, map or struct being written; `end` closes it.
#[doc(hidden)]
pub struct Compound<'a> {
    writer: &'a mut Writer,
}

impl<'a> Compound<'a> {
    fn open(writer: &'a mut Writer, variant: Option<&'static str>, kind: u8) -> Self {
        if let Some(name) = variant {
            writer.tag(tag::VARIANT);
            writer.name(name);
        }
        writer.tag(kind);
        Compound { writer }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.writer)
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.writer.name(name);
        value.serialize(&mut *self.writer)
    }

    fn close_seq(self) -> Result<(), EncodeError> {
        self.writer.tag(tag::END);
        Ok(())
    }

    fn close_struct(self) -> Result<(), EncodeError> {
        write_varint(&mut self.writer.buf, END_OF_STRUCT);
        Ok(())
    }
}

/// The seq-like serde traits: elements one after another, then `END`.
macro_rules! seq_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.element(value)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.close_seq()
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// The struct-like serde traits: named fields, then the end of the struct.
macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.close_struct()
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Counter {
        count: i64,
    }

    #[test]
    fn the_spec_example_is_byte_exact() {
        let bytes = to_bytes(&Counter { count: 5 }).unwrap();
        assert_eq!(
            bytes,
            [1, 0x0C, 1, 5, b'c', b'o', b'u', b'n', b't', 0x8A, 0]
        );
        let big = to_bytes(&Counter { count: -300 }).unwrap();
        assert_eq!(big[9..], [0x03, 0xD7, 0x04, 0]);
    }

    #[test]
    fn names_are_written_once_per_buffer() {
        let bytes = to_bytes(&[Counter { count: 1 }, Counter { count: -1 }]).unwrap();
        assert_eq!(
            bytes,
            [
                1, 0x0B, 0x0C, 1, 5, b'c', b'o', b'u', b'n', b't', 0x82, 0, 0x0C, 2, 0x81, 0, 0xFF
            ]
        );
    }

    #[test]
    fn varints_and_zigzag() {
        let mut buf = Vec::new();
        write_varint(&mut buf, 300);
        assert_eq!(buf, [0xAC, 0x02]);
        buf.clear();
        write_varint(&mut buf, u64::MAX);
        assert_eq!(buf.len(), 10);
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn refuses_128_bit_overflow() {
        assert!(to_bytes(&u128::MAX).is_err());
        assert_eq!(to_bytes(&5u128).unwrap(), [1, tag::SMALL_UNSIGNED + 5]);
        assert_eq!(to_bytes(&-1i128).unwrap(), [1, tag::SMALL_SIGNED + 1]);
        assert_eq!(to_bytes(&64u64).unwrap(), [1, tag::UNSIGNED, 64]);
        assert_eq!(to_bytes(&-33i64).unwrap(), [1, tag::SIGNED, 65]);
    }
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
