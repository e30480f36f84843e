//! Turning a stored row, read column by column, into a [`LogRecord`]: every
//! backend reads loosely and leaves the judgement to this one place.

use bytes::Bytes;

use super::{EntryType, LogEntry, LogRecord, RefusedRow, seq};

/// A stored row whose columns were read one by one: each holds its value,
/// or why it could not be read (e.g. `expected INTEGER, found TEXT`).
pub(crate) struct LooseRow {
    /// The grain type the row was selected by.
    pub grain_type: String,
    /// The grain key the row was selected by.
    pub grain_key: String,
    /// The `sequence` column.
    pub sequence: Result<i64, String>,
    /// The `timestamp_millis` column.
    pub timestamp_millis: Result<i64, String>,
    /// The `source_cluster` column.
    pub source_cluster: Result<String, String>,
    /// The `entry_type` column.
    pub entry_type: Result<i64, String>,
    /// The `payload` column.
    pub payload: Result<Bytes, String>,
}

/// A stored row as a backend reads it, one column at a time and never
/// failing: each answer is the value, or why it cannot be read (`found
/// NULL`, `expected INTEGER, found TEXT`, ...).
pub(crate) trait LooseColumns {
    /// An integer column.
    fn integer(&self, column: &str) -> Result<i64, String>;
    /// A text column.
    fn text(&self, column: &str) -> Result<String, String>;
    /// A binary column.
    fn blob(&self, column: &str) -> Result<Vec<u8>, String>;
}

impl LooseRow {
    /// Orlando's columns of `row`, a row of the grain
    /// `grain_type`/`grain_key`.
    pub(crate) fn read(grain_type: &str, grain_key: &str, row: &impl LooseColumns) -> Self {
        Self {
            grain_type: grain_type.to_owned(),
            grain_key: grain_key.to_owned(),
            sequence: row.integer("sequence"),
            timestamp_millis: row.integer("timestamp_millis"),
            source_cluster: row.text("source_cluster"),
            entry_type: row.integer("entry_type"),
            payload: row.blob("payload").map(Bytes::from),
        }
    }

    /// The row as an entry, or as a refusal naming every column at fault.
    pub(crate) fn interpret(self) -> LogRecord {
        let mut faults = Vec::new();
        let sequence = match self.sequence {
            Ok(stored) => {
                let valid = seq::from_stored(stored);
                if valid.is_none() {
                    faults.push(format!("sequence: {stored} is negative (not a valid u64)"));
                }
                valid
            }
            Err(why) => fault(&mut faults, "sequence", why),
        };
        let entry_type = match self.entry_type {
            Ok(code) => {
                let known = EntryType::from_code(code);
                if known.is_none() {
                    faults.push(format!(
                        "entry_type: unknown value {code} (0 is FullState, 1 is Delta)"
                    ));
                }
                known
            }
            Err(why) => fault(&mut faults, "entry_type", why),
        };
        let timestamp_millis = take(&mut faults, "timestamp_millis", self.timestamp_millis);
        let source_cluster = take(&mut faults, "source_cluster", self.source_cluster);
        let payload = take(&mut faults, "payload", self.payload);

        match (
            sequence,
            entry_type,
            timestamp_millis,
            source_cluster,
            payload,
        ) {
            (
                Some(sequence),
                Some(entry_type),
                Some(timestamp_millis),
                Some(source),
                Some(payload),
            ) if faults.is_empty() => LogRecord::Entry(LogEntry {
                grain_type: self.grain_type,
                grain_key: self.grain_key,
                sequence,
                timestamp_millis,
                source_cluster: source,
                entry_type,
                payload,
            }),
            _ => LogRecord::Refused(RefusedRow {
                grain_type: self.grain_type,
                grain_key: self.grain_key,
                sequence,
                reason: faults.join("; "),
            }),
        }
    }
}

/// The column's value, or `None` with its fault noted.
fn take<T>(faults: &mut Vec<String>, column: &str, value: Result<T, String>) -> Option<T> {
    value.map_or_else(|why| fault(faults, column, why), Some)
}

/// Notes why `column` could not be read.
fn fault<T>(faults: &mut Vec<String>, column: &str, why: String) -> Option<T> {
    faults.push(format!("{column}: {why}"));
    None
}
