//! Sharding: which host replicates which grain, when one host cannot hold
//! every grain (`[consumer] shard = "i/n"`).
//!
//! A grain belongs to shard `fnv1a64(grain_type ‖ 0x00 ‖ grain_key) mod n`,
//! where `fnv1a64` is the 64-bit FNV-1a hash (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) over the UTF-8 bytes of the
//! grain type, one zero byte, and the UTF-8 bytes of the grain key. The
//! function is fixed and documented so that a router or a client can compute
//! the owner of a grain by itself.

use std::fmt;
use std::str::FromStr;

/// One shard of `count`: this host replicates the grains whose hash falls in
/// `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This host's shard, `0..count`.
    pub index: u32,
    /// How many shards there are (at least 1).
    pub count: u32,
}

/// 64-bit FNV-1a.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The shard (of `count`) a grain belongs to.
pub fn shard_of(grain_type: &str, grain_key: &str, count: u32) -> u32 {
    let hash = fnv1a64(&[grain_type.as_bytes(), &[0], grain_key.as_bytes()]);
    (hash % u64::from(count.max(1))) as u32
}

impl Shard {
    /// Whether this shard replicates the grain.
    pub fn owns(&self, grain_type: &str, grain_key: &str) -> bool {
        shard_of(grain_type, grain_key, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `"i/n"` with `0 ≤ i < n`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard `{s}` must be \"i/n\" with 0 <= i < n, e.g. \"0/3\"");
        let (index, count) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a64_as_documented() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x85944171f73967e8);
        // The grain's bytes: type, a zero byte, key.
        assert_eq!(
            shard_of("Counter", "k", u32::MAX),
            (fnv1a64(&[b"Counter\0k"]) % u64::from(u32::MAX)) as u32
        );
    }

    #[test]
    fn every_grain_has_exactly_one_owner_and_shards_are_balanced() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut per_shard = [0u32; 3];
        for key in 0..3000 {
            let key = format!("grain-{key}");
            let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns("Counter", &key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            per_shard[owners[0].index as usize] += 1;
        }
        assert!(
            per_shard.iter().all(|&n| (800..1200).contains(&n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn shards_parse_and_bad_ones_are_refused() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert_eq!("1/3".parse::<Shard>().unwrap().to_string(), "1/3");
        for bad in ["3/3", "0/0", "1", "a/b", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
