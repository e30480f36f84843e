//! Which slot of the scheduler's table holds a grain key.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// A grain key's slot number, found by the key. The keys live in the
/// table's slots alone: an entry here is the slot's number and its key's
/// hash (16 bytes, where a second `Arc<str>` and the number took 24), and
/// growing the index rehashes from the stored hashes instead of reading
/// every key again (at a million grains, a million cache misses per
/// doubling).
#[derive(Default)]
pub(super) struct KeyIndex {
    /// `(hash of the key, slot number)`.
    entries: HashTable<(u64, u32)>,
    /// Seeded per process, like std's SipHash, but several times faster on
    /// short keys.
    hasher: foldhash::fast::RandomState,
}

impl KeyIndex {
    /// The slot of `key`; `key_at` gives the key a slot holds.
    pub(super) fn get<'a>(&self, key: &str, key_at: impl Fn(u32) -> &'a str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.entries
            .find(hash, |&(h, at)| h == hash && key_at(at) == key)
            .map(|&(_, at)| at)
    }

    /// Files slot `at` under `key`, which no slot holds yet.
    pub(super) fn insert(&mut self, key: &str, at: u32) {
        let hash = self.hasher.hash_one(key);
        self.entries.insert_unique(hash, (hash, at), |&(h, _)| h);
    }

    /// Room for `additional` more keys without growing.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional, |&(h, _)| h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_filed_key_and_nothing_else_across_growth() {
        let keys: Vec<String> = (0..10_000).map(|n| format!("grain-{n}")).collect();
        let mut index = KeyIndex::default();
        for (at, key) in keys.iter().enumerate() {
            index.insert(key, at as u32);
        }
        let key_at = |at: u32| keys[at as usize].as_str();
        for (at, key) in keys.iter().enumerate() {
            assert_eq!(index.get(key, key_at), Some(at as u32));
        }
        assert_eq!(index.get("grain-10000", key_at), None);
        assert_eq!(index.get("", key_at), None);
    }
}
