//! The replication log backends: one behavioural suite run against the
//! in-memory log, a SQLite file and a real PostgreSQL, then what is special
//! to each backend.

mod common;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::pg::{self, PgSchema};
use common::relay::{self, Relay};
use replica_host::replication_log::{
    self, ChangeCursor, EntryType, GrainHead, LogEntry, LogError, LogRecord, MemoryLog,
    PostgresLog, RawRow, RefusedRow, ReplicationLog, SqliteLog,
};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::{Connection, Executor};
use tempfile::TempDir;

const COUNTER: &str = "Counter";

/// Orlando's DDL for SQLite, verbatim, as a primary would run it.
const ORLANDO_SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    timestamp_millis INTEGER NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

/// Orlando's DDL for PostgreSQL, verbatim.
const ORLANDO_POSTGRES_DDL: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    timestamp_millis BIGINT NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type SMALLINT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

const SQLITE_INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES (?, ?, ?, ?, ?, ?, ?)";

const POSTGRES_INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

// ---------------------------------------------------------------------------
// Helpers

fn entry(grain_type: &str, grain_key: &str, sequence: u64, payload: &[u8]) -> LogEntry {
    LogEntry {
        grain_type: grain_type.to_owned(),
        grain_key: grain_key.to_owned(),
        sequence,
        timestamp_millis: 1_700_000_000_000 + (sequence % 1_000_000) as i64,
        source_cluster: "us-east".to_owned(),
        entry_type: EntryType::FullState,
        payload: payload.to_vec(),
    }
}

fn raw(grain_type: &str, grain_key: &str, sequence: i64, entry_type: i64) -> RawRow {
    RawRow {
        grain_type: grain_type.to_owned(),
        grain_key: grain_key.to_owned(),
        sequence,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east".to_owned(),
        entry_type,
        payload: b"raw".to_vec(),
    }
}

/// Records as `e<seq>` (entry), `r<seq>` (refused) or `r?` (refused, no sequence).
fn shape(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            LogRecord::Entry(e) => format!("e{}", e.sequence),
            LogRecord::Refused(RefusedRow {
                sequence: Some(s), ..
            }) => format!("r{s}"),
            LogRecord::Refused(_) => "r?".to_owned(),
        })
        .collect()
}

fn refusal(record: &LogRecord) -> &RefusedRow {
    match record {
        LogRecord::Refused(r) => r,
        other => panic!("expected a refused row, got {other:?}"),
    }
}

fn as_entry(record: &LogRecord) -> &LogEntry {
    match record {
        LogRecord::Entry(e) => e,
        other => panic!("expected an entry, got {other:?}"),
    }
}

fn heads(pairs: &[(&str, u64)]) -> Vec<GrainHead> {
    pairs
        .iter()
        .map(|(k, s)| GrainHead {
            grain_key: (*k).to_owned(),
            latest_sequence: *s,
        })
        .collect()
}

fn sorted_heads(mut heads: Vec<GrainHead>) -> Vec<GrainHead> {
    heads.sort_by(|a, b| a.grain_key.cmp(&b.grain_key));
    heads
}

/// Deterministic bytes covering every value.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Backends under test

/// A backend plus a way to store rows it would never write itself.
#[async_trait]
trait Harness: Send + Sync {
    fn log(&self) -> Arc<dyn ReplicationLog>;
    async fn insert_raw(&self, row: RawRow);
}

struct MemoryHarness(Arc<MemoryLog>);

#[async_trait]
impl Harness for MemoryHarness {
    fn log(&self) -> Arc<dyn ReplicationLog> {
        self.0.clone()
    }
    async fn insert_raw(&self, row: RawRow) {
        self.0.insert_raw(row).expect("insert raw row");
    }
}

async fn memory(_case: &str) -> Option<Box<dyn Harness>> {
    Some(Box::new(MemoryHarness(Arc::new(MemoryLog::new()))))
}

struct SqliteHarness {
    log: Arc<SqliteLog>,
    raw: SqlitePool,
    _dir: TempDir,
}

#[async_trait]
impl Harness for SqliteHarness {
    fn log(&self) -> Arc<dyn ReplicationLog> {
        self.log.clone()
    }
    async fn insert_raw(&self, row: RawRow) {
        sqlx::query(SQLITE_INSERT)
            .bind(row.grain_type)
            .bind(row.grain_key)
            .bind(row.sequence)
            .bind(row.timestamp_millis)
            .bind(row.source_cluster)
            .bind(row.entry_type)
            .bind(row.payload)
            .execute(&self.raw)
            .await
            .expect("insert raw row");
    }
}

async fn sqlite_pool(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw SQLite connection")
}

async fn sqlite(_case: &str) -> Option<Box<dyn Harness>> {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("log.db");
    let log = Arc::new(SqliteLog::create(&path).await.expect("create SQLite log"));
    let raw = sqlite_pool(&path).await;
    Some(Box::new(SqliteHarness {
        log,
        raw,
        _dir: dir,
    }))
}

struct PostgresHarness {
    log: Arc<PostgresLog>,
    raw: PgPool,
    _schema: PgSchema,
}

#[async_trait]
impl Harness for PostgresHarness {
    fn log(&self) -> Arc<dyn ReplicationLog> {
        self.log.clone()
    }
    async fn insert_raw(&self, row: RawRow) {
        sqlx::query(POSTGRES_INSERT)
            .bind(row.grain_type)
            .bind(row.grain_key)
            .bind(row.sequence)
            .bind(row.timestamp_millis)
            .bind(row.source_cluster)
            .bind(i16::try_from(row.entry_type).expect("entry_type fits SMALLINT"))
            .bind(row.payload)
            .execute(&self.raw)
            .await
            .expect("insert raw row");
    }
}

async fn postgres(case: &str) -> Option<Box<dyn Harness>> {
    let schema = pg::isolated_schema(case).await?;
    let log = Arc::new(
        PostgresLog::create(schema.url())
            .await
            .expect("create PostgreSQL log"),
    );
    let raw = PgPool::connect(schema.url())
        .await
        .expect("raw PostgreSQL pool");
    Some(Box::new(PostgresHarness {
        log,
        raw,
        _schema: schema,
    }))
}

