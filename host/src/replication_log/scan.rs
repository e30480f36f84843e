//! The bulk catch-up scan: a grain type's rows in key order, a page at a
//! time, grouped per grain, so a cold start reads the log in a few ordered
//! range scans instead of one query per grain.
//!
//! Each page is one query over the primary key `(grain_type, grain_key,
//! sequence)`, in index order, after the last grain of the previous page and
//! limited in rows. A grain whose rows the page holds completely comes with
//! them, ordered exactly as [`ReplicationLog::read_from`] would return them
//! (valid sequences ascending, then rows with an unusable sequence); a grain
//! cut by the page limit comes without rows, and the consumer reads it by
//! itself.
//!
//! [`ReplicationLog::read_from`]: super::ReplicationLog::read_from

use super::LogRecord;

/// One grain of a [`ScanPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedGrain {
    /// The grain's key.
    pub grain_key: String,
    /// The newest valid sequence among the rows seen (0 when none was
    /// valid, or when `complete` is false and none was seen).
    pub head: u64,
    /// Every row of the grain in [`super::ReplicationLog::read_from`] order,
    /// when `complete`; empty otherwise.
    pub records: Vec<LogRecord>,
    /// Whether `records` holds every row of the grain.
    pub complete: bool,
}

/// One page of [`super::ReplicationLog::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Grains in key order.
    pub grains: Vec<ScannedGrain>,
    /// The key to pass as `after` for the next page; `None` at the end.
    pub next_after: Option<String>,
}

/// Rows per page the consumer asks for.
pub const DEFAULT_SCAN_ROWS: usize = 8192;

/// Whether a record's sequence is usable: read_from puts the others last.
fn unusable(record: &LogRecord) -> bool {
    match record {
        LogRecord::Entry(_) => false,
        LogRecord::Refused(row) => row.sequence.is_none(),
    }
}

fn valid_sequence(record: &LogRecord) -> Option<u64> {
    match record {
        LogRecord::Entry(entry) => Some(entry.sequence),
        LogRecord::Refused(row) => row.sequence,
    }
}

/// The page for the rows a backend's scan query returned (asked for
/// `max_rows + 1`), each turned into its grain key and record by `record`.
pub(crate) fn page<R>(
    rows: &[R],
    max_rows: usize,
    record: impl Fn(&R) -> (String, LogRecord),
) -> ScanPage {
    let full = rows.len() > max_rows;
    group(rows.iter().map(record).collect(), full)
}

/// Groups one page's rows (in `(grain_key, sequence)` index order) into
/// grains. `full` says more rows follow (the query asks for one row more
/// than a page): then the last grain may be cut, and is left to the next
/// page, unless it is the page's only grain, which then comes back
/// incomplete.
pub(crate) fn group(rows: Vec<(String, LogRecord)>, full: bool) -> ScanPage {
    let mut grains: Vec<ScannedGrain> = Vec::new();
    for (grain_key, record) in rows {
        match grains.last_mut() {
            Some(last) if last.grain_key == grain_key => last.records.push(record),
            _ => grains.push(ScannedGrain {
                grain_key,
                head: 0,
                records: vec![record],
                complete: true,
            }),
        }
    }
    let next_after = if !full {
        None
    } else if grains.len() > 1 {
        grains.pop();
        grains.last().map(|g| g.grain_key.clone())
    } else if let Some(only) = grains.last_mut() {
        only.complete = false;
        Some(only.grain_key.clone())
    } else {
        None
    };
    for grain in &mut grains {
        grain.head = grain
            .records
            .iter()
            .filter_map(valid_sequence)
            .max()
            .unwrap_or(0);
        if grain.complete {
            // Stable: rows with an unusable sequence keep their index order.
            grain.records.sort_by_key(unusable);
        } else {
            grain.records = Vec::new();
        }
    }
    // Grains without a valid sequence are not grains to the listing either.
    grains.retain(|g| !g.complete || g.records.iter().any(|r| valid_sequence(r).is_some()));
    ScanPage { grains, next_after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication_log::{EntryType, LogEntry, RefusedRow};

    fn entry(key: &str, sequence: u64) -> (String, LogRecord) {
        (
            key.to_owned(),
            LogRecord::Entry(LogEntry {
                grain_type: "T".into(),
                grain_key: key.into(),
                sequence,
                timestamp_millis: 0,
                source_cluster: "c".into(),
                entry_type: EntryType::FullState,
                payload: bytes::Bytes::new(),
            }),
        )
    }

    fn refused(key: &str, sequence: Option<u64>) -> (String, LogRecord) {
        (
            key.to_owned(),
            LogRecord::Refused(RefusedRow {
                grain_type: "T".into(),
                grain_key: key.into(),
                sequence,
                reason: "x".into(),
            }),
        )
    }

    fn sequences(grain: &ScannedGrain) -> Vec<Option<u64>> {
        grain.records.iter().map(valid_sequence).collect()
    }

    #[test]
    fn a_short_page_is_the_last_and_every_grain_is_complete() {
        let page = group(vec![entry("a", 1), entry("a", 2), entry("b", 5)], false);
        assert_eq!(page.next_after, None);
        assert_eq!(page.grains.len(), 2);
        assert_eq!(page.grains[0].head, 2);
        assert_eq!(sequences(&page.grains[0]), [Some(1), Some(2)]);
        assert!(page.grains.iter().all(|g| g.complete));
    }

    #[test]
    fn a_full_page_leaves_its_last_grain_to_the_next() {
        let page = group(vec![entry("a", 1), entry("b", 1), entry("b", 2)], true);
        assert_eq!(page.grains.len(), 1);
        assert_eq!(page.grains[0].grain_key, "a");
        assert_eq!(page.next_after.as_deref(), Some("a"));
    }

    #[test]
    fn a_grain_larger_than_a_page_comes_back_incomplete() {
        let page = group(vec![entry("a", 1), entry("a", 2)], true);
        assert_eq!(page.grains.len(), 1);
        assert!(!page.grains[0].complete);
        assert!(page.grains[0].records.is_empty());
        assert_eq!(page.next_after.as_deref(), Some("a"));
    }

    #[test]
    fn unusable_sequences_sort_last_like_read_from() {
        // Index order puts negative sequences first.
        let page = group(
            vec![refused("a", None), entry("a", 1), refused("a", Some(2))],
            false,
        );
        assert_eq!(sequences(&page.grains[0]), [Some(1), Some(2), None]);
        assert_eq!(page.grains[0].head, 2);
    }

    #[test]
    fn grains_without_a_valid_sequence_are_left_out() {
        let page = group(vec![refused("a", None), entry("b", 3)], false);
        assert_eq!(page.grains.len(), 1);
        assert_eq!(page.grains[0].grain_key, "b");
    }
}
