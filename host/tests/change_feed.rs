//! The PostgreSQL change feed against a real server: exactly-once windows
//! under concurrent writers, transactions still in flight, the fallback to
//! the full listing, the cursor a cold start takes without listing, and
//! `replica-host log enable-change-feed` through the real binary. Each test
//! works in a schema of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use replica_host::replication_log::{
    ChangeCursor, EntryType, LogEntry, LogError, LogWriter, PostgresLog, ReplicationLog,
    pg_change_feed,
};
use replica_test_support::pg::{self, PgSchema};
use replica_test_support::{change_feed, orlando};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Executor};

const COUNTER: &str = "Counter";

fn entry(grain_key: &str, sequence: u64) -> LogEntry {
    LogEntry {
        grain_type: COUNTER.to_owned(),
        grain_key: grain_key.to_owned(),
        sequence,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east".to_owned(),
        entry_type: EntryType::FullState,
        payload: vec![sequence as u8].into(),
    }
}

/// An append as Orlando makes it: one READ COMMITTED transaction that
/// checks the grain's newest sequence, then inserts.
async fn orlando_append(primary: &PgPool, grain_key: &str, sequence: i64) {
    let mut tx = primary.begin().await.unwrap();
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(sequence) FROM replication_log WHERE grain_type = $1 AND grain_key = $2",
    )
    .bind(COUNTER)
    .bind(grain_key)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(newest.unwrap_or(0) < sequence, "{grain_key}/{sequence}");
    orlando::postgres_insert(&mut *tx, grain_key, sequence).await;
    tx.commit().await.unwrap();
}

async fn enable(schema: &PgSchema) -> Vec<String> {
    let done = pg_change_feed::enable(schema.url(), false, |_| {})
        .await
        .expect("enable the change feed");
    assert!(done.applied);
    done.statements
}

