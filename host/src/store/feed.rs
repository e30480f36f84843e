//! The store's change feed: every grain type's replicas in the order of
//! their last change, so a reader can ask "what changed after position P"
//! without a channel that can overflow and without a copy per reader.
//!
//! A position is the store version of a change. Each grain is filed once,
//! under the version of its last change (an update moves it), so a page
//! after P holds each grain changed since P once, at its newest state, in
//! the order the changes happened. Removals leave a tombstone; only the
//! newest [`TOMBSTONES`] are kept per type, and a position from before a
//! forgotten tombstone (or before the type was removed and added again)
//! must start over: [`FeedPage::Resync`].
//!
//! A [`Cursor`] names a position and the store instance it belongs to
//! (versions start again at 0 in a new process), so a cursor from another
//! process lifetime is refused the same way instead of skipping changes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::Replica;

/// Tombstones of removed grains kept per grain type.
pub(super) const TOMBSTONES: usize = 4096;

/// One grain type's change order.
#[derive(Debug, Default)]
pub(super) struct TypeFeed {
    /// Version of a grain's last change → its key.
    pub(super) by_version: BTreeMap<u64, Arc<str>>,
    /// The newest removals: (version, key), oldest first.
    pub(super) removed: VecDeque<(u64, Arc<str>)>,
    /// Positions at or below this one must resync.
    pub(super) forgotten: u64,
}

impl TypeFeed {
    /// A feed whose positions up to `forgotten` are unknown.
    pub(super) fn since(forgotten: u64) -> Self {
        Self {
            forgotten,
            ..Self::default()
        }
    }

    /// Files `key` under `version`, moving it from `previous`.
    pub(super) fn moved(&mut self, key: &Arc<str>, previous: Option<u64>, version: u64) {
        if let Some(previous) = previous {
            self.by_version.remove(&previous);
        }
        self.by_version.insert(version, Arc::clone(key));
    }

    /// Records the removal of `key`, last changed at `previous`.
    pub(super) fn removed(&mut self, key: Arc<str>, previous: u64, version: u64) {
        self.by_version.remove(&previous);
        if self.removed.len() == TOMBSTONES
            && let Some((dropped, _)) = self.removed.pop_front()
        {
            self.forgotten = dropped;
        }
        self.removed.push_back((version, key));
    }

    /// Up to `limit` changes after `position`, in version order: each
    /// changed key with its version, or a removal.
    pub(super) fn after(&self, position: u64, limit: usize) -> Option<Vec<(u64, FeedKey)>> {
        if position < self.forgotten {
            return None;
        }
        let mut live = self
            .by_version
            .range(position + 1..)
            .map(|(v, k)| (*v, FeedKey::Changed(Arc::clone(k))))
            .peekable();
        let start = self.removed.partition_point(|(v, _)| *v <= position);
        let mut gone = self
            .removed
            .range(start..)
            .map(|(v, k)| (*v, FeedKey::Removed(Arc::clone(k))))
            .peekable();
        let mut page = Vec::new();
        while page.len() < limit {
            let next = match (live.peek(), gone.peek()) {
                (Some((a, _)), Some((b, _))) if b < a => gone.next(),
                (Some(_), _) => live.next(),
                (None, Some(_)) => gone.next(),
                (None, None) => break,
            };
            page.extend(next);
        }
        Some(page)
    }
}

/// A key in a feed page.
#[derive(Debug, Clone)]
pub(super) enum FeedKey {
    /// The grain changed; read its newest state.
    Changed(Arc<str>),
    /// The grain was removed.
    Removed(Arc<str>),
}

/// What a page of a grain type's change feed holds.
#[derive(Debug, Clone)]
pub enum FeedPage {
    /// The changes after the position asked for, oldest first (empty when
    /// nothing changed), and the position to ask from next.
    Changes {
        /// The changes, in the order they happened.
        changes: Vec<FeedChange>,
        /// The position after the last change of the page.
        next: Cursor,
    },
    /// The position is not known to this store (from another process, or
    /// older than the removals it remembers): start again from the
    /// beginning.
    Resync,
}

/// One change in a [`FeedPage`].
#[derive(Debug, Clone)]
pub enum FeedChange {
    /// A grain's replica as it is now.
    Replica {
        /// The replica.
        replica: Replica,
        /// Whether its sequence changed after the position asked for (a
        /// reader that has everything up to that position has not seen
        /// this sequence); `false` when only its status or the plugin
        /// build that decoded it changed.
        new_sequence: bool,
        /// This change's position.
        cursor: Cursor,
    },
    /// A grain was removed.
    Removed {
        /// The removed grain's key.
        grain_key: String,
        /// This change's position.
        cursor: Cursor,
    },
}

/// A position in a store's change feed: the store instance and a version.
/// Written `EPOCH.VERSION` (hexadecimal epoch, decimal version), as the
/// `id` of a grain type's change-stream events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The store instance (random per process).
    pub epoch: u64,
    /// The store version of the change.
    pub version: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.epoch, self.version)
    }
}

/// A text that is not `EPOCH.VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a change-stream cursor is EPOCH.VERSION (16 hex digits, a dot, a decimal)")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, version) = text.trim().split_once('.').ok_or(BadCursor)?;
        if epoch.len() != 16 {
            return Err(BadCursor);
        }
        Ok(Cursor {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| BadCursor)?,
            version: version.parse().map_err(|_| BadCursor)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Arc<str> {
        k.into()
    }

    #[test]
    fn each_key_once_at_its_newest_version_and_removals_in_order() {
        let mut feed = TypeFeed::default();
        feed.moved(&key("a"), None, 1);
        feed.moved(&key("b"), None, 2);
        feed.moved(&key("a"), Some(1), 3);
        feed.removed(key("b"), 2, 4);
        let page = feed.after(0, 10).unwrap();
        let seen: Vec<String> = page
            .iter()
            .map(|(v, k)| match k {
                FeedKey::Changed(k) => format!("{v}:{k}"),
                FeedKey::Removed(k) => format!("{v}:-{k}"),
            })
            .collect();
        assert_eq!(seen, ["3:a", "4:-b"]);
        assert_eq!(feed.after(3, 10).unwrap().len(), 1);
        assert_eq!(feed.after(4, 10).unwrap().len(), 0);
        assert_eq!(feed.after(0, 1).unwrap().len(), 1, "limited");
    }

    #[test]
    fn a_position_before_a_forgotten_tombstone_must_resync() {
        let mut feed = TypeFeed::default();
        for i in 0..=TOMBSTONES as u64 {
            let k = key(&format!("k{i}"));
            feed.moved(&k, None, 2 * i + 1);
            feed.removed(k, 2 * i + 1, 2 * i + 2);
        }
        assert_eq!(feed.forgotten, 2, "the first tombstone (version 2) is gone");
        assert!(feed.after(1, 10).is_none());
        assert!(feed.after(2, 10).is_some());
        assert!(TypeFeed::since(7).after(6, 1).is_none());
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let cursor = Cursor {
            epoch: 0xabc,
            version: 42,
        };
        assert_eq!(cursor.to_string(), "0000000000000abc.42");
        assert_eq!("0000000000000abc.42".parse::<Cursor>(), Ok(cursor));
        for bad in [
            "42",
            "abc.42",
            "0000000000000abc.",
            "000000000000zabc.1",
            "",
        ] {
            assert_eq!(bad.parse::<Cursor>(), Err(BadCursor), "{bad}");
        }
    }
}
