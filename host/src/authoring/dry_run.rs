//! A dry run of a candidate plugin against a real replication log: decode
//! the newest FullState of each grain of a type, as a swap to that plugin
//! would, and report what decodes, what fails (grouped by error) and, with
//! another plugin to compare, which states would change.
//!
//! Strictly read-only: it reads through a log opened with
//! [`crate::replication_log::open`], which never creates or writes, and
//! calls only the reading methods ([`ReplicationLog::scan`],
//! [`ReplicationLog::read_from`], [`ReplicationLog::grain_heads`]).
//! Deltas are never given to a plugin: a grain whose newest row is a Delta
//! is decoded from its newest FullState before it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json_diff::{self, Difference};
use crate::decode::CallErrorKind;
use crate::plugin::{LoadedPlugin, SnapshotRef};
use crate::replication_log::{
    DEFAULT_SCAN_ROWS, EntryType, LogEntry, LogError, LogRecord, ReplicationLog,
};

/// Example keys kept per group of grains.
pub const MAX_EXAMPLES: usize = 3;
/// Rows per `read_from` call for a grain read by itself.
const READ_ROWS: usize = 1000;

/// A dry run's findings.
#[derive(Debug, Default)]
pub struct DryRunReport {
    /// The grain type read.
    pub grain_type: String,
    /// Grains with a FullState, whose newest FullState was decoded.
    pub grains: u64,
    /// Of those, how many decoded with the candidate.
    pub decoded: u64,
    /// Candidate failures, by error kind label (`malformed_payload`) and message.
    pub failures: BTreeMap<(&'static str, String), Group>,
    /// Grains with no FullState at all (only Deltas or unreadable rows).
    pub without_full_state: Group,
    /// The comparison with the other plugin, when one was given.
    pub compare: Option<Comparison>,
}

/// A count of grains and a few of their keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Group {
    /// How many grains.
    pub count: u64,
    /// Up to [`MAX_EXAMPLES`] of their keys, in key order.
    pub examples: Vec<String>,
}

impl Group {
    fn add(&mut self, key: &str) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(key.to_owned());
        }
    }
}

/// How the candidate's states compare with another plugin's.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The other plugin's file name.
    pub other: String,
    /// Both decode to the same state.
    pub same: u64,
    /// Both decode, to different states: the count, and up to
    /// [`MAX_EXAMPLES`] keys with their differences (other → candidate).
    pub differ: u64,
    /// Examples of differing grains.
    pub differ_examples: Vec<(String, Vec<Difference>)>,
    /// Only the candidate decodes.
    pub only_candidate: Group,
    /// Only the other plugin decodes: what a swap would break.
    pub only_other: Group,
    /// Neither decodes.
    pub neither: u64,
}

impl DryRunReport {
    /// Candidate failures, summed.
    pub fn failed(&self) -> u64 {
        self.failures.values().map(|g| g.count).sum()
    }

    /// The report, one finding a line.
    pub fn lines(&self, candidate: &str) -> Vec<String> {
        let mut out = vec![format!(
            "{} grains of type {} with a FullState: {} decode, {} fail",
            self.grains,
            self.grain_type,
            self.decoded,
            self.failed()
        )];
        if self.without_full_state.count > 0 {
            out.push(format!(
                "{} grains without any FullState, skipped (e.g. {})",
                self.without_full_state.count,
                self.without_full_state.examples.join(", ")
            ));
        }
        for ((kind, message), group) in &self.failures {
            out.push(format!(
                "  {} fail with {kind}: {message} (e.g. {})",
                group.count,
                group.examples.join(", ")
            ));
        }
        if let Some(c) = &self.compare {
            out.push(format!(
                "compared with {}: {} same state, {} different state, {} decode only with {candidate}, {} decode only with {}, {} with neither",
                c.other,
                c.same,
                c.differ,
                c.only_candidate.count,
                c.only_other.count,
                c.other,
                c.neither
            ));
            for (key, differences) in &c.differ_examples {
                out.push(format!("  {key}:"));
                for d in differences.iter().take(MAX_DIFF_LINES) {
                    out.push(format!("    {}", d.line(&c.other, candidate)));
                }
                if differences.len() > MAX_DIFF_LINES {
                    out.push(format!(
                        "    … and {} more differences",
                        differences.len() - MAX_DIFF_LINES
                    ));
                }
            }
            if c.only_other.count > 0 {
                out.push(format!(
                    "  decode only with {}: {}",
                    c.other,
                    c.only_other.examples.join(", ")
                ));
            }
        }
        out
    }
}