/// One test per (backend, case).
macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(harness) = super::$backend(stringify!($case)).await {
                        super::cases::$case(&*harness).await;
                    }
                }
            )*
        }
    };
}

macro_rules! suite_for_all_backends {
    ($($case:ident),* $(,)?) => {
        suite!(memory: $($case),*);
        suite!(sqlite: $($case),*);
        suite!(postgres: $($case),*);
    };
}

suite_for_all_backends!(
    empty_log_answers,
    append_then_read_in_order,
    latest_sequence_is_zero_until_appended,
    append_refuses_equal_and_lower_sequences,
    sequences_near_i64_max_round_trip,
    truncate_deletes_below_and_counts,
    grain_heads_and_types,
    refused_rows_do_not_hide_good_rows,
    awkward_grain_keys_round_trip,
    empty_and_multi_megabyte_payloads,
    racing_appends_end_in_conflicts,
    changes_since_lists_then_reports_only_new_rows,
    changes_since_sees_rows_after_the_newest_were_deleted,
    scan_hands_each_grain_over_as_read_from_would,
);

// ---------------------------------------------------------------------------
// The shared suite

mod cases {
    use super::*;

    pub async fn empty_log_answers(h: &dyn Harness) {
        let log = h.log();
        log.ping().await.expect("ping");
        assert!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().is_empty());
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 0);
        assert!(log.grain_heads(COUNTER).await.unwrap().is_empty());
        assert!(log.grain_types().await.unwrap().is_empty());
        assert_eq!(log.truncate(COUNTER, "a", 10).await.unwrap(), 0);
    }

    pub async fn append_then_read_in_order(h: &dyn Harness) {
        let log = h.log();
        for s in [1, 2, 5, 9] {
            assert_eq!(
                log.append(&entry(COUNTER, "k", s, &[s as u8]))
                    .await
                    .unwrap(),
                s
            );
        }
        // Neighbours that must not leak into the grain's reads.
        log.append(&entry(COUNTER, "k2", 3, b"x")).await.unwrap();
        log.append(&entry("Other", "k", 4, b"x")).await.unwrap();

        let all = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
        let expected: Vec<LogRecord> = [1, 2, 5, 9]
            .map(|s| LogRecord::Entry(entry(COUNTER, "k", s, &[s as u8])))
            .to_vec();
        assert_eq!(all, expected, "every column round-trips, in order");

        let read = |after, limit| {
            let log = log.clone();
            async move { shape(&log.read_from(COUNTER, "k", after, limit).await.unwrap()) }
        };
        assert_eq!(read(2, 100).await, ["e5", "e9"], "strictly after");
        assert_eq!(read(3, 100).await, ["e5", "e9"], "after a gap");
        assert_eq!(read(0, 2).await, ["e1", "e2"], "limit keeps the lowest");
        assert_eq!(read(5, 1).await, ["e9"]);
        assert!(read(9, 100).await.is_empty());
        assert!(read(0, 0).await.is_empty(), "limit 0");
        assert!(read(u64::MAX, 100).await.is_empty());
        assert!(
            log.read_from(COUNTER, "nope", 0, 100)
                .await
                .unwrap()
                .is_empty()
        );

        let delta = LogEntry {
            entry_type: EntryType::Delta,
            ..entry(COUNTER, "k", 10, b"d")
        };
        log.append(&delta).await.unwrap();
        let after = log.read_from(COUNTER, "k", 9, 100).await.unwrap();
        assert_eq!(
            after,
            vec![LogRecord::Entry(delta)],
            "a Delta is an entry, not refused"
        );
    }

    pub async fn latest_sequence_is_zero_until_appended(h: &dyn Harness) {
        let log = h.log();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 0);
        log.append(&entry(COUNTER, "a", 4, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 40, b"")).await.unwrap();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 40);
        assert_eq!(log.latest_sequence(COUNTER, "b").await.unwrap(), 0);
        assert_eq!(log.latest_sequence("Other", "a").await.unwrap(), 0);
    }

    pub async fn append_refuses_equal_and_lower_sequences(h: &dyn Harness) {
        let log = h.log();
        match log.append(&entry(COUNTER, "a", 0, b"zero")).await {
            Err(LogError::SequenceConflict {
                sequence: 0,
                latest: 0,
                ..
            }) => {}
            other => panic!("sequence 0 on an empty grain: {other:?}"),
        }
        log.append(&entry(COUNTER, "a", 5, b"first")).await.unwrap();
        for (sequence, why) in [(5, "equal"), (3, "lower")] {
            match log.append(&entry(COUNTER, "a", sequence, b"second")).await {
                Err(LogError::SequenceConflict {
                    grain_type,
                    grain_key,
                    sequence: s,
                    latest,
                }) => {
                    assert_eq!((grain_type.as_str(), grain_key.as_str()), (COUNTER, "a"));
                    assert_eq!((s, latest), (sequence, 5), "{why}");
                }
                other => panic!("{why} sequence: {other:?}"),
            }
        }
        let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
        assert_eq!(
            rows,
            vec![LogRecord::Entry(entry(COUNTER, "a", 5, b"first"))]
        );
        // Another grain is not in conflict.
        log.append(&entry(COUNTER, "b", 3, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 6, b"")).await.unwrap();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 6);
    }

    pub async fn sequences_near_i64_max_round_trip(h: &dyn Harness) {
        let log = h.log();
        let max = i64::MAX as u64;
        log.append(&entry(COUNTER, "big", max - 1, b"a"))
            .await
            .unwrap();
        log.append(&entry(COUNTER, "big", max, b"b")).await.unwrap();
        let rows = log.read_from(COUNTER, "big", max - 2, 10).await.unwrap();
        assert_eq!(shape(&rows), [format!("e{}", max - 1), format!("e{max}")]);
        assert_eq!(as_entry(&rows[1]).payload, b"b");
        assert_eq!(log.latest_sequence(COUNTER, "big").await.unwrap(), max);
        assert_eq!(
            log.grain_heads(COUNTER).await.unwrap(),
            heads(&[("big", max)])
        );
        assert!(
            log.read_from(COUNTER, "big", max, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let too_big = log.append(&entry(COUNTER, "big2", max + 1, b"")).await;
        assert!(
            matches!(too_big, Err(LogError::Backend { ref message, .. }) if message.contains(&(max + 1).to_string())),
            "a sequence above i64::MAX cannot be stored: {too_big:?}"
        );
        assert_eq!(log.latest_sequence(COUNTER, "big2").await.unwrap(), 0);
        assert!(matches!(
            log.append(&entry(COUNTER, "big", max, b"")).await,
            Err(LogError::SequenceConflict { latest, .. }) if latest == max
        ));
    }

    pub async fn truncate_deletes_below_and_counts(h: &dyn Harness) {
        let log = h.log();
        for s in 1..=5 {
            log.append(&entry(COUNTER, "t", s, b"")).await.unwrap();
            log.append(&entry(COUNTER, "keep", s, b"")).await.unwrap();
        }
        assert_eq!(log.truncate(COUNTER, "t", 3).await.unwrap(), 2);
        assert_eq!(
            shape(&log.read_from(COUNTER, "t", 0, 10).await.unwrap()),
            ["e3", "e4", "e5"]
        );
        assert_eq!(
            log.truncate(COUNTER, "t", 3).await.unwrap(),
            0,
            "nothing left below 3"
        );
        assert_eq!(log.truncate(COUNTER, "t", 0).await.unwrap(), 0);
        assert_eq!(log.latest_sequence(COUNTER, "t").await.unwrap(), 5);
        assert_eq!(log.truncate(COUNTER, "t", u64::MAX).await.unwrap(), 3);
        assert!(log.read_from(COUNTER, "t", 0, 10).await.unwrap().is_empty());
        assert_eq!(log.latest_sequence(COUNTER, "t").await.unwrap(), 0);
        assert_eq!(
            log.read_from(COUNTER, "keep", 0, 10).await.unwrap().len(),
            5
        );
    }

    pub async fn grain_heads_and_types(h: &dyn Harness) {
        let log = h.log();
        for (grain_type, key, s) in [
            (COUNTER, "a", 1),
            (COUNTER, "a", 3),
            (COUNTER, "b", 7),
            ("BankAccount", "a", 2),
        ] {
            log.append(&entry(grain_type, key, s, b"")).await.unwrap();
        }
        // A row with a valid sequence but an unknown entry type still moves the head;
        // a grain whose only row has a negative sequence has none.
        h.insert_raw(raw(COUNTER, "a", 10, 7)).await;
        h.insert_raw(raw(COUNTER, "neg", -4, 0)).await;

        assert_eq!(
            sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
            heads(&[("a", 10), ("b", 7)])
        );
        assert_eq!(
            log.grain_heads("BankAccount").await.unwrap(),
            heads(&[("a", 2)])
        );
        assert!(log.grain_heads("Nothing").await.unwrap().is_empty());
        let mut types = log.grain_types().await.unwrap();
        types.sort();
        assert_eq!(types, ["BankAccount", COUNTER]);
    }

    /// Asks for changes and checks the answer against the grains that changed:
    /// a complete answer must equal `grain_heads`; an incremental one must
    /// name exactly the changed grains with their newest sequence.
    async fn expect_changes(
        log: &Arc<dyn ReplicationLog>,
        cursor: Option<&ChangeCursor>,
        changed: &[(&str, u64)],
    ) -> Option<ChangeCursor> {
        let changes = log.changes_since(COUNTER, cursor).await.unwrap();
        if changes.complete {
            assert_eq!(
                sorted_heads(changes.heads),
                sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
                "a complete answer lists every grain"
            );
        } else {
            assert!(cursor.is_some(), "the first answer is complete");
            assert_eq!(sorted_heads(changes.heads), heads(changed));
        }
        changes.cursor
    }

    pub async fn changes_since_lists_then_reports_only_new_rows(h: &dyn Harness) {
        let log = h.log();
        let first = log.changes_since(COUNTER, None).await.unwrap();
        assert!(first.complete && first.heads.is_empty());
        let cursor = first.cursor;

        log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 4, b"")).await.unwrap();
        log.append(&entry("BankAccount", "a", 2, b""))
            .await
            .unwrap();
        let cursor = expect_changes(&log, cursor.as_ref(), &[("a", 1), ("b", 4)]).await;
        // Nothing new: an incremental answer is empty.
        let cursor = expect_changes(&log, cursor.as_ref(), &[]).await;

        log.append(&entry(COUNTER, "a", 2, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 5, b"")).await.unwrap();
        log.append(&entry(COUNTER, "c", 1, b"")).await.unwrap();
        log.append(&entry("BankAccount", "z", 1, b""))
            .await
            .unwrap();
        // Rows without a valid sequence never make a head.
        h.insert_raw(raw(COUNTER, "neg", -3, 0)).await;
        let cursor = expect_changes(&log, cursor.as_ref(), &[("a", 5), ("c", 1)]).await;

        // Another grain type's changes do not show; its own cursor works too.
        let bank = log.changes_since("BankAccount", None).await.unwrap();
        assert_eq!(sorted_heads(bank.heads), heads(&[("a", 2), ("z", 1)]));
        log.append(&entry(COUNTER, "b", 9, b"")).await.unwrap();
        expect_changes(&log, cursor.as_ref(), &[("b", 9)]).await;

        // Without a cursor: everything, as grain_heads.
        let all = log.changes_since(COUNTER, None).await.unwrap();
        assert!(all.complete);
        assert_eq!(
            sorted_heads(all.heads),
            heads(&[("a", 5), ("b", 9), ("c", 1)])
        );
    }

    pub async fn changes_since_sees_rows_after_the_newest_were_deleted(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 2, b"")).await.unwrap();
        let cursor = log.changes_since(COUNTER, None).await.unwrap().cursor;

        // Deleting the newest rows lets SQLite hand their rowids out again:
        // the new rows must still be reported.
        assert_eq!(log.truncate(COUNTER, "b", 3).await.unwrap(), 2);
        log.append(&entry(COUNTER, "c", 7, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 3, b"")).await.unwrap();
        let changes = log.changes_since(COUNTER, cursor.as_ref()).await.unwrap();
        let reported = sorted_heads(changes.heads.clone());
        for expected in heads(&[("b", 3), ("c", 7)]) {
            assert!(
                reported.contains(&expected),
                "{expected:?} missing from {changes:?}"
            );
        }
        if changes.complete {
            assert_eq!(
                reported,
                sorted_heads(log.grain_heads(COUNTER).await.unwrap())
            );
        }
        // And the cursor it returned keeps working.
        log.append(&entry(COUNTER, "d", 1, b"")).await.unwrap();
        expect_changes(&log, changes.cursor.as_ref(), &[("d", 1)]).await;
    }

    pub async fn scan_hands_each_grain_over_as_read_from_would(h: &dyn Harness) {
        let log = h.log();
        // a: odd rows (unknown entry type, negative sequence) among good ones.
        log.append(&entry(COUNTER, "a", 1, b"a1")).await.unwrap();
        h.insert_raw(raw(COUNTER, "a", 2, 7)).await;
        h.insert_raw(raw(COUNTER, "a", -4, 0)).await;
        log.append(&entry(COUNTER, "a", 3, b"a3")).await.unwrap();
        // b: one row; c: more rows than a page; d: one row; e: only a
        // negative sequence (not a grain to the listing either).
        log.append(&entry(COUNTER, "b", 9, b"b9")).await.unwrap();
        for s in 1..=6 {
            log.append(&entry(COUNTER, "c", s, b"c")).await.unwrap();
        }
        log.append(&entry(COUNTER, "d", 2, b"d2")).await.unwrap();
        h.insert_raw(raw(COUNTER, "e", -1, 0)).await;
        log.append(&entry("Other", "a", 1, b"x")).await.unwrap();

        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        for _ in 0..20 {
            let page = log
                .scan(COUNTER, after.as_deref(), 4)
                .await
                .unwrap()
                .expect("every backend scans");
            for grain in &page.grains {
                if grain.complete {
                    let read = log
                        .read_from(COUNTER, &grain.grain_key, 0, 100)
                        .await
                        .unwrap();
                    assert_eq!(grain.records, read, "{}", grain.grain_key);
                    assert_eq!(
                        grain.head,
                        log.latest_sequence(COUNTER, &grain.grain_key)
                            .await
                            .unwrap()
                    );
                } else {
                    assert!(grain.records.is_empty());
                }
                seen.push((grain.grain_key.clone(), grain.complete));
            }
            after = page.next_after;
            if after.is_none() {
                break;
            }
        }
        assert!(after.is_none(), "the scan did not end");
        // Each grain once, in key order; c does not fit a page of 4 rows.
        assert_eq!(
            seen,
            [
                ("a".to_owned(), true),
                ("b".to_owned(), true),
                ("c".to_owned(), false),
                ("d".to_owned(), true),
            ]
        );
        // A page large enough holds every grain whole.
        let page = log.scan(COUNTER, None, 100).await.unwrap().unwrap();
        assert_eq!(page.next_after, None);
        assert!(page.grains.iter().all(|g| g.complete));
        assert_eq!(
            page.grains
                .iter()
                .map(|g| g.grain_key.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(shape(&page.grains[0].records), ["e1", "r2", "e3", "r?"]);
    }

    pub async fn refused_rows_do_not_hide_good_rows(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "k", 1, b"one")).await.unwrap();
        h.insert_raw(raw(COUNTER, "k", 2, 7)).await;
        log.append(&entry(COUNTER, "k", 3, b"three")).await.unwrap();
        h.insert_raw(raw(COUNTER, "k", -4, 0)).await;
        h.insert_raw(raw(COUNTER, "k", 4, -1)).await;
        log.append(&entry(COUNTER, "k", 5, b"five")).await.unwrap();

        let rows = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
        assert_eq!(shape(&rows), ["e1", "r2", "e3", "r4", "e5", "r?"]);
        assert_eq!(as_entry(&rows[2]).payload, b"three");
        let unknown = refusal(&rows[1]);
        assert!(unknown.reason.contains("entry_type"), "{}", unknown.reason);
        assert!(unknown.reason.contains('7'), "{}", unknown.reason);
        assert_eq!(
            (unknown.grain_type.as_str(), unknown.grain_key.as_str()),
            (COUNTER, "k")
        );
        assert!(refusal(&rows[3]).reason.contains("entry_type"));
        let negative = refusal(&rows[5]);
        assert!(negative.reason.contains("sequence"), "{}", negative.reason);
        assert!(negative.reason.contains("-4"), "{}", negative.reason);

        // Valid rows come first, so a small limit never hides them.
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 0, 2).await.unwrap()),
            ["e1", "r2"]
        );
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 3, 100).await.unwrap()),
            ["r4", "e5", "r?"]
        );
        assert_eq!(log.latest_sequence(COUNTER, "k").await.unwrap(), 5);
        log.append(&entry(COUNTER, "k", 6, b"six")).await.unwrap();
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 5, 100).await.unwrap()),
            ["e6", "r?"]
        );
        // Truncation counts refused rows with a valid sequence, keeps the others.
        assert_eq!(log.truncate(COUNTER, "k", 6).await.unwrap(), 5);
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 0, 100).await.unwrap()),
            ["e6", "r?"]
        );
    }

    pub async fn awkward_grain_keys_round_trip(h: &dyn Harness) {
        let log = h.log();
        let keys = [
            "ключ/with/slashes",
            "it's \"quoted\"; --",
            "emoji 🦀 ✓",
            "",
            "a",
            "a ",
            "%_",
            "back\\slash",
        ];
        let grain_type = "Ünïcode::Type<'q'>";
        for (i, key) in keys.iter().enumerate() {
            let payload = key.as_bytes();
            log.append(&entry(grain_type, key, i as u64 + 1, payload))
                .await
                .unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            let rows = log.read_from(grain_type, key, 0, 10).await.unwrap();
            assert_eq!(
                rows,
                vec![LogRecord::Entry(entry(
                    grain_type,
                    key,
                    i as u64 + 1,
                    key.as_bytes()
                ))],
                "key {key:?}"
            );
        }
        let mut expected: Vec<(&str, u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u64 + 1))
            .collect();
        expected.sort();
        assert_eq!(
            sorted_heads(log.grain_heads(grain_type).await.unwrap()),
            heads(&expected)
        );
        assert_eq!(log.grain_types().await.unwrap(), [grain_type]);
    }

    pub async fn empty_and_multi_megabyte_payloads(h: &dyn Harness) {
        let log = h.log();
        let big = noise(3 * 1024 * 1024 + 17);
        log.append(&entry(COUNTER, "p", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "p", 2, &big)).await.unwrap();
        let rows = log.read_from(COUNTER, "p", 0, 10).await.unwrap();
        assert_eq!(shape(&rows), ["e1", "e2"]);
        assert!(as_entry(&rows[0]).payload.is_empty());
        assert!(
            as_entry(&rows[1]).payload == big,
            "3 MiB payload round-trips"
        );
    }

    pub async fn racing_appends_end_in_conflicts(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "race", 1, b"")).await.unwrap();

        // Eight appends of one sequence: one wins, the others conflict.
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(&entry(COUNTER, "race", 2, &[i])).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(2) => won += 1,
                Err(LogError::SequenceConflict { sequence: 2, .. }) => {}
                other => panic!("racing append: {other:?}"),
            }
        }
        assert_eq!(won, 1);

        // Distinct sequences at once: each stored or refused, never an error.
        let tasks: Vec<_> = (3..=10u64)
            .map(|s| {
                let log = log.clone();
                tokio::spawn(async move { log.append(&entry(COUNTER, "race", s, b"")).await })
            })
            .collect();
        let mut stored = vec![1, 2];
        for task in tasks {
            match task.await.unwrap() {
                Ok(s) => stored.push(s),
                Err(LogError::SequenceConflict { .. }) => {}
                other => panic!("racing append: {other:?}"),
            }
        }
        stored.sort();
        let rows = log.read_from(COUNTER, "race", 0, 100).await.unwrap();
        let read: Vec<u64> = rows.iter().map(|r| as_entry(r).sequence).collect();
        assert_eq!(read, stored, "exactly the successful appends are stored");
        assert!(
            stored.len() > 2,
            "the first of the distinct appends is stored"
        );
    }
}

