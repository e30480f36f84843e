//! The consumer's scheduler at size: 100,000 grains caught up in bulk and
//! then kept current while a writer appends, with per-grain order kept and
//! no sequence decoded or applied twice; catch-up progress; sharding; a
//! cold start that finds its grains through the scan.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use replica_host::Shutdown;
use replica_host::State;
use replica_host::replication_log::forward::ForwardLog;
use replica_host::replication_log::{
    ChangeCursor, EntryType, HeadChanges, LogEntry, LogError, LogWriter, MemoryLog, ReplicationLog,
    ScanPage,
};
use replica_host::{CallError, CallErrorKind};
use replica_host::{CatchUp, ConsumerConfig, Replicator, Shard, SnapshotDecoder};
use replica_host::{ChangeKind, ReplicaStore};
use replica_test_support::logs::FlakyScanLog;
use tokio::sync::broadcast;
use tokio::time::Instant;

const COUNTER: &str = "Counter";

/// Decodes an 8-byte little-endian count; records every call.
#[derive(Default)]
struct CountingDecoder {
    calls: Mutex<Vec<(String, u64)>>,
}

#[async_trait]
impl SnapshotDecoder for CountingDecoder {
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
        self.calls
            .lock()
            .unwrap()
            .push((entry.grain_key.clone(), entry.sequence));
        let bytes: [u8; 8] = entry.payload.as_ref().try_into().map_err(|_| CallError {
            plugin: "test".into(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind: CallErrorKind::MalformedPayload,
            message: "not 8 bytes".into(),
        })?;
        #[derive(serde::Serialize)]
        struct Counter {
            count: i64,
        }
        Ok(State::from_serialize(&Counter {
            count: i64::from_le_bytes(bytes),
        })
        .expect("a counter encodes"))
    }
}

fn entry(key: &str, sequence: u64, entry_type: EntryType) -> LogEntry {
    LogEntry {
        grain_type: COUNTER.into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "primary".into(),
        entry_type,
        payload: (sequence as i64 * 10).to_le_bytes().to_vec().into(),
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig {
        poll_interval: Duration::from_millis(20),
        ..ConsumerConfig::default()
    }
}

/// Collects every applied sequence per grain, in store order.
fn collect_applied(
    mut changes: broadcast::Receiver<replica_host::ReplicaChange>,
) -> tokio::task::JoinHandle<HashMap<String, Vec<u64>>> {
    tokio::spawn(async move {
        let mut applied: HashMap<String, Vec<u64>> = HashMap::new();
        loop {
            match changes.recv().await {
                Ok(change) if change.kind == ChangeKind::Applied => applied
                    .entry(change.replica.grain_key)
                    .or_default()
                    .push(change.replica.sequence),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    panic!("the change collector lagged by {n}")
                }
                Err(broadcast::error::RecvError::Closed) => return applied,
            }
        }
    })
}

/// A replicator of `log`'s Counter grains into `store`, decoding with a
/// `CountingDecoder`, running until `stop`; returns its catch-up and task.
fn start_counting(
    log: Arc<dyn ReplicationLog>,
    store: &Arc<ReplicaStore>,
    config: ConsumerConfig,
    stop: &Shutdown,
) -> (Arc<CatchUp>, tokio::task::JoinHandle<()>) {
    let decoder: Arc<dyn SnapshotDecoder> = Arc::new(CountingDecoder::default());
    let replicator = Replicator::new(
        log,
        Arc::clone(store),
        HashMap::from([(COUNTER.to_owned(), decoder)]),
        config,
    );
    (replicator.catch_up(), replicator.spawn(stop.signal()))
}