fn heads_map(heads: &[replica_host::replication_log::GrainHead]) -> BTreeMap<String, u64> {
    heads
        .iter()
        .map(|h| (h.grain_key.clone(), h.latest_sequence))
        .collect()
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_report_every_row_exactly_once_under_concurrent_writers() {
    const WRITERS: usize = 4;
    const GRAINS_PER_WRITER: usize = 40;
    let Some((schema, primary)) = orlando::postgres_schema("feed_exactly_once").await else {
        return;
    };
    // Rows from before the column existed (replica_tx NULL).
    for g in 0..10 {
        orlando::postgres_insert(&primary, &format!("w0-g{g}"), 1).await;
    }
    enable(&schema).await;
    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    assert!(reader.change_feed_enabled());

    // The first answer lists everything (here: the rows from before the
    // column, which no window reports again), then come windows.
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete);
    let mut reported: BTreeMap<String, u64> = heads_map(&first.heads);
    assert_eq!(reported.len(), 10);
    let mut cursor: ChangeCursor = first.cursor.expect("a cursor");

    // Each grain's final sequence differs, so its last row lands in any
    // window: a row a window missed would leave its grain short.
    let last = |w: usize, g: usize| 1 + ((w * 7 + g * 13) % 9) as u64;
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let primary = primary.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for round in 1..=10u64 {
                for g in 0..GRAINS_PER_WRITER {
                    // w0's first ten grains already have sequence 1.
                    let start = if w == 0 && g < 10 { 2 } else { 1 };
                    if round >= start && round <= last(w, g) {
                        let key = format!("w{w}-g{g}");
                        orlando_append(&primary, &key, round as i64).await;
                        written.push((key, round));
                    }
                }
            }
            written
        }));
    }

    let mut windows = 0;
    let poll = |cursor: ChangeCursor| {
        let reader = &reader;
        async move { reader.changes_since(COUNTER, Some(&cursor)).await.unwrap() }
    };
    let writers_done = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut all = Vec::new();
            for w in writers {
                all.extend(w.await.unwrap());
            }
            done.store(true, Ordering::SeqCst);
            all
        })
    };
    let mut check = |changes: replica_host::replication_log::HeadChanges,
                     reported: &mut BTreeMap<String, u64>| {
        assert!(!changes.complete, "a window, not a listing");
        for head in &changes.heads {
            let before = reported.get(&head.grain_key).copied().unwrap_or(0);
            // Per grain, rows commit in sequence order (each grain has one
            // writer), so a row reported twice shows as a head not above the
            // one reported before.
            assert!(
                head.latest_sequence > before,
                "{} reported again: head {} after {before}",
                head.grain_key,
                head.latest_sequence
            );
            reported.insert(head.grain_key.clone(), head.latest_sequence);
        }
        windows += 1;
        changes.cursor.expect("a cursor")
    };
    while !done.load(Ordering::SeqCst) {
        let changes = poll(cursor.clone()).await;
        cursor = check(changes, &mut reported);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let written = writers_done.await.unwrap();
    let mut expected: BTreeMap<String, u64> = (0..10).map(|g| (format!("w0-g{g}"), 1)).collect();
    for (key, sequence) in &written {
        let head = expected.entry(key.clone()).or_default();
        *head = (*head).max(*sequence);
    }
    assert_eq!(expected.len(), WRITERS * GRAINS_PER_WRITER);
    // Once every writer has committed, the windows catch up (another
    // session's open transaction may hold the bound back for a while).
    let deadline = Instant::now() + Duration::from_secs(60);
    while reported != expected {
        assert!(
            Instant::now() < deadline,
            "rows never reported: {:?}",
            expected
                .iter()
                .filter(|(k, s)| reported.get(*k) != Some(s))
                .take(10)
                .collect::<Vec<_>>()
        );
        let changes = poll(cursor.clone()).await;
        cursor = check(changes, &mut reported);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every appended (grain, sequence) was covered by a head at or above it.
    for (key, sequence) in &written {
        assert!(reported[key] >= *sequence, "{key}/{sequence}");
    }
    // Nothing more to report: later windows are empty.
    for _ in 0..3 {
        let changes = poll(cursor.clone()).await;
        assert!(changes.heads.is_empty(), "{:?}", changes.heads);
        cursor = check(changes, &mut reported);
    }
    assert!(windows > 3, "only {windows} windows");
    assert!(written.len() > 500, "{} rows", written.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_flight_holds_later_commits_back_and_is_not_missed() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_in_flight").await else {
        return;
    };
    enable(&schema).await;
    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.heads.is_empty());
    let mut cursor = first.cursor.unwrap();

    // The early transaction begins and inserts (gets its xid) first...
    let mut early = PgConnection::connect(schema.url()).await.unwrap();
    early.execute("BEGIN").await.unwrap();
    orlando::postgres_insert(&mut early, "early", 1).await;
    // ...a later one commits while the early one is still open.
    orlando::postgres_insert(&primary, "late", 1).await;
    assert_eq!(
        reader.latest_sequence(COUNTER, "late").await.unwrap(),
        1,
        "the later row is committed and visible"
    );
    for _ in 0..3 {
        let changes = reader.changes_since(COUNTER, Some(&cursor)).await.unwrap();
        assert!(!changes.complete);
        assert!(
            changes.heads.is_empty(),
            "reported before the earlier transaction finished: {:?}",
            changes.heads
        );
        cursor = changes.cursor.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    early.execute("COMMIT").await.unwrap();
    let mut seen: Vec<(String, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "still missing after commit: {seen:?}"
        );
        let changes = reader.changes_since(COUNTER, Some(&cursor)).await.unwrap();
        seen.extend(
            changes
                .heads
                .iter()
                .map(|h| (h.grain_key.clone(), h.latest_sequence)),
        );
        cursor = changes.cursor.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let changes = reader.changes_since(COUNTER, Some(&cursor)).await.unwrap();
        seen.extend(
            changes
                .heads
                .iter()
                .map(|h| (h.grain_key.clone(), h.latest_sequence)),
        );
        cursor = changes.cursor.unwrap();
    }
    seen.sort();
    assert_eq!(
        seen,
        [("early".to_owned(), 1), ("late".to_owned(), 1)],
        "each reported exactly once"
    );
}

#[tokio::test]
async fn without_the_column_every_call_is_the_full_listing() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_fallback").await else {
        return;
    };
    orlando::postgres_insert(&primary, "a", 1).await;
    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    assert!(!reader.change_feed_enabled());
    assert!(
        reader.change_cursor(COUNTER).await.unwrap().is_none(),
        "no cursor without the feed: a cold start lists first"
    );
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.cursor.is_none());
    assert_eq!(heads_map(&first.heads), BTreeMap::from([("a".into(), 1)]));
    orlando::postgres_insert(&primary, "b", 4).await;
    let next = reader
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(next.complete && next.cursor.is_none());
    assert_eq!(
        heads_map(&next.heads),
        BTreeMap::from([("a".into(), 1), ("b".into(), 4)])
    );
    assert_eq!(
        change_feed::catalog(&schema).await,
        (None, None),
        "the reader added nothing"
    );
}