// ---------------------------------------------------------------------------
// open()

#[tokio::test]
async fn open_memory_url_gives_a_working_log() {
    let log = replication_log::open("memory://").await.unwrap();
    log.append(&entry(COUNTER, "a", 1, b"x")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
}

#[tokio::test]
async fn open_rejects_unknown_schemes_naming_them() {
    for (url, named) in [
        ("redis://user:pw@localhost/0", "redis"),
        ("mysql://localhost/db", "mysql"),
    ] {
        match replication_log::open(url).await {
            Err(LogError::Config { message, .. }) => {
                assert!(message.contains(named), "{message}");
                assert!(!message.contains(":pw@"), "password shown: {message}");
            }
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url}: opened"),
        }
    }
    for url in ["no-scheme-here", "sqlite://", ""] {
        assert!(
            matches!(
                replication_log::open(url).await,
                Err(LogError::Config { .. })
            ),
            "{url:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// MemoryLog

#[tokio::test]
async fn memory_insert_raw_refuses_a_taken_key() {
    let log = MemoryLog::new();
    log.insert_raw(raw(COUNTER, "a", 1, 0)).unwrap();
    assert!(matches!(
        log.insert_raw(raw(COUNTER, "a", 1, 0)),
        Err(LogError::Backend { .. })
    ));
    assert_eq!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// SQLite

/// `target` as a path relative to the current directory.
fn relative_to_cwd(target: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let depth = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut relative: PathBuf = std::iter::repeat_n("..", depth).collect();
    relative.push(target.strip_prefix("/").unwrap());
    relative
}

#[tokio::test]
async fn sqlite_urls_open_relative_and_absolute_paths() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("sub.db");
    let relative = relative_to_cwd(&path);
    assert!(relative.is_relative());

    let log = replication_log::create(&format!("sqlite:{}", relative.display()))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"x")).await.unwrap();
    assert!(path.exists(), "created at the relative path");
    drop(log);

    let absolute = format!("sqlite://{}", path.display());
    assert!(absolute.starts_with("sqlite:///"));
    let log = replication_log::open(&absolute).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
    let log = replication_log::open(&format!("sqlite://{}", relative.display()))
        .await
        .unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_reads_what_an_orlando_primary_wrote() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("orlando.db");
    // The primary: Orlando's DDL and rows, no help from our backend.
    let primary = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    primary.execute(ORLANDO_SQLITE_DDL).await.unwrap();
    let insert = |key: &'static str, sequence: i64, entry_type: i64, payload: &'static [u8]| {
        let primary = primary.clone();
        async move {
            sqlx::query(SQLITE_INSERT)
                .bind(COUNTER)
                .bind(key)
                .bind(sequence)
                .bind(1_700_000_000_123_i64)
                .bind("us-east")
                .bind(entry_type)
                .bind(payload)
                .execute(&primary)
                .await
                .unwrap();
        }
    };
    insert("a", 1, 0, &[0x02]).await;
    insert("a", 2, 0, &[0x04]).await;
    insert("b", 7, 1, b"delta").await;

    let log = replication_log::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(
        rows,
        vec![
            LogRecord::Entry(LogEntry {
                timestamp_millis: 1_700_000_000_123,
                ..entry(COUNTER, "a", 1, &[0x02])
            }),
            LogRecord::Entry(LogEntry {
                timestamp_millis: 1_700_000_000_123,
                ..entry(COUNTER, "a", 2, &[0x04])
            }),
        ]
    );
    let b = log.read_from(COUNTER, "b", 0, 10).await.unwrap();
    assert_eq!(as_entry(&b[0]).entry_type, EntryType::Delta);
    assert_eq!(
        sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
        heads(&[("a", 2), ("b", 7)])
    );

    // The primary keeps writing while we read.
    insert("a", 3, 0, &[0x06]).await;
    assert_eq!(
        shape(&log.read_from(COUNTER, "a", 2, 10).await.unwrap()),
        ["e3"]
    );
    // A reader changes nothing: the file keeps the primary's journal mode.
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&sqlite_pool(&path).await)
        .await
        .unwrap();
    assert_eq!(mode, "delete");
    // And it cannot write: SQLITE_READONLY (8, in the low byte of the
    // extended code).
    let refused = log.append(&entry(COUNTER, "a", 4, b"")).await;
    assert!(
        matches!(&refused, Err(e @ LogError::Backend { .. })
            if common::db_code(e).and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff) == Some(8)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reader_follows_a_wal_writer_and_creates_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let writer = SqliteLog::create(&path).await.unwrap();
    writer.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
    // The last connection's close checkpoints and removes the -wal file
    // (on the connection's own worker thread, so shortly after `close`).
    writer.close().await;
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() {
        assert!(Instant::now() < deadline, "the writer's -wal file stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reader = SqliteLog::open(&path).await.unwrap();
    assert_eq!(reader.latest_sequence(COUNTER, "a").await.unwrap(), 1);
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.cursor.is_some());

    // A writer appends while the reader polls.
    let writer = SqliteLog::create(&path).await.unwrap();
    let appending = tokio::spawn(async move {
        for s in 2..=200 {
            writer.append(&entry(COUNTER, "a", s, b"")).await.unwrap();
        }
        writer.append(&entry(COUNTER, "b", 1, b"")).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 1;
    while seen < 200 {
        let now = reader.latest_sequence(COUNTER, "a").await.unwrap();
        assert!(now >= seen, "went back from {seen} to {now}");
        seen = now;
        assert!(Instant::now() < deadline, "stuck at {seen}");
    }
    appending.await.unwrap();
    let next = reader
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(!next.complete);
    assert_eq!(sorted_heads(next.heads), heads(&[("a", 200), ("b", 1)]));
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&sqlite_pool(&path).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    // A reader on a path that does not exist creates nothing.
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        SqliteLog::open(&missing).await,
        Err(LogError::Missing { message, .. }) if message.ends_with("missing.db: no such file")
    ));
    assert!(!missing.exists());
    // Nor a table in a database that has none.
    let empty = dir.path().join("empty.db");
    let raw = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&empty)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    raw.execute("CREATE TABLE other (x INTEGER)").await.unwrap();
    assert!(matches!(
        replication_log::open(&format!("sqlite://{}", empty.display())).await,
        Err(LogError::Missing { message, .. })
            if message.ends_with("empty.db: the database has no table replication_log")
    ));
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn sqlite_refuses_loosely_typed_rows() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("loose.db");
    let log = SqliteLog::create(&path).await.unwrap();
    let raw = sqlite_pool(&path).await;
    for (sequence, timestamp, entry_type, payload) in [
        ("1", "1", "0", "X'01'"),
        ("'seven'", "1", "0", "X'07'"),
        ("2", "1", "0", "'text payload'"),
        ("3", "1", "0", "X'03'"),
        ("4", "1", "'full'", "X'04'"),
        ("2.5", "1", "0", "X'25'"),
        ("5", "'yesterday'", "0", "X'05'"),
        ("6", "1", "0", "X'06'"),
    ] {
        raw.execute(
            format!(
                "INSERT INTO replication_log VALUES \
                 ('Counter', 'k', {sequence}, {timestamp}, 'us-east', {entry_type}, {payload})"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let rows = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
    assert_eq!(
        shape(&rows),
        ["e1", "r2", "e3", "r4", "r5", "e6", "r?", "r?"]
    );
    let reason = |i: usize| refusal(&rows[i]).reason.clone();
    assert!(
        reason(1).contains("payload: expected BLOB, found TEXT"),
        "{}",
        reason(1)
    );
    assert!(
        reason(3).contains("entry_type: expected INTEGER, found TEXT"),
        "{}",
        reason(3)
    );
    assert!(reason(4).contains("timestamp_millis"), "{}", reason(4));
    assert!(
        reason(6).contains("sequence: expected INTEGER, found REAL"),
        "{}",
        reason(6)
    );
    assert!(
        reason(7).contains("sequence: expected INTEGER, found TEXT"),
        "{}",
        reason(7)
    );
    assert_eq!(as_entry(&rows[5]).payload, [0x06]);

    assert_eq!(log.latest_sequence(COUNTER, "k").await.unwrap(), 6);
    assert_eq!(log.grain_heads(COUNTER).await.unwrap(), heads(&[("k", 6)]));
    assert_eq!(
        shape(&log.read_from(COUNTER, "k", 6, 100).await.unwrap()),
        ["r?", "r?"]
    );
    log.append(&entry(COUNTER, "k", 7, b"")).await.unwrap();
    assert_eq!(log.truncate(COUNTER, "k", 100).await.unwrap(), 7);
    assert_eq!(
        shape(&log.read_from(COUNTER, "k", 0, 100).await.unwrap()),
        ["r?", "r?"]
    );
}

#[tokio::test]
async fn sqlite_changes_since_uses_the_rowid_watermark() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::create(&path).await.unwrap();
    for key in ["a", "b"] {
        log.append(&entry(COUNTER, key, 1, b"")).await.unwrap();
    }
    let first = log.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.cursor.is_some());
    log.append(&entry(COUNTER, "b", 2, b"")).await.unwrap();
    let next = log
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(!next.complete, "an incremental answer");
    assert_eq!(next.heads, heads(&[("b", 2)]));

    // VACUUM may renumber rowids: the cursor notices when its row moved.
    let raw = sqlite_pool(&path).await;
    raw.execute("DELETE FROM replication_log WHERE grain_key = 'a'")
        .await
        .unwrap();
    raw.execute("VACUUM").await.unwrap();
    log.append(&entry(COUNTER, "e", 1, b"")).await.unwrap();
    let after = log
        .changes_since(COUNTER, next.cursor.as_ref())
        .await
        .unwrap();
    assert!(after.heads.contains(&heads(&[("e", 1)])[0]), "{after:?}");
}

#[tokio::test]
async fn sqlite_changes_since_lists_everything_without_a_rowid() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("norowid.db");
    let raw = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    raw.execute(
        "CREATE TABLE replication_log (grain_type TEXT NOT NULL, grain_key TEXT NOT NULL,
         sequence INTEGER NOT NULL, timestamp_millis INTEGER NOT NULL,
         source_cluster TEXT NOT NULL, entry_type INTEGER NOT NULL, payload BLOB NOT NULL,
         PRIMARY KEY (grain_type, grain_key, sequence)) WITHOUT ROWID",
    )
    .await
    .unwrap();
    let log = SqliteLog::create(&path).await.unwrap();
    log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
    for _ in 0..2 {
        let changes = log.changes_since(COUNTER, None).await.unwrap();
        assert!(changes.complete);
        assert!(changes.cursor.is_none());
        assert_eq!(changes.heads, heads(&[("a", 1)]));
    }
}

