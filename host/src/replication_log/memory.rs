//! The in-memory log: for tests and for embedders that feed it themselves.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::record::LooseRow;
use super::{
    ChangeCursor, CursorState, GrainHead, HeadChanges, LogEntry, LogError, LogRecord, LogWriter,
    ReplicationLog, ScanPage, scan, seq,
};

/// A row exactly as a table would hold it, sequence and entry type
/// uninterpreted: lets tests store what a well-behaved writer never would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// The grain's type name.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The stored (signed) sequence; negative ones are refused on read.
    pub sequence: i64,
    /// The writer's wall clock (Unix ms).
    pub timestamp_millis: i64,
    /// The cluster that wrote the row.
    pub source_cluster: String,
    /// The stored entry type; only 0 and 1 are known.
    pub entry_type: i64,
    /// The serialized state.
    pub payload: Vec<u8>,
}

/// One stored row of a grain, keyed by its sequence.
#[derive(Debug, Clone)]
struct Stored {
    /// When the row was stored, in the log's change order (never reused).
    stamp: u64,
    timestamp_millis: i64,
    source_cluster: String,
    entry_type: i64,
    /// Shared with every entry read from it.
    payload: Bytes,
}

impl Stored {
    /// The row at `sequence` of the grain `grain_type`/`grain_key`, judged
    /// like a row a SQL backend read.
    fn record(&self, grain_type: &str, grain_key: &str, sequence: i64) -> LogRecord {
        LooseRow {
            grain_type: grain_type.to_owned(),
            grain_key: grain_key.to_owned(),
            sequence: Ok(sequence),
            timestamp_millis: Ok(self.timestamp_millis),
            source_cluster: Ok(self.source_cluster.clone()),
            entry_type: Ok(self.entry_type),
            payload: Ok(self.payload.clone()),
        }
        .interpret()
    }
}

/// Rows by (grain type, grain key), then by stored sequence.
type GrainMap = BTreeMap<(String, String), BTreeMap<i64, Stored>>;

/// The rows and the last change stamp handed out.
#[derive(Debug, Default)]
struct Grains {
    rows: GrainMap,
    stamp: u64,
    /// Change stamp → the row it was given to (grain type, key, stored
    /// sequence), so an incremental listing costs O(new rows).
    by_stamp: BTreeMap<u64, (String, String, i64)>,
}

impl Grains {
    /// Stamps the row about to be stored at (grain, sequence).
    fn stamp_row(&mut self, grain: &(String, String), sequence: i64) -> u64 {
        self.stamp += 1;
        self.by_stamp
            .insert(self.stamp, (grain.0.clone(), grain.1.clone(), sequence));
        self.stamp
    }
}

impl std::ops::Deref for Grains {
    type Target = GrainMap;
    fn deref(&self) -> &GrainMap {
        &self.rows
    }
}

impl std::ops::DerefMut for Grains {
    fn deref_mut(&mut self) -> &mut GrainMap {
        &mut self.rows
    }
}

/// An in-memory [`ReplicationLog`]; behaves like the SQL backends.
#[derive(Debug, Default)]
pub struct MemoryLog {
    grains: Mutex<Grains>,
}

