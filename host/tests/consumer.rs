//! The consumer end to end on the in-memory log: discovery, snapshot
//! semantics, refusals, failing grains, backend outages and shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::task::JoinHandle;

use replica_host::consumer::{ConsumerConfig, ConsumerMetrics, Replicator, SnapshotDecoder};
use replica_host::plugin::{CallError, CallErrorKind};
use replica_host::replication_log::{
    EntryType, LogEntry, LogWriter, MemoryLog, RawRow, ReplicationLog,
};
use replica_host::shutdown::Shutdown;
use replica_host::store::{ChangeKind, ReplicaStatus, ReplicaStore};
use replica_host::value::{State, Value};
use replica_test_support::logs::FlakyLog;

const COUNTER: &str = "Counter";

// ---------------------------------------------------------------- decoder

#[derive(Deserialize, serde::Serialize)]
struct CounterState {
    count: i64,
}

/// Decodes `{"count": N}`; fails on the marker payloads `bad` (malformed),
/// `trap`, `panic` and `hang` (never returns). Records every call.
#[derive(Default)]
struct TestDecoder {
    calls: Mutex<Vec<(String, u64, EntryType)>>,
}

impl TestDecoder {
    fn calls(&self) -> Vec<(String, u64, EntryType)> {
        self.calls.lock().unwrap().clone()
    }

    /// The sequences decoded for one grain, in call order.
    fn calls_for(&self, grain_key: &str) -> Vec<u64> {
        self.calls()
            .into_iter()
            .filter(|(k, _, _)| k == grain_key)
            .map(|(_, s, _)| s)
            .collect()
    }
}

#[async_trait]
impl SnapshotDecoder for TestDecoder {
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
        self.calls.lock().unwrap().push((
            entry.grain_key.clone(),
            entry.sequence,
            entry.entry_type,
        ));
        let fail = |kind, message: &str| {
            Err(CallError {
                plugin: "test.wasm".into(),
                grain_type: entry.grain_type.clone(),
                grain_key: entry.grain_key.clone(),
                sequence: entry.sequence,
                kind,
                message: message.into(),
            })
        };
        match entry.payload.as_ref() {
            b"trap" => fail(CallErrorKind::Trap, "wasm trap: unreachable"),
            b"panic" => panic!("decoder bug"),
            b"hang" => std::future::pending().await,
            payload => match serde_json::from_slice::<CounterState>(payload) {
                Ok(state) => Ok(State::from_serialize(&state).expect("a counter encodes")),
                Err(error) => fail(CallErrorKind::MalformedPayload, &error.to_string()),
            },
        }
    }
}

// ---------------------------------------------------------------- logs

// ---------------------------------------------------------------- harness

fn config() -> ConsumerConfig {
    ConsumerConfig {
        poll_interval: Duration::from_millis(10),
        batch_limit: 100,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        grain_type_scan_interval: Duration::from_millis(20),
        verify: None,
    }
}

struct Running {
    store: Arc<ReplicaStore>,
    metrics: Arc<ConsumerMetrics>,
    stop: Shutdown,
    handle: JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and returns how long everything took to stop.
    async fn shut_down(self) -> Duration {
        let started = Instant::now();
        self.stop.stop();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("replicator did not stop")
            .expect("replicator panicked");
        started.elapsed()
    }

    fn count(&self, grain_key: &str) -> Option<i64> {
        let replica = self.store.get(COUNTER, grain_key)?;
        match replica.state?.field("count")? {
            Value::I64(n) => Some(n),
            _ => None,
        }
    }

    fn sequence(&self, grain_key: &str) -> Option<u64> {
        self.store.applied_sequence(COUNTER, grain_key)
    }

    fn status(&self, grain_key: &str) -> Option<ReplicaStatus> {
        Some(self.store.get(COUNTER, grain_key)?.status)
    }

    fn stats(&self) -> replica_host::consumer::GrainTypeStats {
        self.metrics
            .snapshot()
            .grain_types
            .get(COUNTER)
            .cloned()
            .unwrap_or_default()
    }
}