#[tokio::test]
async fn sqlite_refuses_nulls_of_a_looser_table() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nullable.db");
    let raw = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    // An older writer's table without NOT NULL; our CREATE IF NOT EXISTS keeps it.
    raw.execute(
        "CREATE TABLE replication_log (grain_type TEXT, grain_key TEXT, sequence INTEGER,
         timestamp_millis INTEGER, source_cluster TEXT, entry_type INTEGER, payload BLOB,
         PRIMARY KEY (grain_type, grain_key, sequence))",
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO replication_log VALUES
         ('Counter', 'k', 1, 1, 'us-east', 0, NULL),
         ('Counter', 'k', 2, 1, X'0102', 0, X'02'),
         ('Counter', 'k', 3, 1, 'us-east', 0, X'03')",
    )
    .await
    .unwrap();
    let log = SqliteLog::open(&path).await.unwrap();
    let rows = log.read_from(COUNTER, "k", 0, 10).await.unwrap();
    assert_eq!(shape(&rows), ["r1", "r2", "e3"]);
    assert!(
        refusal(&rows[0])
            .reason
            .contains("payload: expected BLOB, found NULL")
    );
    assert!(
        refusal(&rows[1])
            .reason
            .contains("source_cluster: expected TEXT, found BLOB")
    );
}

