//! What `bench catchup` measures of the durable checkpoint and the scan,
//! inside its worker (the daemon's code paths through the library):
//!
//! - **scan alone**: every page of the grain type's ordered scan, nothing
//!   decoded or applied: the floor of a catch-up.
//! - **checkpoint write**: every replica written ([`CheckpointWriter`], as
//!   at SIGTERM), its time and the file's bytes per grain.
//! - **warm restart, clean**: a new store, the checkpoint loaded, a new
//!   replicator caught up (nothing changed): what a restart after SIGTERM
//!   costs until `/readyz` would be 200.
//! - **warm restart after a kill**: the same checkpoint (what a SIGKILL
//!   leaves: the last flush), with 10,000 snapshots appended to the log
//!   since; timed until all of them are applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checkpoint::{CheckpointFile, CheckpointWriter, Identity, load_into};
use crate::consumer::{ConsumerConfig, Replicator, SnapshotDecoder, list_first};
use crate::replication_log::{self, DEFAULT_SCAN_ROWS, EntryType, LogEntry};
use crate::shutdown::Shutdown;
use crate::store::ReplicaStore;
use crate::value::OutputLimits;

/// Snapshots appended while "killed".
const APPENDED: u64 = 10_000;

/// Times one full scan of `grain_type` in `url`'s log.
pub(super) async fn scan_alone(url: &str, grain_type: &str) -> anyhow::Result<(f64, u64)> {
    let log = replication_log::open(url).await?;
    let started = Instant::now();
    let mut after: Option<String> = None;
    let mut rows = 0u64;
    loop {
        let Some(page) = log
            .scan(grain_type, after.as_deref(), DEFAULT_SCAN_ROWS)
            .await?
        else {
            anyhow::bail!("the log has no bulk scan");
        };
        rows += page
            .grains
            .iter()
            .map(|g| g.records.len() as u64)
            .sum::<u64>();
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok((started.elapsed().as_secs_f64(), rows))
}

/// Writes `store`'s replicas into a checkpoint, then restarts from it twice
/// (clean; after 10,000 appends); returns the figures as JSON.
pub(super) async fn checkpoint_and_restart(
    url: &str,
    store: Arc<ReplicaStore>,
    grain_type: &str,
    grains: u64,
    decoder: Arc<dyn SnapshotDecoder>,
    config: ConsumerConfig,
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("replicas.ckpt");
    let identity = Identity {
        log: replication_log::redact_password(url),
        cluster_id: "bench".into(),
    };
    let mut file = CheckpointFile::open(&path).await?;
    file.claim(&identity).await?;
    let writer = CheckpointWriter::new(file, store, vec![grain_type.to_owned()], 0);
    let stop = Shutdown::new();
    stop.stop();
    let started = Instant::now();
    let stats = writer.run(stop.signal()).await;
    let write_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        stats.rows == grains,
        "wrote {} of {grains} rows",
        stats.rows
    );
    let bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();

    let restart = async |label: &str| -> anyhow::Result<(f64, f64)> {
        let started = Instant::now();
        let store = Arc::new(ReplicaStore::new());
        let log = replication_log::open(url).await?;
        // As the daemon does: the checkpoint loaded while the log's heads
        // are listed.
        let load = async {
            let mut file = CheckpointFile::open(&path).await?;
            file.claim(&identity).await?;
            let limits = [(grain_type.to_owned(), OutputLimits::default())].into();
            let builds = [(grain_type.to_owned(), decoder.decoded_by())].into();
            let loaded = load_into(&mut file, &store, &limits, &builds).await?;
            anyhow::ensure!(loaded.replicas == grains && loaded.stale_types.is_empty());
            Ok(started.elapsed().as_secs_f64())
        };
        let (load_s, first_listings) =
            tokio::join!(load, list_first(log.as_ref(), [grain_type.to_owned()]));
        let load_s = load_s?;
        let decoders = [(grain_type.to_owned(), Arc::clone(&decoder))]
            .into_iter()
            .collect();
        let replicator = Replicator::new(log, Arc::clone(&store), decoders, config.clone())
            .with_first_listings(first_listings);
        let catch_up = replicator.catch_up();
        let stopping = Shutdown::new();
        let handle = replicator.spawn(stopping.signal());
        while !catch_up.progress().complete {
            tokio::time::sleep(Duration::from_millis(20)).await;
            anyhow::ensure!(started.elapsed() < RESTART_LIMIT, "{label} took too long");
        }
        let took = started.elapsed().as_secs_f64();
        stopping.stop();
        let _ = handle.await;
        Ok((load_s, took))
    };
    let (clean_load_s, clean_s) = restart("warm restart").await?;

    // What a SIGKILL leaves: the checkpoint of the last flush, and the log
    // moved on.
    let writer_log = replication_log::create(url).await?;
    for n in 0..APPENDED.min(grains) {
        writer_log
            .append(&LogEntry {
                grain_type: grain_type.to_owned(),
                grain_key: format!("counter-{n}"),
                sequence: 2,
                timestamp_millis: crate::store::now_millis(),
                source_cluster: "bench".into(),
                entry_type: EntryType::FullState,
                payload: crate::demo::orlando::bincode(&crate::demo::orlando::CounterState {
                    count: 2,
                })
                .into(),
            })
            .await?;
    }
    let (killed_load_s, killed_s) = restart("warm restart after a kill").await?;
    Ok(json!({
        "checkpoint_write_s": write_s,
        "checkpoint_bytes_per_grain": bytes as f64 / grains.max(1) as f64,
        "warm_load_s": clean_load_s,
        "warm_s": clean_s,
        "killed_load_s": killed_load_s,
        "killed_s": killed_s,
        "appended": APPENDED.min(grains),
    }))
}

/// How long the worker lets a restart take before giving up.
const RESTART_LIMIT: Duration = Duration::from_secs(900);