#[tokio::test]
async fn the_change_cursor_lists_only_what_commits_after_it() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_cursor").await else {
        return;
    };
    enable(&schema).await;
    orlando::postgres_insert(&primary, "a", 1).await;
    orlando::postgres_insert(&primary, "c", 1).await;
    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    // What a cold start takes before its scan, without listing.
    let cursor = reader
        .change_cursor(COUNTER)
        .await
        .unwrap()
        .expect("a cursor with the feed on");
    orlando::postgres_insert(&primary, "b", 2).await;
    orlando::postgres_insert(&primary, "a", 3).await;
    let next = reader.changes_since(COUNTER, Some(&cursor)).await.unwrap();
    assert!(!next.complete, "an incremental answer");
    assert_eq!(
        heads_map(&next.heads),
        BTreeMap::from([("a".into(), 3), ("b".into(), 2)]),
        "c, written only before the cursor, is the scan's"
    );
}

#[tokio::test]
async fn a_dropped_column_falls_back_to_the_full_listing() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_dropped").await else {
        return;
    };
    enable(&schema).await;
    orlando::postgres_insert(&primary, "a", 1).await;
    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    assert!(reader.change_feed_enabled());
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    primary
        .execute("ALTER TABLE replication_log DROP COLUMN replica_tx")
        .await
        .unwrap();
    orlando::postgres_insert(&primary, "b", 2).await;
    let next = reader
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(next.complete && next.cursor.is_none());
    assert_eq!(
        heads_map(&next.heads),
        BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
    );
    assert!(!reader.change_feed_enabled());
}

#[tokio::test]
async fn orlandos_insert_fills_replica_tx_and_old_rows_come_from_the_listing() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_orlando_insert").await else {
        return;
    };
    orlando::postgres_insert(&primary, "old", 1).await;
    enable(&schema).await;
    orlando::postgres_insert(&primary, "new", 1).await;
    let filled: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT grain_key, replica_tx::text FROM replication_log ORDER BY grain_key",
    )
    .fetch_all(&primary)
    .await
    .unwrap();
    assert_eq!(filled[0].0, "new");
    assert!(
        filled[0]
            .1
            .as_ref()
            .is_some_and(|x| x.parse::<u64>().is_ok()),
        "{filled:?}"
    );
    assert_eq!(filled[1], ("old".to_owned(), None));

    let reader = PostgresLog::connect(schema.url()).await.unwrap();
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete);
    assert_eq!(
        heads_map(&first.heads),
        BTreeMap::from([("new".into(), 1), ("old".into(), 1)])
    );
    // The writer's append keeps working too, and the next window has it.
    let writer = PostgresLog::create(schema.url()).await.unwrap();
    writer.append(&entry("new", 2)).await.unwrap();
    let mut cursor = first.cursor.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let next = reader.changes_since(COUNTER, Some(&cursor)).await.unwrap();
        assert!(!next.complete);
        cursor = next.cursor.unwrap();
        if !next.heads.is_empty() {
            assert_eq!(heads_map(&next.heads), BTreeMap::from([("new".into(), 2)]));
            break;
        }
        assert!(Instant::now() < deadline, "the new row was never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reader_refuses_a_missing_table_or_database_and_creates_nothing() {
    let Some(schema) = pg::isolated_schema("reader_no_table").await else {
        return;
    };
    match PostgresLog::connect(schema.url()).await {
        Err(LogError::Missing { message: m, .. }) => {
            assert!(
                m.contains("the database has no table replication_log"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut admin = schema.admin().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(tables, 0, "the reader created a table");

    let (base, _) = pg::server_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .unwrap();
    match PostgresLog::connect(&format!("{base}/no_such_db_for_reader")).await {
        Err(LogError::Missing { message: m, .. }) => assert!(
            m.contains("database \"no_such_db_for_reader\" does not exist"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let databases: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert!(!databases.iter().any(|d| d == "no_such_db_for_reader"));
}
