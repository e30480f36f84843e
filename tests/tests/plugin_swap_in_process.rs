//! Swapping a grain type's decoder while the replicator runs
//! ([`ReplicatorControl`]): every replica decoded again from its applied
//! snapshot through the bulk catch-up, never going backwards; a snapshot the
//! new decoder refuses leaves the grain failing with its last good state; a
//! grain failing under the old decoder recovers; removing stops the type.
//!
//! The in-process half of the plugin swap topic, with native decoders; the
//! swap through the real binary (SIGHUP, the admin reload) is
//! `plugin_swap.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use replica_host::consumer::{ConsumerConfig, Replicator, SnapshotDecoder};
use replica_host::decode::DecodedBy;
use replica_host::plugin::{CallError, CallErrorKind};
use replica_host::replication_log::{EntryType, LogEntry, LogWriter, MemoryLog, ReplicationLog};
use replica_host::shutdown::Shutdown;
use replica_host::store::{ChangeKind, ReplicaStatus, ReplicaStore};
use replica_host::value::{State, Value};

const COUNTER: &str = "Counter";

/// Decodes an 8-byte count as `{count}` (v1) or `{count, doubled}` (v2);
/// refuses the payloads listed in `refuses`; records every call.
struct Decoder {
    version: u32,
    refuses: Vec<i64>,
    calls: Mutex<Vec<(String, u64)>>,
    by: Arc<DecodedBy>,
}

impl Decoder {
    fn new(version: u32, refuses: &[i64]) -> Arc<Self> {
        Arc::new(Self {
            version,
            refuses: refuses.to_vec(),
            calls: Mutex::default(),
            by: Arc::new(DecodedBy {
                plugin: format!("counter-v{version}.wasm"),
                sha256: format!("{version:064}"),
                schema_version: version.to_string(),
            }),
        })
    }

