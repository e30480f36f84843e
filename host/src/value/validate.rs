//! One pass over an encoded state that decides whether the host keeps it:
//! well-formed (`guest-sdk/encoding/ENCODING.md`), within [`OutputLimits`], and
//! renderable as JSON (map keys JSON can hold) within
//! [`OutputLimits::max_rendered_bytes`]. Works without recursion, so no
//! input can overflow the host's stack.
//!
//! # Why the rendered size is bounded here
//! The encoding interns field and variant names: a name written once can be
//! referred to by a two-byte reference any number of times. A 1 MiB state
//! can therefore render as gigabytes of JSON, and every read of it would
//! allocate them. The pass adds up an upper bound of the JSON size as it
//! goes (each name's escaped length is computed once, when it is defined)
//! and refuses the state as soon as the bound passes the limit, so nothing
//! stored can render larger than the limit.

use replica_encoding::{VERSION, tag};

use replica_encoding::{END_OF_STRUCT, NAME_INDEX_BASE, NEW_NAME};

use super::OutputLimits;
use super::reader::{Reader, small_int};

/// Why an encoded state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The buffer is empty.
    #[error("the state is empty")]
    Empty,
    /// The first byte is not a known encoding version.
    #[error("unknown encoding version {0} (this host reads version {VERSION})")]
    UnknownVersion(u8),
    /// A tag that is not in the encoding.
    #[error("unknown tag 0x{tag:02x} at byte {at}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A varint, length, string or name that is cut off or invalid.
    #[error("malformed {what} at byte {at}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Where it started.
        at: usize,
    },
    /// Bytes after the root value.
    #[error("{0} bytes follow the value")]
    TrailingBytes(usize),
    /// More bytes than the limit.
    #[error("the state is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The buffer's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More values than the limit.
    #[error("the state has more than {0} values")]
    TooManyNodes(usize),
    /// Nested too deeply.
    #[error("the state is nested more than {0} levels deep")]
    TooDeep(usize),
    /// Would render as more JSON than the limit.
    #[error(
        "the state would render as more than {limit} bytes of JSON (it refers to long names or strings many times)"
    )]
    RendersTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A map key JSON cannot hold.
    #[error(
        "map key at byte {at} is {what}; JSON object keys must be strings, numbers, booleans or unit variants"
    )]
    BadKey {
        /// What the key is.
        what: &'static str,
        /// Its offset.
        at: usize,
    },
}

/// A container being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Seq,
    Struct,
    /// A map; `key` says whether a key comes next.
    Map {
        key: bool,
    },
    /// `Some` or a variant's payload: exactly one value; `key` when it sits
    /// in a map key's place.
    One {
        key: bool,
    },
}

