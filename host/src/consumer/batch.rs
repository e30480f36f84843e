//! The pure bookkeeping of one grain's consumer: which entries of a batch to
//! decode and in which order, which to refuse, where the position moves and
//! what the replica's status becomes. No I/O and no clock.
//!
//! The rules (ARCHITECTURE.md, "The consumer, and where it differs from
//! Orlando's"):
//! - Deltas and uninterpretable rows are refused: reported once each, never
//!   decoded, passed over by the position.
//! - FullState entries above the applied sequence are tried newest first; the
//!   first that decodes is applied and supersedes every older one, which is
//!   skipped without decoding.
//! - The position never passes a snapshot that was neither applied nor
//!   superseded by an applied one (the *blocker*). While blocked, the consumer
//!   keeps reading *ahead* (after `seen`) to find a newer snapshot that
//!   decodes, and on each retry re-reads from the position.
//! - Applied sequences only ever increase.
//! - Status: failing (newest snapshot that did not decode) takes precedence
//!   over behind (newest refused entry after the applied snapshot), else ok.

use std::collections::BTreeSet;

use crate::decode::CallErrorKind;
use crate::replication_log::{EntryType, LogRecord};
use crate::store::ReplicaStatus;

/// Most rows without a readable sequence a cursor remembers as reported.
pub const MAX_UNSEQUENCED: usize = 256;

/// A snapshot that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The snapshot's sequence.
    pub sequence: u64,
    /// What went wrong.
    pub kind: CallErrorKind,
    /// Why, in one line.
    pub reason: String,
}

/// What to do with a batch, decided before decoding anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indices of the FullState entries above the applied sequence, newest
    /// first: decode in this order and stop at the first success.
    pub attempts: Vec<usize>,
    /// Indices of refused records (Deltas, uninterpretable rows) not reported
    /// before, in batch order. Rows without a readable sequence (which a
    /// backend may return with every read) are told apart by their reason;
    /// past [`MAX_UNSEQUENCED`] distinct ones they are listed every time.
    pub refusals: Vec<usize>,
}

/// What settling a batch decided, beyond the cursor's new state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Sequences of FullState entries passed over without decoding because
    /// the applied snapshot supersedes them.
    pub skipped: Vec<u64>,
}

/// The sequence of a record, when known.
pub fn sequence_of(record: &LogRecord) -> Option<u64> {
    match record {
        LogRecord::Entry(entry) => Some(entry.sequence),
        LogRecord::Refused(row) => row.sequence,
    }
}

/// Whether a record is refused (a Delta or an uninterpretable row).
pub fn is_refused(record: &LogRecord) -> bool {
    match record {
        LogRecord::Entry(entry) => entry.entry_type != EntryType::FullState,
        LogRecord::Refused(_) => true,
    }
}

fn full_state_sequence(record: &LogRecord) -> Option<u64> {
    match record {
        LogRecord::Entry(entry) if entry.entry_type == EntryType::FullState => Some(entry.sequence),
        _ => None,
    }
}

/// Where one grain's consumer stands in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence the next read starts after.
    position: u64,
    /// The sequence of the applied snapshot (0 when none).
    applied: u64,
    /// The highest sequence read so far.
    seen: u64,
    /// The highest sequence whose refusal was already reported, so none is reported twice.
    reported: u64,
    /// The lowest snapshot neither applied nor superseded: the position never passes it.
    blocker: Option<u64>,
    /// Why the newest snapshot does not decode, while it does not.
    failing: Option<Failure>,
    /// The newest refused entry (a Delta or unreadable row) after the applied snapshot.
    behind: Option<u64>,
    /// Reasons of refused rows without a sequence, already reported once (bounded).
    unsequenced: BTreeSet<String>,
}

impl Cursor {
    /// A cursor after an already applied sequence (0 for none).
    pub fn new(applied: u64) -> Self {
        Self {
            position: applied,
            applied,
            seen: applied,
            reported: applied,
            blocker: None,
            failing: None,
            behind: None,
            unsequenced: BTreeSet::new(),
        }
    }

    /// Whether the cursor is what [`Cursor::new`] makes of its applied
    /// sequence: read up to it, nothing blocked, failing, behind or
    /// reported beyond it.
    pub fn is_settled_at_applied(&self) -> bool {
        self.position == self.applied
            && self.seen == self.applied
            && self.reported == self.applied
            && self.blocker.is_none()
            && self.failing.is_none()
            && self.behind.is_none()
            && self.unsequenced.is_empty()
    }

    /// A cursor that decodes the applied snapshot `applied` again (after a
    /// plugin swap): reads from just below it, with refusals up to it
    /// already reported. If the snapshot no longer decodes, the grain is
    /// failing and keeps the state it has.
    pub fn redecode(applied: u64) -> Self {
        let below = applied.saturating_sub(1);
        Self {
            reported: applied,
            ..Self::new(below)
        }
    }

