//! Unit tests of the batch rules ([`super`]): which snapshot of a batch is applied.

use super::*;
use crate::replication_log::{LogEntry, RefusedRow};

fn entry(sequence: u64, entry_type: EntryType) -> LogRecord {
    LogRecord::Entry(LogEntry {
        grain_type: "Counter".into(),
        grain_key: "a".into(),
        sequence,
        timestamp_millis: 0,
        source_cluster: "us-east".into(),
        entry_type,
        payload: bytes::Bytes::new(),
    })
}

fn full(sequence: u64) -> LogRecord {
    entry(sequence, EntryType::FullState)
}

fn delta(sequence: u64) -> LogRecord {
    entry(sequence, EntryType::Delta)
}

fn row(sequence: Option<u64>) -> LogRecord {
    LogRecord::Refused(RefusedRow {
        grain_type: "Counter".into(),
        grain_key: "a".into(),
        sequence,
        reason: "entry_type 7".into(),
    })
}

fn fail(sequence: u64) -> Failure {
    Failure {
        sequence,
        kind: CallErrorKind::MalformedPayload,
        reason: format!("bad {sequence}"),
    }
}

fn failing(sequence: u64) -> ReplicaStatus {
    ReplicaStatus::Failing {
        sequence,
        reason: format!("bad {sequence}"),
    }
}

#[test]
fn plan_tries_full_states_newest_first_and_refuses_the_rest() {
    let batch = [full(1), delta(2), full(3), row(Some(4)), full(5), row(None)];
    let plan = Cursor::new(0).plan(&batch);
    assert_eq!(plan.attempts, [4, 2, 0]);
    assert_eq!(plan.refusals, [1, 3, 5]);
}

#[test]
fn plan_never_attempts_deltas_or_refused_rows() {
    let batch = [delta(1), delta(2), row(Some(3)), row(None)];
    let plan = Cursor::new(0).plan(&batch);
    assert!(plan.attempts.is_empty());
    assert_eq!(plan.refusals.len(), 4);
}

#[test]
fn plan_orders_by_sequence_not_by_position_in_the_batch() {
    let batch = [full(5), full(2), full(9)];
    assert_eq!(Cursor::new(0).plan(&batch).attempts, [2, 0, 1]);
}

#[test]
fn plan_excludes_snapshots_at_or_below_the_applied_sequence() {
    let batch = [full(3), full(4), full(6)];
    assert_eq!(Cursor::new(4).plan(&batch).attempts, [2]);
}

#[test]
fn newest_full_state_wins_and_older_ones_are_skipped() {
    let mut cursor = Cursor::new(0);
    let batch = [full(1), full(2), full(3)];
    let plan = cursor.plan(&batch);
    assert_eq!(plan.attempts[0], 2);
    let settled = cursor.settle(0, &batch, Some(2), &[]);
    assert_eq!(settled.skipped, [1, 2]);
    assert_eq!(
        (cursor.applied(), cursor.position(), cursor.seen()),
        (3, 3, 3)
    );
    assert_eq!(cursor.status(), ReplicaStatus::Ok);
}

#[test]
fn delta_after_the_applied_snapshot_marks_behind() {
    let mut cursor = Cursor::new(0);
    let batch = [full(1), delta(2), delta(3)];
    cursor.settle(0, &batch, Some(0), &[]);
    assert_eq!((cursor.applied(), cursor.position()), (1, 3));
    assert_eq!(cursor.status(), ReplicaStatus::Behind { delta_sequence: 3 });
}

#[test]
fn delta_before_the_applied_snapshot_does_not_mark_behind() {
    let mut cursor = Cursor::new(0);
    let batch = [delta(1), full(2)];
    let plan = cursor.plan(&batch);
    assert_eq!(plan.attempts, [1]);
    assert_eq!(plan.refusals, [0]);
    cursor.settle(0, &batch, Some(1), &[]);
    assert_eq!((cursor.applied(), cursor.position()), (2, 2));
    assert_eq!(cursor.status(), ReplicaStatus::Ok);
}

#[test]
fn a_batch_of_only_deltas_moves_past_them_and_marks_behind() {
    let mut cursor = Cursor::new(4);
    let batch = [delta(5), delta(6)];
    cursor.settle(4, &batch, None, &[]);
    assert_eq!(
        (cursor.applied(), cursor.position(), cursor.seen()),
        (4, 6, 6)
    );
    assert_eq!(cursor.status(), ReplicaStatus::Behind { delta_sequence: 6 });
    // A later snapshot clears it.
    let batch = [full(7)];
    cursor.settle(6, &batch, Some(0), &[]);
    assert_eq!(cursor.status(), ReplicaStatus::Ok);
    assert_eq!(cursor.position(), 7);
}