/// Checks `buf`; see the module docs.
pub(crate) fn validate(buf: &[u8], limits: &OutputLimits) -> Result<(), StateError> {
    if buf.len() > limits.max_bytes {
        return Err(StateError::TooLarge {
            len: buf.len(),
            limit: limits.max_bytes,
        });
    }
    let mut r = Reader::new(buf);
    match r.u8() {
        None => return Err(StateError::Empty),
        Some(VERSION) => {}
        Some(v) => return Err(StateError::UnknownVersion(v)),
    }
    let max_depth = limits.depth();
    let mut rendered = RenderedSize::new(limits.max_rendered_bytes);
    let mut stack: Vec<Frame> = Vec::with_capacity(8);
    let mut nodes = 0usize;
    let malformed = |what, at| StateError::Malformed { what, at };
    loop {
        // What the enclosing container expects next.
        let at = r.position();
        match stack.last() {
            Some(Frame::Struct) => match rendered
                .name_ref(&mut r)
                .ok_or(malformed("field name", at))?
            {
                None => {
                    stack.pop();
                    if close(&mut stack) {
                        break;
                    }
                    continue;
                }
                Some(name) => {
                    // `"name":` (the field's `,` is counted with its value).
                    rendered.add(1 + name)?;
                }
            },
            Some(Frame::Seq) | Some(Frame::Map { key: true }) if r.peek() == Some(tag::END) => {
                r.u8();
                stack.pop();
                if close(&mut stack) {
                    break;
                }
                continue;
            }
            _ => {}
        }
        // One value.
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(StateError::TooManyNodes(limits.max_nodes));
        }
        if stack.len() >= max_depth {
            return Err(StateError::TooDeep(max_depth));
        }
        let in_key = matches!(
            stack.last(),
            Some(Frame::Map { key: true }) | Some(Frame::One { key: true })
        );
        let at = r.position();
        let t = r.u8().ok_or(malformed("value", at))?;
        let bad_key = |what| StateError::BadKey { what, at };
        // The value's separator (`,` or `:`), and a key's quotes.
        rendered.add(if in_key { 3 } else { 1 })?;
        // Strings first, the commonest value; small integers, a range of
        // tags, last.
        let scalar = match t {
            tag::STRING => {
                let len = r
                    .bytes()
                    .and_then(checked_escaped_len)
                    .ok_or(malformed("string", at))?;
                rendered.add(2 + len)?;
                true
            }
            tag::UNIT if in_key => return Err(bad_key("unit")),
            tag::UNIT | tag::FALSE | tag::TRUE => {
                rendered.add(5)?;
                true
            }
            tag::SIGNED | tag::UNSIGNED => {
                r.varint().ok_or(malformed("integer", at))?;
                rendered.add(20)?;
                true
            }
            tag::F32 => {
                let v = f32::from_le_bytes(r.array().ok_or(malformed("f32", at))?);
                if in_key && !v.is_finite() {
                    return Err(bad_key("a non-finite float"));
                }
                rendered.add(FLOAT_CHARS)?;
                true
            }
            tag::F64 => {
                let v = f64::from_le_bytes(r.array().ok_or(malformed("f64", at))?);
                if in_key && !v.is_finite() {
                    return Err(bad_key("a non-finite float"));
                }
                rendered.add(FLOAT_CHARS)?;
                true
            }
            tag::BYTES if in_key => return Err(bad_key("bytes")),
            tag::BYTES => {
                let bytes = r.bytes().ok_or(malformed("bytes", at))?;
                // `[255,255]`: at most three digits and a comma a byte.
                rendered.add(2 + 4 * bytes.len() as u64)?;
                true
            }
            tag::NONE if in_key => return Err(bad_key("None")),
            tag::NONE => {
                rendered.add(4)?;
                true
            }
            tag::SOME => {
                stack.push(Frame::One { key: in_key });
                false
            }
            tag::SEQ | tag::STRUCT | tag::MAP if in_key => {
                return Err(bad_key(match t {
                    tag::SEQ => "a sequence",
                    tag::STRUCT => "a struct",
                    _ => "a map",
                }));
            }
            tag::SEQ => {
                rendered.add(2)?;
                stack.push(Frame::Seq);
                false
            }
            tag::STRUCT => {
                rendered.add(2)?;
                stack.push(Frame::Struct);
                false
            }
            tag::MAP => {
                rendered.add(2)?;
                stack.push(Frame::Map { key: true });
                false
            }
            tag::UNIT_VARIANT | tag::VARIANT => {
                match rendered.name_ref(&mut r) {
                    // `"name"`, or `{"name":` … `}`.
                    Some(Some(name)) => {
                        rendered.add(name + if t == tag::VARIANT { 3 } else { 0 })?
                    }
                    _ => return Err(malformed("variant name", at)),
                }
                if t == tag::VARIANT {
                    if in_key {
                        return Err(bad_key("a variant with a payload"));
                    }
                    stack.push(Frame::One { key: false });
                    false
                } else {
                    true
                }
            }
            t if small_int(t).is_some() => {
                rendered.add(4)?;
                true
            }
            other => return Err(StateError::UnknownTag { tag: other, at }),
        };
        if scalar && close(&mut stack) {
            break;
        }
    }
    if r.at_end() {
        Ok(())
    } else {
        Err(StateError::TrailingBytes(buf.len() - r.position()))
    }
}

/// The longest text serde_json writes for a float (`-1.7976931348623157e308`
/// is 23 characters).
const FLOAT_CHARS: u64 = 24;

/// An upper bound of the compact JSON a state renders as, added up value by
/// value and checked against the limit at every step.
struct RenderedSize {
    /// The bound so far.
    total: u64,
    /// The most it may reach.
    limit: u64,
    /// The quoted, escaped length of each name, by its index in the
    /// buffer's names (names are defined in index order), so a name
    /// referred to many times is measured once.
    names: Vec<u64>,
}

impl RenderedSize {
    fn new(limit: u64) -> Self {
        Self {
            total: 0,
            limit,
            names: Vec::with_capacity(16),
        }
    }