    /// Every record at or below is applied, superseded or refused.
    #[cfg(test)]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The applied snapshot's sequence (0 for none).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The highest sequence read so far; above the position only while blocked.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The oldest snapshot above the applied one that failed to decode: the
    /// position stays below it.
    #[cfg(test)]
    pub fn blocker(&self) -> Option<u64> {
        self.blocker
    }

    /// The newest snapshot that failed to decode, if not superseded.
    pub fn failing(&self) -> Option<&Failure> {
        self.failing.as_ref()
    }

    /// The newest refused entry after the applied snapshot.
    #[cfg(test)]
    pub fn behind(&self) -> Option<u64> {
        self.behind
    }

    /// Where the next read starts: after the position when retrying failed
    /// snapshots, otherwise after everything seen.
    pub fn read_after(&self, retry: bool) -> u64 {
        if retry { self.position } else { self.seen }
    }

    /// The replica status the cursor implies.
    pub fn status(&self) -> ReplicaStatus {
        if let Some(failure) = &self.failing {
            ReplicaStatus::Failing {
                sequence: failure.sequence,
                reason: failure.reason.clone(),
            }
        } else if let Some(delta_sequence) = self.behind {
            ReplicaStatus::Behind { delta_sequence }
        } else {
            ReplicaStatus::Ok
        }
    }

    /// Which entries of `records` to decode, newest first, and which to
    /// report as refused.
    pub fn plan(&self, records: &[LogRecord]) -> Plan {
        let mut attempts: Vec<(u64, usize)> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| full_state_sequence(r).map(|s| (s, i)))
            .filter(|&(s, _)| s > self.applied)
            .collect();
        attempts.sort_by_key(|&(sequence, _)| std::cmp::Reverse(sequence));
        let refusals = records
            .iter()
            .enumerate()
            .filter(|(_, r)| is_refused(r) && !self.was_reported(r))
            .map(|(i, _)| i)
            .collect();
        Plan {
            attempts: attempts.into_iter().map(|(_, i)| i).collect(),
            refusals,
        }
    }

    /// Whether a refused record was reported by an earlier batch.
    fn was_reported(&self, record: &LogRecord) -> bool {
        match (sequence_of(record), record) {
            (Some(sequence), _) => sequence <= self.reported,
            (None, LogRecord::Refused(row)) => self.unsequenced.contains(&row.reason),
            (None, LogRecord::Entry(_)) => false,
        }
    }

    /// Records the outcome of a batch read after `from`: `applied` is the
    /// index of the entry that decoded (and was applied), `failures` the
    /// snapshots that did not decode.
    pub fn settle(
        &mut self,
        from: u64,
        records: &[LogRecord],
        applied: Option<usize>,
        failures: &[Failure],
    ) -> Settlement {
        for record in records {
            if let (LogRecord::Refused(row), None) = (record, sequence_of(record))
                && self.unsequenced.len() < MAX_UNSEQUENCED
            {
                self.unsequenced.insert(row.reason.clone());
            }
        }
        let Some(batch_max) = records.iter().filter_map(sequence_of).max() else {
            return Settlement::default();
        };
        // A read from the position re-evaluates everything it returns; a read
        // ahead (after `seen`, while blocked) only adds to what is known.
        let retry = from <= self.position;

        let success = applied
            .and_then(|i| records.get(i))
            .and_then(full_state_sequence)
            .filter(|&s| s > self.applied);
        if let Some(sequence) = success {
            self.applied = sequence;
        }
        let applied = self.applied;

        let above: Vec<&Failure> = failures.iter().filter(|f| f.sequence > applied).collect();
        let newest = above
            .iter()
            .max_by_key(|f| f.sequence)
            .map(|f| (*f).clone());
        let lowest = above.iter().map(|f| f.sequence).min();

        let carried = self
            .failing
            .take()
            .filter(|f| f.sequence > applied && (!retry || f.sequence > batch_max));
        self.failing = match (carried, newest) {
            (Some(old), Some(new)) => Some(if new.sequence >= old.sequence {
                new
            } else {
                old
            }),
            (old, new) => old.or(new),
        };

        self.blocker = if success.is_some() || retry {
            lowest
        } else {
            self.blocker.or(lowest)
        };

        let target = match self.blocker {
            Some(blocker) => records
                .iter()
                .filter_map(sequence_of)
                .filter(|&s| s < blocker)
                .max(),
            None => Some(batch_max),
        };
        if let Some(target) = target {
            self.position = self.position.max(target);
        }
        self.seen = if retry {
            batch_max
        } else {
            self.seen.max(batch_max)
        };
        self.seen = self.seen.max(self.position);

        let refused_max = records
            .iter()
            .filter(|r| is_refused(r))
            .filter_map(sequence_of)
            .filter(|&s| s > applied)
            .max();
        self.behind = self.behind.filter(|&b| b > applied).max(refused_max);
        self.reported = self.reported.max(batch_max);

        let skipped = records
            .iter()
            .filter_map(full_state_sequence)
            .filter(|&s| s <= applied && Some(s) != success)
            .collect();
        Settlement { skipped }
    }
}

#[cfg(test)]
mod tests;