    fn calls(&self) -> Vec<(String, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl SnapshotDecoder for Decoder {
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
        self.calls
            .lock()
            .unwrap()
            .push((entry.grain_key.clone(), entry.sequence));
        let count = i64::from_le_bytes(entry.payload.as_ref().try_into().unwrap());
        if self.refuses.contains(&count) {
            return Err(CallError {
                plugin: self.by.plugin.clone(),
                grain_type: entry.grain_type.clone(),
                grain_key: entry.grain_key.clone(),
                sequence: entry.sequence,
                kind: CallErrorKind::MalformedPayload,
                message: format!("v{} refuses {count}", self.version),
            });
        }
        #[derive(serde::Serialize)]
        struct V1 {
            count: i64,
        }
        #[derive(serde::Serialize)]
        struct V2 {
            count: i64,
            doubled: i64,
        }
        Ok(if self.version == 1 {
            State::from_serialize(&V1 { count })
        } else {
            State::from_serialize(&V2 {
                count,
                doubled: count * 2,
            })
        }
        .unwrap())
    }

    fn decoded_by(&self) -> Option<Arc<DecodedBy>> {
        Some(Arc::clone(&self.by))
    }
}

fn entry(key: &str, sequence: u64, entry_type: EntryType, count: i64) -> LogEntry {
    LogEntry {
        grain_type: COUNTER.into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "primary".into(),
        entry_type,
        payload: count.to_le_bytes().to_vec().into(),
    }
}

fn count_of(store: &ReplicaStore, key: &str) -> Option<Value> {
    store.get(COUNTER, key)?.state?.field("count")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_redecodes_every_replica_in_place() {
    const GRAINS: usize = 300;
    let log = Arc::new(MemoryLog::new());
    for n in 0..GRAINS {
        let key = format!("g{n:03}");
        log.append(&entry(&key, 1, EntryType::FullState, n as i64))
            .await
            .unwrap();
        log.append(&entry(&key, 2, EntryType::FullState, n as i64 + 1000))
            .await
            .unwrap();
    }
    // g000: behind a Delta. g001: v1 fails its newest snapshot (1001), so
    // it is failing at 2 with the state of 1; v2 decodes 1001. g002: v2
    // refuses its applied snapshot (1002), so it stays failing on v1's state.
    log.append(&entry("g000", 3, EntryType::Delta, 0))
        .await
        .unwrap();
    let store = Arc::new(ReplicaStore::with_change_capacity(1 << 14));
    let v1 = Decoder::new(1, &[1001]);
    let replicator = Replicator::new(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        Arc::clone(&store),
        HashMap::from([(COUNTER.to_owned(), v1.clone() as Arc<dyn SnapshotDecoder>)]),
        ConsumerConfig {
            poll_interval: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..ConsumerConfig::default()
        },
    )
    .with_scan_rows(64);
    let catch_up = replicator.catch_up();
    let control = replicator.control();
    let stop = Shutdown::new();
    let running = replicator.spawn(stop.signal());
    eventually("the initial catch-up", || catch_up.progress().complete).await;
    eventually("g001 failing under v1", || {
        matches!(
            store.get(COUNTER, "g001").map(|r| r.status),
            Some(ReplicaStatus::Failing { sequence: 2, .. })
        )
    })
    .await;
    assert_eq!(count_of(&store, "g001"), Some(Value::I64(1)));
    assert_eq!(count_of(&store, "g005"), Some(Value::I64(1005)));

    // Every change from the swap on: sequences must never go backwards.
    let mut changes = store.subscribe();
    let v2 = Decoder::new(2, &[1002]);
    let progress = control
        .replace(COUNTER, v2.clone() as Arc<dyn SnapshotDecoder>)
        .await
        .expect("the replicator runs");
    eventually("the re-decode", || progress.is_complete()).await;
    let done = progress.progress();
    assert_eq!(
        (done.caught_up, done.grains),
        (GRAINS as u64, GRAINS as u64)
    );

    for n in 0..GRAINS {
        let key = format!("g{n:03}");
        let replica = store.get(COUNTER, &key).unwrap();
        let state = replica.state.clone().unwrap();
        if n == 2 {
            // v2 refuses the applied snapshot: failing, v1's state kept.
            assert_eq!(replica.decoded_by.as_ref().unwrap().schema_version, "1");
            assert_eq!(state.field("doubled"), None);
            let ReplicaStatus::Failing { sequence, reason } = &replica.status else {
                panic!("{key}: {:?}", replica.status);
            };
            assert_eq!(*sequence, 2);
            assert!(reason.contains("v2 refuses 1002"), "{reason}");
            continue;
        }
        assert_eq!(replica.sequence, 2, "{key}");
        assert_eq!(
            replica.decoded_by.as_ref().unwrap().schema_version,
            "2",
            "{key}"
        );
        let count = 1000 + n as i64;
        assert_eq!(state.field("count"), Some(Value::I64(count)), "{key}");
        assert_eq!(state.field("doubled"), Some(Value::I64(count * 2)), "{key}");
        let expected = if n == 0 {
            ReplicaStatus::Behind { delta_sequence: 3 }
        } else {
            ReplicaStatus::Ok
        };
        assert_eq!(replica.status, expected, "{key}");
    }
    // Only the applied snapshots were decoded again (g001's older one
    // superseded), and nothing older; once each, but for g002's retries.
    let mut per_grain: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, sequence) in v2.calls() {
        per_grain.entry(key).or_default().push(sequence);
    }
    assert_eq!(per_grain.len(), GRAINS);
    for (key, sequences) in &per_grain {
        assert!(sequences.iter().all(|s| *s == 2), "{key}: {sequences:?}");
        if key != "g002" {
            assert_eq!(sequences.len(), 1, "{key}: {sequences:?}");
        }
    }
    while let Ok(change) = changes.try_recv() {
        if change.kind == ChangeKind::Applied {
            assert_eq!(change.replica.sequence, 2, "{change:?}");
        }
    }

    // New entries keep flowing on v2.
    log.append(&entry("g007", 3, EntryType::FullState, 7))
        .await
        .unwrap();
    eventually("g007 at 3", || {
        store.get(COUNTER, "g007").is_some_and(|r| r.sequence == 3)
    })
    .await;
    assert_eq!(
        store
            .get(COUNTER, "g007")
            .unwrap()
            .state
            .unwrap()
            .field("doubled"),
        Some(Value::I64(14))
    );

    // Removing the type stops its consumers: nothing more is applied.
    assert!(control.remove(COUNTER).await);
    assert_eq!(store.remove_type(COUNTER), GRAINS);
    log.append(&entry("g008", 3, EntryType::FullState, 8))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.get(COUNTER, "g008").is_none());

    stop.stop();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the replicator stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_build_swapped_in_decodes_nothing_again() {
    let log = Arc::new(MemoryLog::new());
    for n in 0..20 {
        log.append(&entry(&format!("g{n}"), 1, EntryType::FullState, n))
            .await
            .unwrap();
    }
    let store = Arc::new(ReplicaStore::new());
    let first = Decoder::new(1, &[]);
    let replicator = Replicator::new(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        Arc::clone(&store),
        HashMap::from([(COUNTER.to_owned(), first as Arc<dyn SnapshotDecoder>)]),
        ConsumerConfig {
            poll_interval: Duration::from_millis(20),
            ..ConsumerConfig::default()
        },
    );
    let catch_up = replicator.catch_up();
    let control = replicator.control();
    let stop = Shutdown::new();
    let _running = replicator.spawn(stop.signal());
    eventually("the initial catch-up", || catch_up.progress().complete).await;

    // Same plugin build (same provenance), e.g. only its limits changed.
    let again = Decoder::new(1, &[]);
    let progress = control
        .replace(COUNTER, again.clone() as Arc<dyn SnapshotDecoder>)
        .await
        .unwrap();
    eventually("the re-decode", || progress.is_complete()).await;
    assert!(again.calls().is_empty(), "{:?}", again.calls());
    stop.stop();
}