    /// Adds `bytes`; refuses the state once the bound passes the limit.
    fn add(&mut self, bytes: u64) -> Result<(), StateError> {
        self.total = self.total.saturating_add(bytes);
        if self.total > self.limit {
            Err(StateError::RendersTooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }

    /// Reads a name-ref: `Some(None)` for the end of a struct, otherwise
    /// the quoted, escaped length of the name, new (then measured and
    /// remembered) or defined before; `None` when the name-ref is cut
    /// off, not UTF-8, or points at a name not yet defined.
    fn name_ref(&mut self, r: &mut Reader<'_>) -> Option<Option<u64>> {
        match r.varint()? {
            END_OF_STRUCT => Some(None),
            NEW_NAME => {
                let len = 2 + checked_escaped_len(r.bytes()?)?;
                self.names.push(len);
                Some(Some(len))
            }
            n => {
                let index = usize::try_from(n - NAME_INDEX_BASE).ok()?;
                self.names.get(index).copied().map(Some)
            }
        }
    }
}

/// [`json_escaped_len`] of `bytes`, or `None` when they are not UTF-8.
/// Plain ASCII (nothing to escape), the common case, is recognised eight or
/// sixteen bytes at a time, which proves both in one pass; anything else
/// takes the exact path.
fn checked_escaped_len(bytes: &[u8]) -> Option<u64> {
    if is_plain_ascii(bytes) {
        return Some(bytes.len() as u64);
    }
    std::str::from_utf8(bytes).ok().map(json_escaped_len)
}

/// Whether every byte of `bytes` is ASCII that serde_json writes as it is:
/// none at or above 0x80, none below 0x20, no `"` and no `\\`. Sixteen
/// bytes at a time with SSE2 (part of every x86_64) from sixteen bytes on,
/// eight at a time otherwise.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return sse2::is_plain_ascii(bytes);
    }
    is_plain_ascii_swar(bytes)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// [`super::is_plain_ascii`] for at least sixteen bytes.
    pub(super) fn is_plain_ascii(bytes: &[u8]) -> bool {
        debug_assert!(bytes.len() >= 16);
        let mut special = 0;
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            special |= special_bytes(load(chunk));
        }
        if !chunks.remainder().is_empty() {
            // The last sixteen bytes (some checked twice).
            special |= special_bytes(load(&bytes[bytes.len() - 16..]));
        }
        special == 0
    }

    fn load(chunk: &[u8]) -> __m128i {
        assert!(chunk.len() >= 16);
        // SAFETY: sixteen readable bytes (checked above); an unaligned load.
        unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
    }

    /// A bit set for each byte of `v` at or above 0x80, below 0x20, `"` or
    /// `\\`; zero when there is none.
    fn special_bytes(v: __m128i) -> i32 {
        // SAFETY: SSE2 is part of x86_64's baseline; no memory is touched.
        unsafe {
            // Signed: a byte at or above 0x80 is negative, so below 0x20 too.
            let low_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(low_or_high, _mm_or_si128(quote, backslash)))
        }
    }
}

/// [`is_plain_ascii`], eight bytes at a time in a `u64`.
fn is_plain_ascii_swar(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut special = 0;
    for chunk in &mut chunks {
        special |= special_bytes(u64::from_le_bytes(
            chunk.try_into().expect("chunks of eight bytes"),
        ));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The last eight bytes when there are that many (some checked
        // twice), else the rest padded with a plain byte.
        let mut last = [b' '; 8];
        match bytes.len().checked_sub(8) {
            Some(start) => last.copy_from_slice(&bytes[start..]),
            None => last[..rest.len()].copy_from_slice(rest),
        }
        special |= special_bytes(u64::from_le_bytes(last));
    }
    special == 0
}

/// Not zero when a byte of `w` is at or above 0x80, below 0x20, `"` or
/// `\\`, and zero otherwise (the bit tricks' "has a byte less than n" and
/// "has a zero byte", exact as a yes or no).
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // A byte below `n` (n ≤ 0x80): the lowest one borrows into its top bit.
    let below = |n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    // A byte equal to `b`: a zero byte of `w ^ b…b`.
    let equal = |b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGH
    };
    (w & HIGH) | below(0x20) | equal(b'"') | equal(b'\\')
}

/// How many bytes serde_json writes for `s` between its quotes: `"` and
/// `\\` and the short escapes take two, other control characters six
/// (`\u00XX`), everything else one per byte.
fn json_escaped_len(s: &str) -> u64 {
    let extra: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0C | b'\n' | b'\r' | b'\t' => 1,
            0..0x20 => 5,
            _ => 0,
        })
        .sum();
    s.len() as u64 + extra
}

/// A value just ended: closes the single-value frames it completes and
/// advances a map between key and value. True when the root is complete.
fn close(stack: &mut Vec<Frame>) -> bool {
    loop {
        match stack.last_mut() {
            None => return true,
            Some(Frame::One { .. }) => {
                stack.pop();
            }
            Some(Frame::Map { key }) => {
                *key = !*key;
                return false;
            }
            Some(Frame::Seq | Frame::Struct) => return false,
        }
    }
}