#[test]
fn uninterpretable_rows_are_passed_over_like_deltas() {
    let mut cursor = Cursor::new(0);
    let batch = [full(1), row(Some(2)), row(None)];
    cursor.settle(0, &batch, Some(0), &[]);
    assert_eq!((cursor.applied(), cursor.position()), (1, 2));
    assert_eq!(cursor.status(), ReplicaStatus::Behind { delta_sequence: 2 });
}

#[test]
fn refusals_are_reported_once_even_when_read_again() {
    let mut cursor = Cursor::new(0);
    let batch = [delta(1), full(2), delta(3), row(None)];
    assert_eq!(cursor.plan(&batch).refusals, [0, 2, 3]);
    // F2 fails: the position stays at 1 and a retry reads 2..3 again.
    cursor.settle(0, &batch, None, &[fail(2)]);
    assert_eq!(cursor.position(), 1);
    // Backends may return rows without a sequence with every read.
    let mut other = row(None);
    if let LogRecord::Refused(r) = &mut other {
        r.reason = "sequence: -2 is negative".into();
    }
    let again = [full(2), delta(3), delta(4), row(None), other];
    // Only the new Delta and the new row without a sequence are reported.
    assert_eq!(cursor.plan(&again).refusals, [2, 4]);
    cursor.settle(1, &again, None, &[fail(2)]);
    assert!(cursor.plan(&again).refusals.is_empty());
}

#[test]
fn failure_of_the_newest_falls_back_to_the_next_newest() {
    let mut cursor = Cursor::new(0);
    let batch = [full(1), full(2), full(3)];
    assert_eq!(cursor.plan(&batch).attempts, [2, 1, 0]);
    let settled = cursor.settle(0, &batch, Some(1), &[fail(3)]);
    assert_eq!(settled.skipped, [1]);
    assert_eq!(cursor.applied(), 2);
    // The position stays below the snapshot that neither applied nor was superseded.
    assert_eq!(
        (cursor.position(), cursor.seen(), cursor.blocker()),
        (2, 3, Some(3))
    );
    assert_eq!(cursor.status(), failing(3));
    assert_eq!((cursor.read_after(true), cursor.read_after(false)), (2, 3));
}

#[test]
fn when_every_snapshot_fails_the_position_passes_only_refused_entries() {
    let mut cursor = Cursor::new(0);
    let batch = [delta(1), full(2), delta(3), full(4)];
    cursor.settle(0, &batch, None, &[fail(4), fail(2)]);
    assert_eq!(cursor.applied(), 0);
    assert_eq!(cursor.position(), 1);
    assert_eq!(cursor.blocker(), Some(2));
    assert_eq!(cursor.status(), failing(4));
}

#[test]
fn failing_takes_precedence_over_behind() {
    let mut cursor = Cursor::new(0);
    let batch = [full(1), delta(2), full(3)];
    cursor.settle(0, &batch, Some(0), &[fail(3)]);
    assert_eq!(cursor.behind(), Some(2));
    assert_eq!(cursor.status(), failing(3));
    assert_eq!(cursor.position(), 2);
}

#[test]
fn reading_ahead_while_blocked_keeps_the_position_until_a_newer_snapshot_decodes() {
    let mut cursor = Cursor::new(0);
    cursor.settle(0, &[full(1), full(2)], Some(0), &[fail(2)]);
    assert_eq!((cursor.position(), cursor.seen()), (1, 2));

    // Ahead: another bad snapshot, then a Delta.
    cursor.settle(2, &[full(3)], None, &[fail(3)]);
    assert_eq!(
        (cursor.position(), cursor.seen(), cursor.blocker()),
        (1, 3, Some(2))
    );
    assert_eq!(cursor.status(), failing(3));
    cursor.settle(3, &[delta(4)], None, &[]);
    assert_eq!((cursor.position(), cursor.seen()), (1, 4));
    assert_eq!(cursor.status(), failing(3));

    // Ahead: a good snapshot supersedes every failure before it.
    cursor.settle(4, &[full(5)], Some(0), &[]);
    assert_eq!(
        (cursor.applied(), cursor.position(), cursor.seen()),
        (5, 5, 5)
    );
    assert_eq!(cursor.blocker(), None);
    assert_eq!(cursor.status(), ReplicaStatus::Ok);
}