#[tokio::test]
async fn sqlite_locked_database_is_unavailable_but_readable() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("locked.db");
    let log = SqliteLog::create_with_busy_timeout(&path, Duration::from_millis(300))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();

    let mut writer = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();
    writer
        .execute("INSERT INTO replication_log VALUES ('Counter', 'a', 2, 1, 'us-east', 0, X'00')")
        .await
        .unwrap();

    let started = Instant::now();
    match log.append(&entry(COUNTER, "a", 3, b"")).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("locked.db"), "{message}")
        }
        other => panic!("append to a locked database: {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "busy timeout waited"
    );
    // WAL: the writer does not block readers, who see only committed rows.
    assert_eq!(
        shape(&log.read_from(COUNTER, "a", 0, 10).await.unwrap()),
        ["e1"]
    );

    writer.execute("COMMIT").await.unwrap();
    log.append(&entry(COUNTER, "a", 3, b"")).await.unwrap();
    assert_eq!(
        shape(&log.read_from(COUNTER, "a", 0, 10).await.unwrap()),
        ["e1", "e2", "e3"]
    );
}

#[tokio::test]
async fn sqlite_unopenable_file_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("missing-dir").join("log.db");
    match SqliteLog::create(&path).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("missing-dir"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A reader does not even try: the file is missing.
    match SqliteLog::open(&path).await {
        Err(LogError::Missing { message, .. }) => {
            assert!(
                message.contains("missing-dir/log.db: no such file"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sqlite_closed_log_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let log = SqliteLog::create(dir.path().join("closed.db"))
        .await
        .unwrap();
    log.ping().await.unwrap();
    log.close().await;
    let err = log.ping().await.unwrap_err();
    assert!(matches!(err, LogError::Unavailable { .. }), "{err:?}");
    // One line naming the file, and the driver's error kept as the source.
    let path = dir.path().join("closed.db");
    assert_eq!(
        err.to_string(),
        format!(
            "log backend unavailable: sqlite {}: {}",
            path.display(),
            sqlx::Error::PoolClosed
        )
    );
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(
        matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolClosed)
        ),
        "{source:?}"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_table_is_created_in_the_isolated_schema() {
    let Some(schema) = pg::isolated_schema("table_in_schema").await else {
        return;
    };
    let log = replication_log::create(schema.url()).await.unwrap();
    log.ping().await.unwrap();
    let mut admin = schema.admin().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = $1 AND table_name = 'replication_log'",
    )
    .bind(schema.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(tables, 1);
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'replication_log' ORDER BY ordinal_position",
    )
    .bind(schema.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("grain_type", "text"),
            ("grain_key", "text"),
            ("sequence", "bigint"),
            ("timestamp_millis", "bigint"),
            ("source_cluster", "text"),
            ("entry_type", "smallint"),
            ("payload", "bytea"),
        ]
    );
}

#[tokio::test]
async fn postgres_reads_what_an_orlando_primary_wrote() {
    let Some(schema) = pg::isolated_schema("orlando_primary").await else {
        return;
    };
    let primary = PgPool::connect(schema.url()).await.unwrap();
    primary.execute(ORLANDO_POSTGRES_DDL).await.unwrap();
    for (key, sequence, entry_type) in [("a", 1_i64, 0_i16), ("a", 2, 0), ("b", 9, 1)] {
        sqlx::query(POSTGRES_INSERT)
            .bind(COUNTER)
            .bind(key)
            .bind(sequence)
            .bind(1_700_000_000_123_i64)
            .bind("us-east")
            .bind(entry_type)
            .bind(vec![sequence as u8])
            .execute(&primary)
            .await
            .unwrap();
    }
    // Through the `postgresql://` spelling of the scheme.
    let url = format!("postgresql://{}", schema.url().split_once("://").unwrap().1);
    assert!(url.starts_with("postgresql://"));
    let log = replication_log::open(&url).await.unwrap();
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(
        rows,
        vec![
            LogRecord::Entry(LogEntry {
                timestamp_millis: 1_700_000_000_123,
                ..entry(COUNTER, "a", 1, &[1])
            }),
            LogRecord::Entry(LogEntry {
                timestamp_millis: 1_700_000_000_123,
                ..entry(COUNTER, "a", 2, &[2])
            }),
        ]
    );
    let b = log.read_from(COUNTER, "b", 0, 10).await.unwrap();
    assert_eq!(as_entry(&b[0]).entry_type, EntryType::Delta);
    assert_eq!(
        sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
        heads(&[("a", 2), ("b", 9)])
    );
    assert_eq!(log.grain_types().await.unwrap(), [COUNTER]);
}

/// `url` with `user:password@` as its user info.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test]
async fn postgres_reader_without_create_rights_opens_the_primary_table() {
    let Some(schema) = pg::isolated_schema("reader_role").await else {
        return;
    };
    let owner = PostgresLog::create(schema.url()).await.unwrap();
    owner.append(&entry(COUNTER, "a", 1, b"one")).await.unwrap();
    let role = format!("{}_reader", schema.name());
    let mut admin = schema.admin().await;
    for sql in [
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'reader-pw'"),
        format!("GRANT USAGE ON SCHEMA \"{}\" TO \"{role}\"", schema.name()),
        format!(
            "GRANT SELECT ON \"{}\".replication_log TO \"{role}\"",
            schema.name()
        ),
    ] {
        admin.execute(sql.as_str()).await.unwrap();
    }

    // The host as a pure reader: CREATE TABLE is denied, the table is there.
    let reader_url = with_user(schema.url(), &role, "reader-pw");
    let outcome = async {
        let reader = PostgresLog::connect(&reader_url).await?;
        let rows = reader.read_from(COUNTER, "a", 0, 10).await?;
        let append = reader.append(&entry(COUNTER, "a", 2, b"")).await;
        reader.close().await;
        Ok::<_, LogError>((rows, append))
    }
    .await;
    for sql in [
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE \"{role}\""),
    ] {
        admin.execute(sql.as_str()).await.unwrap();
    }

    let (rows, append) = outcome.expect("a reader opens and reads the log");
    assert_eq!(shape(&rows), ["e1"]);
    // The reader's sessions are read-only, whatever its rights:
    // read_only_sql_transaction.
    assert!(
        matches!(&append, Err(e @ LogError::Backend { .. })
            if common::db_code(e).as_deref() == Some("25006")),
        "{append:?}"
    );
}

/// The backend pids of the connections made through `schema`'s URL.
async fn schema_backends(schema: &PgSchema) -> Vec<i32> {
    let mut admin = schema.admin().await;
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(schema.name())
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recovers_after_its_connections_are_terminated() {
    let Some(schema) = pg::isolated_schema("terminated").await else {
        return;
    };
    let log = PostgresLog::create(schema.url()).await.unwrap();
    for s in 1..=3 {
        log.append(&entry(COUNTER, "a", s, &[s as u8]))
            .await
            .unwrap();
    }
    assert_eq!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().len(), 3);

    let before = schema_backends(&schema).await;
    assert!(!before.is_empty(), "the pool holds connections");
    let mut admin = schema.admin().await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(schema.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(terminated.iter().any(|t| *t), "terminated {terminated:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while schema_backends(&schema)
        .await
        .iter()
        .any(|p| before.contains(p))
    {
        assert!(Instant::now() < deadline, "backends did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next call finds the dead connections and opens new ones.
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(shape(&rows), ["e1", "e2", "e3"], "nothing lost");
    assert_eq!(as_entry(&rows[2]).payload, [3]);
    log.append(&entry(COUNTER, "a", 4, b"")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 4);
    let after = schema_backends(&schema).await;
    assert!(!after.is_empty() && after.iter().all(|p| !before.contains(p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_then_heals() {
    let Some(schema) = pg::isolated_schema("outage").await else {
        return;
    };
    let relay = Relay::start(relay::upstream_of(schema.url()).await, 0).await;
    let url = relay::via_port(schema.url(), relay.port);
    let log = PostgresLog::create_with_timeout(&url, Duration::from_millis(1500))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"one")).await.unwrap();
    log.append(&entry(COUNTER, "a", 2, b"two")).await.unwrap();

    let (upstream, port) = relay.cut().await;
    for attempt in [
        log.read_from(COUNTER, "a", 0, 10).await.map(drop),
        log.ping().await,
        log.append(&entry(COUNTER, "a", 3, b"")).await.map(drop),
    ] {
        match attempt {
            Err(LogError::Unavailable { message, .. }) => {
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}")
            }
            other => panic!("during the outage: {other:?}"),
        }
    }

    let relay = Relay::start(upstream, port).await;
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(
        shape(&rows),
        ["e1", "e2"],
        "nothing lost, nothing half-written"
    );
    log.append(&entry(COUNTER, "a", 3, b"three")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 3);
    relay.cut().await;
}

#[tokio::test]
async fn postgres_unreachable_server_is_unavailable_without_the_password() {
    // Nothing listens on port 1; no server is needed for this one.
    let url = "postgres://orlando:hunter2@127.0.0.1:1/replication";
    let started = Instant::now();
    match PostgresLog::connect_with_timeout(url, Duration::from_millis(300)).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("127.0.0.1:1/replication"), "{message}");
            assert!(!message.contains("hunter2"), "password shown: {message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
