//! The consumer with real Wasm plugins over a real SQLite file and a real
//! PostgreSQL server: newest FullState wins, Deltas and uninterpretable rows
//! never reach a plugin, a failing grain leaves the others current, grains
//! created while running are found, a dropped connection loses nothing, and
//! shutdown is clean.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replica_e2e::payloads::counter;
use replica_e2e::{pg, plugin};
use replica_host::Shutdown;
use replica_host::Value;
use replica_host::replication_log::{self, EntryType, LogEntry, LogWriter};
use replica_host::{ConsumerConfig, Replicator, SnapshotDecoder};
use replica_host::{DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits};
use replica_host::{ReplicaStatus, ReplicaStore};

const POLL: Duration = Duration::from_millis(20);

fn entry(
    grain_type: &str,
    key: &str,
    sequence: u64,
    entry_type: EntryType,
    payload: Vec<u8>,
) -> LogEntry {
    LogEntry {
        grain_type: grain_type.into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: replica_host::test_seam::now_millis(),
        source_cluster: "us-east".into(),
        entry_type,
        payload: payload.into(),
    }
}

fn count_of(store: &ReplicaStore, key: &str) -> Option<i64> {
    let replica = store.get("Counter", key)?;
    match replica.state?.field("count")? {
        Value::I64(n) => Some(n),
        _ => None,
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the scenario; `insert_bad_row` writes a row with `entry_type` 7 at
/// the given sequence; `drop_connections` cuts the host's connections.
async fn scenario<F, G>(log: Arc<dyn LogWriter>, insert_bad_row: F, drop_connections: Option<G>)
where
    F: AsyncFn(&str, u64),
    G: AsyncFn(),
{
    use EntryType::{Delta, FullState};
    let writes = [
        ("Counter", "good-1", 1, FullState, counter(1)),
        ("Counter", "good-1", 2, FullState, vec![0xff, 0xff]),
        ("Counter", "good-1", 3, FullState, counter(3)),
        ("Counter", "mixed", 1, FullState, counter(1)),
        ("Counter", "mixed", 2, Delta, vec![2]),
        ("Counter", "mixed", 3, FullState, counter(3)),
        ("Counter", "delta-last", 1, FullState, counter(1)),
        ("Counter", "delta-last", 2, Delta, vec![2]),
        ("Counter", "bad-row", 1, FullState, counter(1)),
        ("Counter", "bad-row", 3, FullState, counter(3)),
        ("Counter", "bad-row-last", 1, FullState, counter(1)),
        ("Counter", "newest-bad", 1, FullState, counter(1)),
        ("Counter", "newest-bad", 2, FullState, counter(2)),
        ("Counter", "newest-bad", 3, FullState, b"garbage!".to_vec()),
        ("Misbehave", "traps", 1, FullState, b"panic".to_vec()),
        ("Misbehave", "fine", 1, FullState, counter(42)),
    ];
    for (grain_type, key, seq, kind, payload) in writes {
        log.append(&entry(grain_type, key, seq, kind, payload))
            .await
            .unwrap();
    }
    insert_bad_row("bad-row", 2).await;
    insert_bad_row("bad-row-last", 2).await;

    let engine = PluginEngine::new().unwrap();
    let counter_plugin = Arc::new(
        LoadedPlugin::load(&engine, &plugin("counter-plugin"), PluginLimits::default()).unwrap(),
    );
    let misbehave = Arc::new(
        LoadedPlugin::load(
            &engine,
            &plugin("misbehave-plugin"),
            PluginLimits::default(),
        )
        .unwrap(),
    );
    let slots = DecodeSlots::per_core();
    let mut decoders: HashMap<String, Arc<dyn SnapshotDecoder>> = HashMap::new();
    decoders.insert(
        "Counter".into(),
        Arc::new(PluginDecoder::new(counter_plugin.clone(), slots.clone())),
    );
    decoders.insert(
        "Misbehave".into(),
        Arc::new(PluginDecoder::new(misbehave.clone(), slots)),
    );
    let store = Arc::new(ReplicaStore::new());
    let config = ConsumerConfig {
        poll_interval: POLL,
        ..ConsumerConfig::default()
    };
    let stopping = Shutdown::new();
    let replicator =
        Replicator::new(log.clone(), store.clone(), decoders, config).spawn(stopping.signal());

    wait_until("all grains applied", || {
        count_of(&store, "good-1") == Some(3)
            && count_of(&store, "mixed") == Some(3)
            && count_of(&store, "delta-last") == Some(1)
            && count_of(&store, "bad-row") == Some(3)
            && count_of(&store, "bad-row-last") == Some(1)
            && count_of(&store, "newest-bad") == Some(2)
            && store
                .get("Misbehave", "fine")
                .is_some_and(|r| r.has_state())
            && store
                .get("Misbehave", "traps")
                .is_some_and(|r| r.status.label() == "failing")
    })
    .await;

    // Newest FullState wins; the malformed one in between never mattered.
    assert_eq!(
        store.get("Counter", "good-1").unwrap().status,
        ReplicaStatus::Ok
    );
    assert_eq!(
        store.get("Counter", "mixed").unwrap().status,
        ReplicaStatus::Ok
    );
    // A Delta or an uninterpretable row after the applied snapshot: behind.
    assert_eq!(
        store.get("Counter", "delta-last").unwrap().status,
        ReplicaStatus::Behind { delta_sequence: 2 }
    );
    assert_eq!(
        store.get("Counter", "bad-row-last").unwrap().status,
        ReplicaStatus::Behind { delta_sequence: 2 }
    );
    // The newest snapshot does not decode: the next newest is applied, and the grain is failing at 3.
    let newest_bad = store.get("Counter", "newest-bad").unwrap();
    assert!(
        matches!(&newest_bad.status, ReplicaStatus::Failing { sequence: 3, reason } if reason.contains("malformed_payload")),
        "{:?}",
        newest_bad.status
    );
    // A trapping grain: failing, with the panic message; its neighbour is current.
    let traps = store.get("Misbehave", "traps").unwrap();
    assert!(
        matches!(&traps.status, ReplicaStatus::Failing { sequence: 1, reason } if reason.contains("deliberate panic")),
        "{:?}",
        traps.status
    );
    assert!(!traps.has_state());

    // Exactly one successful call per grain's newest decodable snapshot
    // (newest-bad's is its fallback, seq 2): no Delta or bad row ever
    // reached the plugin, and no older snapshot was decoded. newest-bad's
    // garbage snapshot fails, and a failing grain's newest snapshot is
    // tried again after a backoff of up to 100 ms, so the failed calls are
    // counted apart (a retry may be under way: calls are counted as they
    // start, failures as they end).
    let stats = counter_plugin.stats();
    wait_until("no call under way", || {
        let failures = stats.failures();
        let calls = stats.calls();
        failures == stats.failures() && calls - failures == 6
    })
    .await;
    assert!(
        stats.failures() >= 1,
        "newest-bad's garbage snapshot was decoded and failed"
    );

    // Grains created while running.
    log.append(&entry("Counter", "late", 5, FullState, counter(5)))
        .await
        .unwrap();
    wait_until("the late grain", || count_of(&store, "late") == Some(5)).await;

    // The backend's connections drop; nothing is lost.
    if let Some(drop_connections) = drop_connections {
        drop_connections().await;
        log.append(&entry("Counter", "late", 6, FullState, counter(6)))
            .await
            .unwrap();
        log.append(&entry("Counter", "after-drop", 1, FullState, counter(11)))
            .await
            .unwrap();
        wait_until("entries after the drop", || {
            count_of(&store, "late") == Some(6) && count_of(&store, "after-drop") == Some(11)
        })
        .await;
    }

    // Clean shutdown within a poll interval (plus scheduling slack).
    let started = Instant::now();
    stopping.stop();
    tokio::time::timeout(Duration::from_secs(5), replicator)
        .await
        .expect("replicator stops")
        .unwrap();
    assert!(
        started.elapsed() < POLL * 10,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replication.db");
    let url = format!("sqlite://{}", path.display());
    let log = replication_log::create(&url).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let insert_bad_row = async |key: &str, seq: u64| {
        sqlx::query("INSERT INTO replication_log VALUES ('Counter', ?, ?, 0, 'us-east', 7, x'00')")
            .bind(key)
            .bind(seq as i64)
            .execute(&raw)
            .await
            .unwrap();
    };
    scenario(log, insert_bad_row, None::<fn() -> std::future::Ready<()>>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server() {
    let Some(schema) = pg::isolated_schema("replication").await else {
        return;
    };
    let log = replication_log::create(schema.url()).await.unwrap();
    let raw = sqlx::PgPool::connect(schema.url()).await.unwrap();
    let insert_bad_row = async |key: &str, seq: u64| {
        sqlx::query(
            "INSERT INTO replication_log VALUES ('Counter', $1, $2, 0, 'us-east', 7, '\\x00')",
        )
        .bind(key)
        .bind(seq as i64)
        .execute(&raw)
        .await
        .unwrap();
    };
    let name = schema.name().to_string();
    let admin_url = schema.admin_url().to_string();
    let drop_connections = async || {
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "no connection of the host found");
    };
    scenario(log, insert_bad_row, Some(drop_connections)).await;
    drop(raw);
}