#[test]
fn success_ahead_with_a_newer_failure_moves_the_position_up_to_it() {
    let mut cursor = Cursor::new(0);
    cursor.settle(0, &[full(1)], None, &[fail(1)]);
    assert_eq!((cursor.position(), cursor.blocker()), (0, Some(1)));
    let batch = [full(2), delta(3), full(4)];
    cursor.settle(1, &batch, Some(0), &[fail(4)]);
    assert_eq!(
        (cursor.applied(), cursor.position(), cursor.blocker()),
        (2, 3, Some(4))
    );
    assert_eq!(cursor.status(), failing(4));
}

#[test]
fn a_retry_re_evaluates_its_window_and_keeps_failures_beyond_it() {
    let mut cursor = Cursor::new(0);
    cursor.settle(0, &[full(1)], None, &[fail(1)]);
    cursor.settle(1, &[full(2)], None, &[fail(2)]);
    assert_eq!((cursor.position(), cursor.seen()), (0, 2));
    assert_eq!(cursor.status(), failing(2));

    // Retry with a window of one: F1 still fails; the failure at 2 lies beyond.
    let from = cursor.read_after(true);
    assert_eq!(from, 0);
    cursor.settle(from, &[full(1)], None, &[fail(1)]);
    assert_eq!(
        (cursor.position(), cursor.seen(), cursor.blocker()),
        (0, 1, Some(1))
    );
    assert_eq!(cursor.status(), failing(2));

    // Next retry: F1 now decodes; F2 (beyond the window) stays failing until read again.
    cursor.settle(0, &[full(1)], Some(0), &[]);
    assert_eq!(
        (cursor.applied(), cursor.position(), cursor.blocker()),
        (1, 1, None)
    );
    assert_eq!(cursor.status(), failing(2));
    // Reading on finds F2 decodes too.
    cursor.settle(cursor.read_after(false), &[full(2)], Some(0), &[]);
    assert_eq!((cursor.applied(), cursor.position()), (2, 2));
    assert_eq!(cursor.status(), ReplicaStatus::Ok);
}

#[test]
fn a_retry_forgets_a_failure_that_was_truncated_away() {
    let mut cursor = Cursor::new(0);
    cursor.settle(0, &[full(1), delta(2)], None, &[fail(1)]);
    assert_eq!(cursor.status(), failing(1));
    // F1 was truncated; the window now starts at the Delta.
    cursor.settle(0, &[delta(2)], None, &[]);
    assert_eq!((cursor.position(), cursor.blocker()), (2, None));
    assert_eq!(cursor.status(), ReplicaStatus::Behind { delta_sequence: 2 });
}

#[test]
fn applied_sequences_never_decrease() {
    let mut cursor = Cursor::new(5);
    // A misbehaving backend returns an old snapshot; claiming it applied changes nothing.
    cursor.settle(5, &[full(3)], Some(0), &[]);
    assert_eq!(cursor.applied(), 5);
    assert!(cursor.position() >= 5);
    // An out-of-range index is ignored too.
    cursor.settle(5, &[full(6)], Some(9), &[fail(6)]);
    assert_eq!(cursor.applied(), 5);
}

#[test]
fn an_empty_batch_changes_nothing() {
    let mut cursor = Cursor::new(3);
    let before = cursor.clone();
    assert_eq!(cursor.settle(3, &[], None, &[]), Settlement::default());
    assert_eq!(cursor, before);
    // A batch of rows without sequences moves nothing either.
    cursor.settle(3, &[row(None)], None, &[]);
    assert_eq!((cursor.position(), cursor.seen()), (3, 3));
}

/// What a simulated log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    Bad,
    Delta,
    Row,
}

fn record(sequence: u64, kind: Kind) -> LogRecord {
    match kind {
        Kind::Good | Kind::Bad => full(sequence),
        Kind::Delta => delta(sequence),
        Kind::Row => row(Some(sequence)),
    }
}