/// Waits until `catch_up` is complete, failing after 20 s.
async fn until_caught_up(catch_up: &CatchUp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !catch_up.progress().complete {
        assert!(Instant::now() < deadline, "{:?}", catch_up.progress());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_grains_keep_order_and_never_apply_twice() {
    const GRAINS: u64 = 100_000;
    let log = Arc::new(MemoryLog::new());
    let mut heads: HashMap<String, u64> = HashMap::new();
    for n in 0..GRAINS {
        let key = format!("g{n:06}");
        log.append(&entry(&key, 1, EntryType::FullState))
            .await
            .unwrap();
        log.append(&entry(&key, 2, EntryType::FullState))
            .await
            .unwrap();
        if n % 10 == 0 {
            log.append(&entry(&key, 3, EntryType::Delta)).await.unwrap();
            log.append(&entry(&key, 4, EntryType::FullState))
                .await
                .unwrap();
            heads.insert(key, 4);
        } else {
            heads.insert(key, 2);
        }
    }
    let store = Arc::new(ReplicaStore::with_change_capacity(1 << 18));
    let applied = collect_applied(store.subscribe());
    let decoder = Arc::new(CountingDecoder::default());
    let replicator = Replicator::new(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        Arc::clone(&store),
        HashMap::from([(
            COUNTER.to_owned(),
            Arc::clone(&decoder) as Arc<dyn SnapshotDecoder>,
        )]),
        ConsumerConfig {
            workers: 8,
            scan_rows: 4096,
            ..config()
        },
    );
    let catch_up = replicator.catch_up();
    let metrics = replicator.metrics();
    let stop = Shutdown::new();
    let running = replicator.spawn(stop.signal());

    // A writer appends to every 7th grain while the catch-up runs.
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut written = HashMap::new();
            for round in 0..3u64 {
                for n in (0..GRAINS).step_by(7) {
                    let key = format!("g{n:06}");
                    let sequence = 10 + round;
                    log.append(&entry(&key, sequence, EntryType::FullState))
                        .await
                        .unwrap();
                    written.insert(key, sequence);
                }
                tokio::task::yield_now().await;
            }
            written
        })
    };
    let written = writer.await.unwrap();
    heads.extend(written);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let behind = heads
            .iter()
            .filter(|(key, head)| store.applied_sequence(COUNTER, key) != Some(**head))
            .count();
        if behind == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} grains not current; catch-up {:?}",
            catch_up.progress()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The store holds a grain a moment before its step's end reaches the
    // scheduler, which counts it caught up: wait for the count too.
    while !catch_up.progress().complete {
        assert!(Instant::now() < deadline, "{:?}", catch_up.progress());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let progress = catch_up.progress();
    assert!(progress.grains >= GRAINS, "{progress:?}");
    assert_eq!(progress.caught_up, progress.grains);

    stop.stop();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .expect("no panic");
    drop(store);
    let applied = applied.await.unwrap();

    // Per grain, applied sequences strictly increase and end at the head.
    assert_eq!(applied.len(), GRAINS as usize);
    for (key, sequences) in &applied {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
        assert_eq!(sequences.last(), heads.get(key), "{key}");
    }
    // No snapshot was decoded twice, and no Delta was decoded.
    let calls = decoder.calls.lock().unwrap();
    let mut unique = HashSet::new();
    for call in calls.iter() {
        assert!(unique.insert(call.clone()), "decoded twice: {call:?}");
        assert_ne!(call.1, 3, "a Delta reached the decoder: {call:?}");
    }
    let stats = metrics.snapshot().grain_types[COUNTER].clone();
    assert_eq!(stats.deltas_refused, GRAINS / 10);
    assert_eq!(stats.grains, GRAINS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_is_incomplete_until_every_listed_grain_is_read() {
    /// Holds every decode until released.
    struct GatedDecoder {
        gate: tokio::sync::Semaphore,
    }
    #[async_trait]
    impl SnapshotDecoder for GatedDecoder {
        async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
            self.gate.acquire().await.unwrap().forget();
            Ok(State::from_serialize(&entry.sequence).expect("a number encodes"))
        }
    }
    let log = Arc::new(MemoryLog::new());
    for n in 0..50 {
        log.append(&entry(&format!("k{n}"), 1, EntryType::FullState))
            .await
            .unwrap();
    }
    let decoder = Arc::new(GatedDecoder {
        gate: tokio::sync::Semaphore::new(0),
    });
    let store = Arc::new(ReplicaStore::new());
    let replicator = Replicator::new(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        Arc::clone(&store),
        HashMap::from([(
            COUNTER.to_owned(),
            Arc::clone(&decoder) as Arc<dyn SnapshotDecoder>,
        )]),
        config(),
    );
    let catch_up = replicator.catch_up();
    assert!(catch_up.is_catching_up(COUNTER));
    let stop = Shutdown::new();
    let running = replicator.spawn(stop.signal());

    let deadline = Instant::now() + Duration::from_secs(10);
    while catch_up.progress().grains < 50 {
        assert!(Instant::now() < deadline, "never listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    decoder.gate.add_permits(20);
    while store.status_counts(COUNTER).ok < 20 {
        assert!(Instant::now() < deadline, "20 not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let progress = catch_up.progress();
    assert!(!progress.complete, "{progress:?}");
    assert!(
        progress.caught_up >= 20 && progress.caught_up < 50,
        "{progress:?}"
    );
    assert!(catch_up.is_catching_up(COUNTER));

    decoder.gate.add_permits(30);
    while !catch_up.progress().complete {
        assert!(Instant::now() < deadline, "{:?}", catch_up.progress());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.status_counts(COUNTER).ok, 50);
    assert_eq!(catch_up.progress().caught_up, 50);
    stop.stop();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_hold_every_grain_exactly_once() {
    let log = Arc::new(MemoryLog::new());
    for n in 0..3000 {
        log.append(&entry(&format!("s{n}"), 1, EntryType::FullState))
            .await
            .unwrap();
    }
    let mut stores = Vec::new();
    let mut running = Vec::new();
    let stop = Shutdown::new();
    for index in 0..3 {
        let store = Arc::new(ReplicaStore::new());
        running.push(start_counting(
            Arc::clone(&log) as Arc<dyn ReplicationLog>,
            &store,
            ConsumerConfig {
                shard: Some(Shard { index, count: 3 }),
                ..config()
            },
            &stop,
        ));
        stores.push(store);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.iter().all(|(c, _)| c.progress().complete) {
        assert!(Instant::now() < deadline, "shards never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut owners: HashMap<String, usize> = HashMap::new();
    for (i, store) in stores.iter().enumerate() {
        let keys = store.keys(COUNTER, None, usize::MAX);
        assert!(keys.len() > 800, "shard {i} holds only {}", keys.len());
        for key in keys {
            let shard = Shard {
                index: i as u32,
                count: 3,
            };
            assert!(shard.owns(COUNTER, &key), "{key} is not shard {i}'s");
            assert!(owners.insert(key.clone(), i).is_none(), "{key} held twice");
        }
    }
    assert_eq!(owners.len(), 3000, "grains lost");
    stop.stop();
    for (_, handle) in running {
        handle.await.unwrap();
    }
}

async fn catch_up_with_scan_failures(failures: u32) -> Arc<FlakyScanLog> {
    catch_up_with_slow_scan_failures(failures, 0).await
}

/// As [`catch_up_with_scan_failures`], with incremental listings that take
/// `incremental_ms` each.
async fn catch_up_with_slow_scan_failures(failures: u32, incremental_ms: u64) -> Arc<FlakyScanLog> {
    let log = Arc::new(FlakyScanLog::new(failures));
    log.incremental_ms.store(incremental_ms, Ordering::SeqCst);
    for n in 0..40 {
        log.inner
            .append(&entry(&format!("f{n}"), 1, EntryType::FullState))
            .await
            .unwrap();
    }
    let store = Arc::new(ReplicaStore::new());
    let stop = Shutdown::new();
    let (catch_up, running) = start_counting(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        &store,
        ConsumerConfig {
            initial_backoff: Duration::from_millis(10),
            ..config()
        },
        &stop,
    );
    until_caught_up(&catch_up).await;
    assert_eq!(store.status_counts(COUNTER).ok, 40);
    stop.stop();
    running.await.unwrap();
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scan_page_is_retried_without_reading_grains_one_by_one() {
    let log = catch_up_with_scan_failures(2).await;
    assert_eq!(log.scans.load(Ordering::SeqCst), 3);
    assert_eq!(
        log.reads.load(Ordering::SeqCst),
        0,
        "grains were read one by one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_keeps_failing_falls_back_to_reading_each_grain() {
    let log = catch_up_with_scan_failures(u32::MAX).await;
    assert_eq!(
        log.scans.load(Ordering::SeqCst),
        4,
        "three retries, then none"
    );
    assert!(log.reads.load(Ordering::SeqCst) >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_gives_up_while_a_listing_is_out_still_finds_every_grain() {
    // The scan gives up after about 70 ms (backoffs of 10, 20 and 40 ms),
    // while the incremental listing started at 20 ms is still out: its
    // answer must not stand in for the full listing that finds the grains.
    let log = catch_up_with_slow_scan_failures(u32::MAX, 300).await;
    assert_eq!(log.scans.load(Ordering::SeqCst), 4);
    assert!(log.reads.load(Ordering::SeqCst) >= 40);
}

/// A memory log that counts full listings and cursors, and appends to
/// itself when its second scan page is asked for: a primary that writes
/// during a cold start's catch-up.
#[derive(Default)]
struct WrittenDuringScan {
    inner: MemoryLog,
    full_listings: std::sync::atomic::AtomicU32,
    cursors: std::sync::atomic::AtomicU32,
    scans: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl ForwardLog for WrittenDuringScan {
    fn inner(&self) -> &dyn ReplicationLog {
        &self.inner
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        if cursor.is_none() {
            self.full_listings.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.changes_since(grain_type, cursor).await
    }

    async fn change_cursor(&self, grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        self.cursors.fetch_add(1, Ordering::SeqCst);
        self.inner.change_cursor(grain_type).await
    }

    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        if self.scans.fetch_add(1, Ordering::SeqCst) == 1 {
            // The first page taken, the second asked for: a grain the scan
            // has passed moves on, and a new one appears before the scan's
            // position.
            self.inner
                .append(&entry("c0000", 2, EntryType::FullState))
                .await
                .unwrap();
            self.inner
                .append(&entry("b-new", 1, EntryType::FullState))
                .await
                .unwrap();
        }
        self.inner.scan(grain_type, after, max_rows).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_finds_its_grains_through_the_scan_and_misses_nothing_written_meanwhile() {
    let log = Arc::new(WrittenDuringScan::default());
    for n in 0..3000 {
        log.inner
            .append(&entry(&format!("c{n:04}"), 1, EntryType::FullState))
            .await
            .unwrap();
    }
    let store = Arc::new(ReplicaStore::new());
    let stop = Shutdown::new();
    let (catch_up, running) = start_counting(
        Arc::clone(&log) as Arc<dyn ReplicationLog>,
        &store,
        ConsumerConfig {
            // Several pages, so the grains are found as the scan goes.
            scan_rows: 500,
            ..config()
        },
        &stop,
    );
    until_caught_up(&catch_up).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let progress = catch_up.progress();
    // The scan's 3,000, and `b-new` too when a listing found it before
    // the scan ended (it then counts as a startup grain).
    assert!(
        (3000..=3001).contains(&progress.grains),
        "the startup grains are the scan's: {progress:?}"
    );
    assert_eq!(progress.caught_up, progress.grains);
    assert!(
        log.scans.load(Ordering::SeqCst) >= 6,
        "3,000 rows in pages of 500"
    );
    assert_eq!(log.cursors.load(Ordering::SeqCst), 1, "one cursor first");
    assert_eq!(
        log.full_listings.load(Ordering::SeqCst),
        0,
        "a cold start lists no heads before or during its scan"
    );
    // What was written while the scan ran comes through the incremental
    // listings from the cursor taken before it.
    while store.get(COUNTER, "b-new").is_none()
        || store.get(COUNTER, "c0000").map(|r| r.sequence) != Some(2)
    {
        assert!(
            Instant::now() < deadline,
            "writes during the scan were missed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.status_counts(COUNTER).ok, 3001);
    stop.stop();
    running.await.unwrap();
}
