//! A cursor over an encoded state (`guest-sdk/encoding/ENCODING.md`): tags, varints,
//! lengths and names. Every read is bounds-checked and returns `None` past
//! the end, so the validator, the renderer and the tree builder share one
//! way of reading that cannot panic.

use replica_encoding::{NAME_INDEX_BASE, NEW_NAME};

/// A position in an encoded buffer.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Undoes the zigzag mapping of signed integers.
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A small integer held in its tag: `Ok(unsigned)` or `Err(signed)`;
/// `None` when `t` is not one.
pub(crate) fn small_int(t: u8) -> Option<Result<u64, i64>> {
    use replica_encoding::tag::{SMALL_RANGE, SMALL_SIGNED, SMALL_UNSIGNED};
    if (SMALL_UNSIGNED..SMALL_UNSIGNED + SMALL_RANGE).contains(&t) {
        Some(Ok(u64::from(t - SMALL_UNSIGNED)))
    } else if (SMALL_SIGNED..SMALL_SIGNED + SMALL_RANGE).contains(&t) {
        Some(Err(unzigzag(u64::from(t - SMALL_SIGNED))))
    } else {
        None
    }
}

/// What a name-ref resolved to.
pub(crate) enum NameRef<'a> {
    /// The struct ends here.
    End,
    /// A name, new or seen before.
    Name(&'a str),
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte was read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        // One byte, the commonest varint (lengths, name-refs), inline.
        match self.peek() {
            Some(b) if b < 0x80 => {
                self.pos += 1;
                Some(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    /// [`Reader::varint`] of more than one byte (or cut off).
    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A zigzag varint.
    pub(crate) fn signed(&mut self) -> Option<i64> {
        Some(unzigzag(self.varint()?))
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        bytes.try_into().ok()
    }

    /// A varint length and that many bytes.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// A varint length and that many bytes of UTF-8.
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A name-ref, resolved against (and adding to) `names`.
    pub(crate) fn name(&mut self, names: &mut Vec<&'a str>) -> Option<NameRef<'a>> {
        match self.varint()? {
            0 => Some(NameRef::End),
            NEW_NAME => {
                let name = self.str()?;
                names.push(name);
                Some(NameRef::Name(name))
            }
            n => {
                let index = usize::try_from(n - NAME_INDEX_BASE).ok()?;
                names.get(index).copied().map(NameRef::Name)
            }
        }
    }
}