/// Drives a cursor over a whole log as a grain's steps do (read ahead
/// while blocked, then retry rounds), checking the invariants on the way.
fn simulate(log: &[Kind], limit: usize) -> Cursor {
    let records: Vec<LogRecord> = log
        .iter()
        .enumerate()
        .map(|(i, &k)| record(i as u64 + 1, k))
        .collect();
    let head = log.len() as u64;
    let mut cursor = Cursor::new(0);
    let mut reported = vec![0u32; log.len()];
    for round in 0..3 {
        let mut retry = round > 0;
        let mut reads = 0;
        loop {
            let from = cursor.read_after(retry);
            retry = false;
            let batch: Vec<LogRecord> = records
                .iter()
                .skip(from as usize)
                .take(limit)
                .cloned()
                .collect();
            if batch.is_empty() {
                break;
            }
            let plan = cursor.plan(&batch);
            for &i in &plan.refusals {
                reported[sequence_of(&batch[i]).unwrap() as usize - 1] += 1;
            }
            let mut applied = None;
            let mut failures = Vec::new();
            for &i in &plan.attempts {
                let sequence = sequence_of(&batch[i]).unwrap();
                assert!(
                    !is_refused(&batch[i]),
                    "{log:?}: a refused entry was decoded"
                );
                if log[sequence as usize - 1] == Kind::Good {
                    applied = Some(i);
                    break;
                }
                failures.push(fail(sequence));
            }
            let before = cursor.clone();
            cursor.settle(from, &batch, applied, &failures);
            assert!(
                cursor.applied() >= before.applied(),
                "{log:?}: applied went back"
            );
            assert!(
                cursor.position() >= before.position(),
                "{log:?}: position went back"
            );
            if let Some(blocker) = cursor.blocker() {
                assert!(
                    cursor.position() < blocker,
                    "{log:?}: position passed the blocker"
                );
            }
            reads += 1;
            assert!(reads <= log.len() + 1, "{log:?}: no progress");
            if cursor.seen() >= head {
                break;
            }
        }
    }
    for (i, &kind) in log.iter().enumerate() {
        let expected = u32::from(matches!(kind, Kind::Delta | Kind::Row));
        assert_eq!(
            reported[i],
            expected,
            "{log:?} limit {limit}: reports of {}",
            i + 1
        );
    }
    cursor
}

#[test]
fn exhaustive_small_logs_end_in_the_expected_state() {
    const KINDS: [Kind; 4] = [Kind::Good, Kind::Bad, Kind::Delta, Kind::Row];
    for len in 0..=6u32 {
        for code in 0..4usize.pow(len) {
            let log: Vec<Kind> = (0..len).map(|i| KINDS[code / 4usize.pow(i) % 4]).collect();
            let newest_good = log
                .iter()
                .rposition(|&k| k == Kind::Good)
                .map_or(0, |i| i as u64 + 1);
            let above = |kinds: &[Kind]| {
                log.iter()
                    .enumerate()
                    .map(|(i, &k)| (i as u64 + 1, k))
                    .filter(|&(s, k)| s > newest_good && kinds.contains(&k))
                    .map(|(s, _)| s)
                    .collect::<Vec<u64>>()
            };
            let bad_above = above(&[Kind::Bad]);
            let refused_above = above(&[Kind::Delta, Kind::Row]);
            for limit in [1, 2, 3, 7] {
                let cursor = simulate(&log, limit);
                assert_eq!(cursor.applied(), newest_good, "{log:?} limit {limit}");
                let expected_status = match (bad_above.last(), refused_above.last()) {
                    (Some(&bad), _) => failing(bad),
                    (None, Some(&delta_sequence)) => ReplicaStatus::Behind { delta_sequence },
                    (None, None) => ReplicaStatus::Ok,
                };
                assert_eq!(cursor.status(), expected_status, "{log:?} limit {limit}");
                let expected_position = match bad_above.first() {
                    Some(&bad) => bad - 1,
                    None => log.len() as u64,
                };
                assert_eq!(
                    cursor.position(),
                    expected_position,
                    "{log:?} limit {limit}"
                );
            }
        }
    }
}

#[test]
fn a_redecode_cursor_decodes_its_applied_snapshot_again() {
    let mut cursor = Cursor::redecode(5);
    assert_eq!(cursor.read_after(false), 4);
    // What a read after 4 returns: the applied snapshot and what follows.
    let batch = [full(5), delta(6)];
    let plan = cursor.plan(&batch);
    assert_eq!(plan.attempts, [0], "the applied snapshot is tried again");
    assert_eq!(plan.refusals, [1]);
    cursor.settle(4, &batch, Some(0), &[]);
    assert_eq!(cursor.applied(), 5);
    assert_eq!(cursor.status(), ReplicaStatus::Behind { delta_sequence: 6 });

    // The new decoder refuses it: failing at 5, nothing older is tried.
    let mut cursor = Cursor::redecode(5);
    let batch = [full(3), full(5)];
    assert_eq!(cursor.plan(&batch).attempts, [1]);
    cursor.settle(4, &batch, None, &[fail(5)]);
    assert_eq!(cursor.status(), failing(5));
    assert_eq!(cursor.read_after(true), 4, "retries read it again");
}