fn start(
    log: Arc<dyn ReplicationLog>,
    decoder: &Arc<TestDecoder>,
    config: ConsumerConfig,
) -> Running {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let store = Arc::new(ReplicaStore::new());
    let decoders: HashMap<String, Arc<dyn SnapshotDecoder>> = HashMap::from([(
        COUNTER.to_owned(),
        Arc::clone(decoder) as Arc<dyn SnapshotDecoder>,
    )]);
    let replicator = Replicator::new(log, Arc::clone(&store), decoders, config);
    let metrics = replicator.metrics();
    let stop = Shutdown::new();
    let handle = replicator.spawn(stop.signal());
    Running {
        store,
        metrics,
        stop,
        handle,
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn entry(
    grain_type: &str,
    key: &str,
    sequence: u64,
    entry_type: EntryType,
    payload: &[u8],
) -> LogEntry {
    LogEntry {
        grain_type: grain_type.into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: 1_700_000_000_000 + sequence as i64,
        source_cluster: "us-east".into(),
        entry_type,
        payload: payload.to_vec().into(),
    }
}

async fn full(log: &dyn LogWriter, key: &str, sequence: u64, count: i64) {
    let payload = format!("{{\"count\":{count}}}");
    log.append(&entry(
        COUNTER,
        key,
        sequence,
        EntryType::FullState,
        payload.as_bytes(),
    ))
    .await
    .unwrap();
}

async fn marker(log: &dyn LogWriter, key: &str, sequence: u64, payload: &[u8]) {
    log.append(&entry(
        COUNTER,
        key,
        sequence,
        EntryType::FullState,
        payload,
    ))
    .await
    .unwrap();
}

async fn delta(log: &dyn LogWriter, key: &str, sequence: u64) {
    log.append(&entry(
        COUNTER,
        key,
        sequence,
        EntryType::Delta,
        b"{\"count\":-1}",
    ))
    .await
    .unwrap();
}

fn raw(key: &str, sequence: i64, entry_type: i64) -> RawRow {
    RawRow {
        grain_type: COUNTER.into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: 0,
        source_cluster: "us-east".into(),
        entry_type,
        payload: b"{\"count\":-1}".to_vec(),
    }
}

fn assert_no_delta_decoded(decoder: &TestDecoder) {
    for (key, sequence, entry_type) in decoder.calls() {
        assert_eq!(
            entry_type,
            EntryType::FullState,
            "{key}@{sequence} reached the decoder"
        );
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grains_are_discovered_including_ones_created_while_running() {
    let log = Arc::new(MemoryLog::new());
    full(log.as_ref(), "a", 1, 10).await;
    full(log.as_ref(), "b", 1, 20).await;
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());

    wait_until("a and b replicate", || {
        running.count("a") == Some(10) && running.count("b") == Some(20)
    })
    .await;

    full(log.as_ref(), "c", 7, 70).await;
    full(log.as_ref(), "a", 2, 11).await;
    wait_until("c appears and a advances", || {
        running.count("c") == Some(70) && running.count("a") == Some(11)
    })
    .await;

    let replica = running.store.get(COUNTER, "c").unwrap();
    assert_eq!(replica.sequence, 7);
    assert_eq!(replica.timestamp_millis, 1_700_000_000_007);
    assert_eq!(replica.source_cluster, "us-east");
    assert_eq!(replica.status, ReplicaStatus::Ok);
    assert!(running.store.is_fresh(COUNTER, "c", u64::MAX));
    assert_eq!(running.store.keys(COUNTER, None, 10), ["a", "b", "c"]);
    assert_eq!(running.stats().grains, 3);
    assert_eq!(running.stats().snapshots_applied, 4);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_full_state_wins_and_older_ones_are_not_decoded() {
    let log = Arc::new(MemoryLog::new());
    for sequence in 1..=5 {
        full(log.as_ref(), "a", sequence, sequence as i64 * 100).await;
    }
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());

    wait_until("a replicates", || running.sequence("a") == Some(5)).await;
    assert_eq!(running.count("a"), Some(500));
    assert_eq!(decoder.calls_for("a"), [5]);
    assert_eq!(running.stats().snapshots_skipped, 4);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_are_read_one_after_another_without_waiting() {
    let log = Arc::new(MemoryLog::new());
    for sequence in 1..=20 {
        full(log.as_ref(), "a", sequence, sequence as i64).await;
    }
    let decoder = Arc::new(TestDecoder::default());
    let poll = Duration::from_millis(1_000);
    let started = Instant::now();
    let running = start(
        log.clone(),
        &decoder,
        ConsumerConfig {
            poll_interval: poll,
            batch_limit: 3,
            ..config()
        },
    );

    wait_until("a replicates", || running.sequence("a") == Some(20)).await;
    assert!(started.elapsed() < poll, "took {:?}", started.elapsed());
    // The newest of each batch of three: 3, 6, ..., 18, then 20.
    assert_eq!(decoder.calls_for("a"), [3, 6, 9, 12, 15, 18, 20]);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_refused_and_never_reach_the_decoder() {
    let log = Arc::new(MemoryLog::new());
    // A FullState after the Delta in the same batch: applied, status ok.
    full(log.as_ref(), "after", 1, 1).await;
    delta(log.as_ref(), "after", 2).await;
    full(log.as_ref(), "after", 3, 3).await;
    // No FullState after the Delta: the snapshot before it applies, status behind.
    full(log.as_ref(), "before", 1, 1).await;
    delta(log.as_ref(), "before", 2).await;
    // Only a Delta: no state, behind.
    delta(log.as_ref(), "only", 4).await;
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());

    wait_until("all three settle", || {
        running.sequence("after") == Some(3)
            && running.status("before") == Some(ReplicaStatus::Behind { delta_sequence: 2 })
            && running.status("only") == Some(ReplicaStatus::Behind { delta_sequence: 4 })
    })
    .await;
    assert_eq!(running.status("after"), Some(ReplicaStatus::Ok));
    assert_eq!(running.count("after"), Some(3));
    assert_eq!(running.count("before"), Some(1));
    assert!(running.store.get(COUNTER, "only").unwrap().state.is_none());

    // A Delta arriving while running marks the grain behind; a newer snapshot clears it.
    delta(log.as_ref(), "after", 4).await;
    wait_until("after is behind", || {
        running.status("after") == Some(ReplicaStatus::Behind { delta_sequence: 4 })
    })
    .await;
    assert_eq!(running.count("after"), Some(3));
    full(log.as_ref(), "after", 5, 5).await;
    wait_until("after catches up", || running.sequence("after") == Some(5)).await;
    assert_eq!(running.status("after"), Some(ReplicaStatus::Ok));

    assert_no_delta_decoded(&decoder);
    assert_eq!(running.stats().deltas_refused, 4);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_snapshot_between_good_ones_leaves_the_grain_current() {
    let log = Arc::new(MemoryLog::new());
    // In one batch: the malformed one is superseded and never decoded.
    full(log.as_ref(), "a", 1, 1).await;
    marker(log.as_ref(), "a", 2, b"bad").await;
    full(log.as_ref(), "a", 3, 3).await;
    // The newest of a batch malformed: the next newest applies, the grain fails at 3.
    full(log.as_ref(), "b", 1, 1).await;
    full(log.as_ref(), "b", 2, 2).await;
    marker(log.as_ref(), "b", 3, b"bad").await;
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());

    wait_until("a and b settle", || {
        running.sequence("a") == Some(3) && running.sequence("b") == Some(2)
    })
    .await;
    assert_eq!(decoder.calls_for("a"), [3]);
    wait_until("b is failing at 3", || {
        matches!(
            running.status("b"),
            Some(ReplicaStatus::Failing { sequence: 3, .. })
        )
    })
    .await;
    assert_eq!(running.count("b"), Some(2));
    assert_eq!(&decoder.calls_for("b")[..2], [3, 2]);

    // Across batches: a malformed snapshot arrives, then a good one.
    marker(log.as_ref(), "a", 4, b"bad").await;
    wait_until("a fails at 4", || {
        matches!(
            running.status("a"),
            Some(ReplicaStatus::Failing { sequence: 4, .. })
        )
    })
    .await;
    assert_eq!(running.count("a"), Some(3), "a keeps its last good state");
    full(log.as_ref(), "a", 5, 5).await;
    full(log.as_ref(), "b", 4, 4).await;
    wait_until("both recover", || {
        running.sequence("a") == Some(5) && running.sequence("b") == Some(4)
    })
    .await;
    assert_eq!(running.status("a"), Some(ReplicaStatus::Ok));
    assert_eq!(running.status("b"), Some(ReplicaStatus::Ok));
    assert!(
        running
            .stats()
            .decode_failures_of(CallErrorKind::MalformedPayload)
            >= 2
    );
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_grain_retries_with_backoff_and_others_stay_current() {
    let log = Arc::new(MemoryLog::new());
    marker(log.as_ref(), "trap", 1, b"trap").await;
    marker(log.as_ref(), "panic", 1, b"panic").await;
    marker(log.as_ref(), "stuck", 1, b"hang").await;
    full(log.as_ref(), "ok", 1, 1).await;
    let decoder = Arc::new(TestDecoder::default());
    let config = ConsumerConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        ..config()
    };
    let running = start(log.clone(), &decoder, config);

    wait_until("trap and panic fail", || {
        matches!(
            running.status("trap"),
            Some(ReplicaStatus::Failing { sequence: 1, .. })
        ) && matches!(
            running.status("panic"),
            Some(ReplicaStatus::Failing { sequence: 1, .. })
        )
    })
    .await;
    let Some(ReplicaStatus::Failing { reason, .. }) = running.status("panic") else {
        unreachable!()
    };
    assert!(reason.contains("panicked"), "{reason}");
    assert!(running.store.get(COUNTER, "trap").unwrap().state.is_none());

    // The healthy grain keeps up while the others fail or hang.
    let watch_from = Instant::now();
    for sequence in 2..=6 {
        full(log.as_ref(), "ok", sequence, sequence as i64).await;
        wait_until("ok keeps up", || running.sequence("ok") == Some(sequence)).await;
    }
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(watch_from.elapsed())).await;

    // Retries are paced by the backoff (full jitter under ceilings of 50,
    // 100, 100, ... ms: about 50 ms apart on average), not a hot loop.
    let attempts = decoder.calls_for("trap").len();
    assert!((2..=40).contains(&attempts), "{attempts} attempts");
    assert_eq!(
        decoder.calls_for("stuck"),
        [1],
        "a hanging decode is not restarted"
    );
    assert!(running.stats().decode_failures_of(CallErrorKind::Trap) >= 4);

    // A newer snapshot that decodes recovers the grain by itself.
    full(log.as_ref(), "trap", 2, 2).await;
    wait_until("trap recovers", || running.sequence("trap") == Some(2)).await;
    assert_eq!(running.status("trap"), Some(ReplicaStatus::Ok));
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_grain_recovers_at_once_when_a_newer_snapshot_arrives() {
    let log = Arc::new(MemoryLog::new());
    marker(log.as_ref(), "a", 1, b"trap").await;
    let decoder = Arc::new(TestDecoder::default());
    // A long backoff: recovery must not wait for the next retry.
    let config = ConsumerConfig {
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(60),
        ..config()
    };
    let running = start(log.clone(), &decoder, config);
    wait_until("a fails", || {
        matches!(running.status("a"), Some(ReplicaStatus::Failing { .. }))
    })
    .await;
    let started = Instant::now();
    full(log.as_ref(), "a", 2, 2).await;
    wait_until("a recovers", || running.sequence("a") == Some(2)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(decoder.calls_for("a"), [1, 2]);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninterpretable_rows_are_refused_once_and_passed_over() {
    let log = Arc::new(MemoryLog::new());
    full(log.as_ref(), "a", 1, 1).await;
    log.insert_raw(raw("a", 2, 7)).unwrap(); // unknown entry type
    full(log.as_ref(), "a", 3, 3).await;
    log.insert_raw(raw("a", -5, 0)).unwrap(); // negative sequence
    full(log.as_ref(), "b", 1, 1).await;
    log.insert_raw(raw("b", 2, 9)).unwrap(); // after the applied snapshot
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());

    wait_until("a and b settle", || {
        running.sequence("a") == Some(3)
            && running.status("b") == Some(ReplicaStatus::Behind { delta_sequence: 2 })
    })
    .await;
    assert_eq!(running.status("a"), Some(ReplicaStatus::Ok));
    assert_eq!(running.count("b"), Some(1));

    // Reading on does not report the same rows again.
    full(log.as_ref(), "a", 4, 4).await;
    full(log.as_ref(), "b", 3, 3).await;
    wait_until("a and b advance", || {
        running.sequence("a") == Some(4) && running.sequence("b") == Some(3)
    })
    .await;
    assert_eq!(running.status("b"), Some(ReplicaStatus::Ok));
    assert_eq!(running.stats().rows_refused, 3);
    assert_no_delta_decoded(&decoder);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_loses_and_reorders_nothing() {
    let log = Arc::new(FlakyLog::default());
    full(&log.inner, "a", 1, 1).await;
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());
    let mut changes = running.store.subscribe();
    wait_until("a replicates", || running.sequence("a") == Some(1)).await;

    // Reads fail: discovery still sees the new head, the grain's reads fail and retry.
    log.reads_down.store(true, Ordering::SeqCst);
    full(&log.inner, "a", 2, 2).await;
    delta(&log.inner, "a", 3).await;
    wait_until("reads fail", || running.stats().read_errors >= 2).await;
    // Then the whole backend is down: listing fails too; a grain appears meanwhile.
    log.listing_down.store(true, Ordering::SeqCst);
    full(&log.inner, "a", 4, 4).await;
    delta(&log.inner, "a", 5).await;
    full(&log.inner, "b", 1, 10).await;
    wait_until("listing fails", || running.stats().discovery_errors >= 2).await;
    assert_eq!(running.sequence("a"), Some(1));
    assert_eq!(running.sequence("b"), None);

    log.reads_down.store(false, Ordering::SeqCst);
    log.listing_down.store(false, Ordering::SeqCst);
    wait_until("everything arrives", || {
        running.status("a") == Some(ReplicaStatus::Behind { delta_sequence: 5 })
            && running.sequence("b") == Some(1)
    })
    .await;
    assert_eq!(running.count("a"), Some(4));
    assert_eq!(running.stats().deltas_refused, 2);

    // Applied sequences of a only ever increased: 1, then 4.
    let mut applied = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if change.kind == ChangeKind::Applied && change.replica.grain_key == "a" {
            applied.push(change.replica.sequence);
        }
    }
    assert!(applied.windows(2).all(|w| w[0] < w[1]), "{applied:?}");
    assert_eq!(applied.last(), Some(&4));
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grains_cost_no_reads() {
    let log = Arc::new(FlakyLog::default());
    for key in 0..50 {
        full(&log.inner, &format!("g{key}"), 1, key).await;
    }
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());
    wait_until("all replicate", || {
        running.store.status_counts(COUNTER).ok == 50
    })
    .await;

    let reads = log.reads.load(Ordering::SeqCst);
    let listings = log.listings.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        log.reads.load(Ordering::SeqCst),
        reads,
        "idle grains were read"
    );
    assert!(
        log.listings.load(Ordering::SeqCst) >= listings + 5,
        "discovery kept polling"
    );

    // One grain gets an entry: only it is read.
    full(&log.inner, "g7", 2, 700).await;
    wait_until("g7 advances", || running.count("g7") == Some(700)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.reads.load(Ordering::SeqCst), reads + 1);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grain_types_without_a_decoder_are_reported_once() {
    let log = Arc::new(MemoryLog::new());
    full(log.as_ref(), "a", 1, 1).await;
    for key in ["x", "y"] {
        log.append(&entry("Ghost", key, 1, EntryType::FullState, b"{}"))
            .await
            .unwrap();
    }
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());
    wait_until("Ghost is reported", || {
        running
            .metrics
            .snapshot()
            .unhandled_grain_types
            .contains_key("Ghost")
    })
    .await;
    let snapshot = running.metrics.snapshot();
    assert_eq!(snapshot.unhandled_grain_types["Ghost"], 2);
    assert!(!snapshot.unhandled_grain_types.contains_key(COUNTER));
    assert!(running.store.get("Ghost", "x").is_none());
    assert!(decoder.calls().iter().all(|(key, _, _)| key == "a"));
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_consumer_within_one_poll_interval() {
    let log = Arc::new(MemoryLog::new());
    for key in 0..20 {
        full(log.as_ref(), &format!("g{key}"), 1, key).await;
    }
    marker(log.as_ref(), "stuck", 1, b"hang").await;
    let decoder = Arc::new(TestDecoder::default());
    let poll = Duration::from_millis(250);
    let running = start(
        log.clone(),
        &decoder,
        ConsumerConfig {
            poll_interval: poll,
            ..config()
        },
    );
    wait_until("all replicate and one decode hangs", || {
        running.store.status_counts(COUNTER).ok == 20 && decoder.calls_for("stuck") == [1]
    })
    .await;

    let took = running.shut_down().await;
    assert!(took < poll, "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_shutdown_sender_stops_everything() {
    let log = Arc::new(MemoryLog::new());
    full(log.as_ref(), "a", 1, 1).await;
    let decoder = Arc::new(TestDecoder::default());
    let running = start(log.clone(), &decoder, config());
    wait_until("a replicates", || running.sequence("a") == Some(1)).await;
    let Running { stop, handle, .. } = running;
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("did not stop")
        .unwrap();
}