impl MemoryLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a row as given, without checks beyond the primary key: for
    /// tests of rows the host must refuse (unknown entry type, negative
    /// sequence). A row with the same key is a [`LogError::Backend`].
    pub fn insert_raw(&self, row: RawRow) -> Result<(), LogError> {
        let mut grains = self.lock();
        let grain = (row.grain_type.clone(), row.grain_key.clone());
        if grains
            .get(&grain)
            .is_some_and(|rows| rows.contains_key(&row.sequence))
        {
            return Err(LogError::backend(format!(
                "a row {}/{}/{} already exists",
                row.grain_type, row.grain_key, row.sequence
            )));
        }
        let stamp = grains.stamp_row(&grain, row.sequence);
        grains.entry(grain).or_default().insert(
            row.sequence,
            Stored {
                stamp,
                timestamp_millis: row.timestamp_millis,
                source_cluster: row.source_cluster,
                entry_type: row.entry_type,
                payload: Bytes::from(row.payload),
            },
        );
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Grains> {
        self.grains.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The newest valid sequence among a grain's rows, 0 when none.
fn latest(rows: &BTreeMap<i64, Stored>) -> u64 {
    rows.range(0..)
        .next_back()
        .and_then(|(s, _)| seq::from_stored(*s))
        .unwrap_or(0)
}

fn key(grain_type: &str, grain_key: &str) -> (String, String) {
    (grain_type.to_owned(), grain_key.to_owned())
}

/// Every grain of `grain_type` that has a valid sequence, with its newest.
fn heads(grains: &GrainMap, grain_type: &str) -> Vec<GrainHead> {
    let start = (Bound::Included(key(grain_type, "")), Bound::Unbounded);
    grains
        .range(start)
        .take_while(|((t, _), _)| t == grain_type)
        .filter(|(_, rows)| rows.range(0..).next().is_some())
        .map(|((_, grain_key), rows)| GrainHead {
            grain_key: grain_key.clone(),
            latest_sequence: latest(rows),
        })
        .collect()
}

#[async_trait]
impl ReplicationLog for MemoryLog {
    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let grains = self.lock();
        let Some(rows) = grains.get(&key(grain_type, grain_key)) else {
            return Ok(Vec::new());
        };
        let above = (Bound::Excluded(seq::after_bound(after)), Bound::Unbounded);
        let records = rows
            .range(above)
            .chain(rows.range(..0))
            .take(limit)
            .map(|(sequence, row)| row.record(grain_type, grain_key, *sequence))
            .collect();
        Ok(records)
    }

    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError> {
        Ok(self
            .lock()
            .get(&key(grain_type, grain_key))
            .map_or(0, latest))
    }

    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        Ok(heads(&self.lock(), grain_type))
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        let since = match cursor {
            Some(ChangeCursor(CursorState::Stamp(stamp))) => Some(*stamp),
            _ => None,
        };
        let grains = self.lock();
        let heads = match since {
            None => heads(&grains, grain_type),
            Some(since) => {
                // The grains with a valid-sequence row stamped after `since`.
                let changed: std::collections::BTreeSet<&str> = grains
                    .by_stamp
                    .range(since.saturating_add(1)..)
                    .filter(|(_, (t, _, sequence))| t == grain_type && *sequence >= 0)
                    .map(|(_, (_, grain_key, _))| grain_key.as_str())
                    .collect();
                changed
                    .into_iter()
                    .filter_map(|grain_key| {
                        let rows = grains.get(&key(grain_type, grain_key))?;
                        rows.range(0..).next()?;
                        Some(GrainHead {
                            grain_key: grain_key.to_owned(),
                            latest_sequence: latest(rows),
                        })
                    })
                    .collect()
            }
        };
        Ok(HeadChanges {
            heads,
            complete: since.is_none(),
            cursor: Some(ChangeCursor(CursorState::Stamp(grains.stamp))),
        })
    }

    async fn change_cursor(&self, _grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        Ok(Some(ChangeCursor(CursorState::Stamp(self.lock().stamp))))
    }

    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        let mut types: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|((t, _), _)| t.clone())
            .collect();
        types.dedup();
        Ok(types)
    }

    async fn ping(&self) -> Result<(), LogError> {
        Ok(())
    }

    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        let max_rows = max_rows.max(1);
        let grains = self.lock();
        let start = match after {
            Some(key) => Bound::Excluded((grain_type.to_owned(), key.to_owned())),
            None => Bound::Included((grain_type.to_owned(), String::new())),
        };
        // Index order: (grain key, stored sequence), as the SQL backends scan.
        let rows: Vec<(String, LogRecord)> = grains
            .range((start, Bound::Unbounded))
            .take_while(|((t, _), _)| t == grain_type)
            .flat_map(|((_, grain_key), rows)| {
                rows.iter().map(move |(sequence, row)| {
                    (
                        grain_key.clone(),
                        row.record(grain_type, grain_key, *sequence),
                    )
                })
            })
            // One row more than a page: whether the last grain may go on.
            .take(max_rows.saturating_add(1))
            .collect();
        let full = rows.len() > max_rows;
        Ok(Some(scan::group(rows, full)))
    }

    async fn full_state_heads(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        let grains = self.lock();
        let start = match after {
            Some(key) => Bound::Excluded((grain_type.to_owned(), key.to_owned())),
            None => Bound::Included((grain_type.to_owned(), String::new())),
        };
        Ok(Some(
            grains
                .range((start, Bound::Unbounded))
                .take_while(|((t, _), _)| t == grain_type)
                .filter_map(|((_, grain_key), rows)| full_state_head(grain_key, rows))
                .take(limit.max(1))
                .collect(),
        ))
    }

    async fn heads_snapshot(
        &self,
        only: Option<&str>,
    ) -> Result<Option<super::HeadsSnapshot>, LogError> {
        // One lock: one instant of the log.
        let grains = self.lock();
        let mut snapshot = super::HeadsSnapshot::default();
        for ((grain_type, grain_key), rows) in grains.iter() {
            if only.is_some_and(|only| only != grain_type) {
                continue;
            }
            if snapshot
                .grain_types
                .last()
                .is_none_or(|(t, _)| t != grain_type)
            {
                snapshot.grain_types.push((grain_type.clone(), Vec::new()));
            }
            if let Some(head) = full_state_head(grain_key, rows) {
                snapshot
                    .grain_types
                    .last_mut()
                    .expect("pushed")
                    .1
                    .push(head);
            }
        }
        snapshot.grain_types.retain(|(_, heads)| !heads.is_empty());
        Ok(Some(snapshot))
    }
}