/// Most differences shown per example grain.
const MAX_DIFF_LINES: usize = 10;

/// Decodes the newest FullState of up to `sample` grains of `grain_type`
/// (all when `None`), in key order, with `candidate` and, when given,
/// `other`. Fails only when the log does.
pub async fn dry_run(
    log: &dyn ReplicationLog,
    grain_type: &str,
    sample: Option<u64>,
    candidate: &LoadedPlugin,
    other: Option<&LoadedPlugin>,
) -> Result<DryRunReport, LogError> {
    let mut report = DryRunReport {
        grain_type: grain_type.to_owned(),
        compare: other.map(|o| Comparison {
            other: o.name().to_owned(),
            ..Comparison::default()
        }),
        ..DryRunReport::default()
    };
    let limit = sample.unwrap_or(u64::MAX);
    let mut seen = 0u64;
    let mut visit = |key: &str, newest: Option<LogEntry>| {
        seen += 1;
        match newest {
            Some(entry) => report.record(&entry, candidate, other),
            None => report.without_full_state.add(key),
        }
        seen < limit
    };

    let mut after: Option<String> = None;
    loop {
        let Some(page) = log
            .scan(grain_type, after.as_deref(), DEFAULT_SCAN_ROWS)
            .await?
        else {
            // No bulk scan: list the grains, then read each.
            let mut heads = log.grain_heads(grain_type).await?;
            heads.sort_by(|a, b| a.grain_key.cmp(&b.grain_key));
            for head in heads {
                let newest = read_newest_full_state(log, grain_type, &head.grain_key).await?;
                if !visit(&head.grain_key, newest) {
                    break;
                }
            }
            return Ok(report);
        };
        for grain in page.grains {
            let newest = if grain.complete {
                newest_full_state(grain.records)
            } else {
                read_newest_full_state(log, grain_type, &grain.grain_key).await?
            };
            if !visit(&grain.grain_key, newest) {
                return Ok(report);
            }
        }
        match page.next_after {
            Some(key) => after = Some(key),
            None => return Ok(report),
        }
    }
}

impl DryRunReport {
    /// Decodes one grain's newest FullState and counts the outcome.
    fn record(&mut self, entry: &LogEntry, candidate: &LoadedPlugin, other: Option<&LoadedPlugin>) {
        self.grains += 1;
        let key = &entry.grain_key;
        let mine = decode(candidate, entry);
        match &mine {
            Ok(_) => self.decoded += 1,
            Err((kind, message)) => self
                .failures
                .entry((kind.as_str(), message.clone()))
                .or_default()
                .add(key),
        }
        let (Some(other), Some(c)) = (other, self.compare.as_mut()) else {
            return;
        };
        match (mine, decode(other, entry)) {
            (Ok(new), Ok(old)) => {
                let differences = json_diff::diff(&old, &new);
                if differences.is_empty() {
                    c.same += 1;
                } else {
                    c.differ += 1;
                    if c.differ_examples.len() < MAX_EXAMPLES {
                        c.differ_examples.push((key.clone(), differences));
                    }
                }
            }
            (Ok(_), Err(_)) => c.only_candidate.add(key),
            (Err(_), Ok(_)) => c.only_other.add(key),
            (Err(_), Err(_)) => c.neither += 1,
        }
    }
}