#[async_trait]
impl LogWriter for MemoryLog {
    async fn append(&self, entry: &LogEntry) -> Result<u64, LogError> {
        let stored = seq::to_stored(entry.sequence)?;
        let mut grains = self.lock();
        let grain = key(&entry.grain_type, &entry.grain_key);
        let newest = grains.get(&grain).map_or(0, latest);
        if entry.sequence <= newest {
            return Err(LogError::SequenceConflict {
                grain_type: entry.grain_type.clone(),
                grain_key: entry.grain_key.clone(),
                sequence: entry.sequence,
                latest: newest,
            });
        }
        let stamp = grains.stamp_row(&grain, stored);
        grains.entry(grain).or_default().insert(
            stored,
            Stored {
                stamp,
                timestamp_millis: entry.timestamp_millis,
                source_cluster: entry.source_cluster.clone(),
                entry_type: entry.entry_type.code(),
                payload: entry.payload.clone(),
            },
        );
        Ok(entry.sequence)
    }

    async fn truncate(
        &self,
        grain_type: &str,
        grain_key: &str,
        before: u64,
    ) -> Result<u64, LogError> {
        let Some(last) = seq::last_below(before) else {
            return Ok(0);
        };
        let mut grains = self.lock();
        let grain = key(grain_type, grain_key);
        let Some(rows) = grains.get_mut(&grain) else {
            return Ok(0);
        };
        let doomed: Vec<i64> = rows.range(0..=last).map(|(s, _)| *s).collect();
        let mut stamps = Vec::with_capacity(doomed.len());
        for sequence in &doomed {
            stamps.extend(rows.remove(sequence).map(|row| row.stamp));
        }
        if rows.is_empty() {
            grains.remove(&grain);
        }
        for stamp in stamps {
            grains.by_stamp.remove(&stamp);
        }
        Ok(doomed.len() as u64)
    }
}

/// A grain's newest valid FullState sequence, if it has one.
fn full_state_head(grain_key: &str, rows: &BTreeMap<i64, Stored>) -> Option<GrainHead> {
    let (sequence, _) = rows
        .range(0..)
        .rev()
        .find(|(_, row)| row.entry_type == super::EntryType::FullState.code())?;
    Some(GrainHead {
        grain_key: grain_key.to_owned(),
        latest_sequence: u64::try_from(*sequence).ok()?,
    })
}