/// The state as JSON, or the error's kind and message.
fn decode(plugin: &LoadedPlugin, entry: &LogEntry) -> Result<Value, (CallErrorKind, String)> {
    let state = plugin
        .decode(SnapshotRef {
            grain_type: &entry.grain_type,
            grain_key: &entry.grain_key,
            sequence: entry.sequence,
            timestamp_millis: entry.timestamp_millis,
            source_cluster: &entry.source_cluster,
            payload: &entry.payload,
        })
        .map_err(|e| (e.kind, e.message))?;
    serde_json::to_value(&state).map_err(|e| {
        (
            CallErrorKind::BadOutput,
            format!("the state cannot be rendered as JSON: {e}"),
        )
    })
}

/// The FullState with the highest sequence among `records`.
fn newest_full_state(records: impl IntoIterator<Item = LogRecord>) -> Option<LogEntry> {
    records
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Entry(e) if e.entry_type == EntryType::FullState => Some(e),
            _ => None,
        })
        .max_by_key(|e| e.sequence)
}

/// Reads one grain's rows a page at a time and keeps its newest FullState.
async fn read_newest_full_state(
    log: &dyn ReplicationLog,
    grain_type: &str,
    grain_key: &str,
) -> Result<Option<LogEntry>, LogError> {
    let mut newest: Option<LogEntry> = None;
    let mut after = 0;
    loop {
        let records = log
            .read_from(grain_type, grain_key, after, READ_ROWS)
            .await?;
        let full_page = records.len() >= READ_ROWS;
        let highest = records
            .iter()
            .filter_map(|r| match r {
                LogRecord::Entry(e) => Some(e.sequence),
                LogRecord::Refused(row) => row.sequence,
            })
            .max();
        if let Some(entry) = newest_full_state(records)
            && newest.as_ref().is_none_or(|n| entry.sequence > n.sequence)
        {
            newest = Some(entry);
        }
        match highest {
            // Rows with an unusable sequence come back in every read: stop
            // once a read moves no further.
            Some(highest) if full_page && highest > after => after = highest,
            _ => return Ok(newest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication_log::{LogWriter, RefusedRow};

    fn row(sequence: u64, entry_type: EntryType) -> LogRecord {
        LogRecord::Entry(LogEntry {
            grain_type: "T".into(),
            grain_key: "k".into(),
            sequence,
            timestamp_millis: 0,
            source_cluster: "c".into(),
            entry_type,
            payload: vec![sequence as u8].into(),
        })
    }

    #[test]
    fn the_newest_full_state_passes_over_deltas_and_refused_rows() {
        let records = vec![
            row(1, EntryType::FullState),
            row(2, EntryType::FullState),
            row(3, EntryType::Delta),
            LogRecord::Refused(RefusedRow {
                grain_type: "T".into(),
                grain_key: "k".into(),
                sequence: Some(4),
                reason: "bad".into(),
            }),
        ];
        assert_eq!(newest_full_state(records).unwrap().sequence, 2);
        assert_eq!(newest_full_state(vec![row(1, EntryType::Delta)]), None);
    }

    #[tokio::test]
    async fn a_grain_read_by_itself_is_read_page_after_page() {
        use crate::replication_log::MemoryLog;
        let log = MemoryLog::new();
        let rows = READ_ROWS as u64 * 2 + 10;
        for sequence in 1..=rows {
            let entry_type = if sequence > rows - 3 {
                EntryType::Delta
            } else {
                EntryType::FullState
            };
            let LogRecord::Entry(entry) = row(sequence, entry_type) else {
                unreachable!()
            };
            log.append(&entry).await.unwrap();
        }
        let newest = read_newest_full_state(&log, "T", "k").await.unwrap();
        assert_eq!(newest.unwrap().sequence, rows - 3);
        assert_eq!(
            read_newest_full_state(&log, "T", "other").await.unwrap(),
            None
        );
    }

    #[test]
    fn groups_keep_a_few_examples() {
        let mut group = Group::default();
        for key in ["a", "b", "c", "d"] {
            group.add(key);
        }
        assert_eq!(group.count, 4);
        assert_eq!(group.examples, ["a", "b", "c"]);
    }
}
