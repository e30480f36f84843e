//! Loading a checkpoint into an empty store, all or nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::file::{CheckpointError, CheckpointFile};
use crate::decode::DecodedBy;
use crate::store::{ReplicaStore, Restored};
use crate::value::{OutputLimits, State};

/// What a load put in the store.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Replicas loaded.
    pub replicas: u64,
    /// Rows of grain types no longer configured, left out.
    pub skipped: u64,
    /// Grain types with replicas another plugin build decoded than the one
    /// now configured: they are decoded again in the background.
    pub stale_types: Vec<String>,
}

/// Loads `file` into `store`: per grain type its plugin's output limits
/// (`types`; other types' rows are left out) and its plugin build
/// (`builds`). Every state is validated under its limits; at the first bad
/// row nothing stays in the store and the error is returned. Replicas go
/// in with [`ReplicaStore::restore`] (a grain type at a time, in bulk,
/// unpublished), so call it before anything watches the store.
pub async fn load_into(
    file: &mut CheckpointFile,
    store: &ReplicaStore,
    types: &HashMap<String, OutputLimits>,
    builds: &HashMap<String, Option<Arc<DecodedBy>>>,
) -> Result<Loaded, CheckpointError> {
    let mut loaded = Loaded::default();
    let mut stale = HashSet::new();
    let path = file.path().display().to_string();
    // Rows come in (grain type, key) order: a type's replicas are gathered
    // over the chunks and restored in one call, which builds the store's
    // maps in bulk (the file is only trusted once every row checked out).
    let mut run: Vec<Restored> = Vec::new();
    let mut run_type: Option<Arc<str>> = None;
    let mut run_limits: Option<&OutputLimits> = None;
    let mut run_build: Option<&Option<Arc<DecodedBy>>> = None;
    let result = file
        .read_all(|rows| {
            for row in rows {
                if run_type.as_deref() != Some(&*row.grain_type) {
                    if let Some(grain_type) = run_type.take()
                        && !run.is_empty()
                    {
                        store.restore(&grain_type, std::mem::take(&mut run));
                    }
                    run_limits = types.get(&*row.grain_type);
                    run_build = builds.get(&*row.grain_type);
                    run_type = Some(Arc::clone(&row.grain_type));
                }
                let Some(limits) = run_limits else {
                    loaded.skipped += 1;
                    continue;
                };
                if run_build.is_some_and(|b| *b != row.decoded_by)
                    && !stale.contains(&*row.grain_type)
                {
                    stale.insert(row.grain_type.to_string());
                }
                let state = match row.state {
                    Some(bytes) => Some(State::validate(&bytes, limits).map_err(|e| {
                        CheckpointError::Corrupt {
                            path: path.clone(),
                            grain_type: crate::text::escape(&row.grain_type),
                            grain_key: crate::text::escape(&row.grain_key),
                            reason: format!("the state does not validate: {e}"),
                        }
                    })?),
                    None => None,
                };
                run.push(Restored {
                    grain_key: row.grain_key,
                    state,
                    sequence: row.sequence,
                    timestamp_millis: row.timestamp_millis,
                    source_cluster: row.source_cluster,
                    decoded_by: row.decoded_by,
                    status: row.status,
                });
                loaded.replicas += 1;
            }
            Ok(())
        })
        .await;
    if result.is_ok()
        && let Some(grain_type) = run_type
        && !run.is_empty()
    {
        store.restore(&grain_type, run);
    }
    match result {
        Ok(_) => {
            let mut stale_types: Vec<String> = stale.into_iter().collect();
            stale_types.sort();
            loaded.stale_types = stale_types;
            Ok(loaded)
        }
        Err(e) => {
            for grain_type in types.keys() {
                store.remove_type(grain_type);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointFile, Identity};
    use crate::store::{Replica, ReplicaStatus};

    const ROWS: usize = 30_000;

    fn replica(n: usize) -> Replica {
        Replica {
            grain_type: "Counter".into(),
            grain_key: format!("c{n:06}"),
            // One state of the first chunk is larger than the others.
            state: Some(
                State::from_serialize(&serde_json::json!({
                    "count": n,
                    "note": if n == 10 { "x".repeat(200) } else { String::new() },
                }))
                .unwrap(),
            ),
            sequence: 1 + n as u64,
            timestamp_millis: 7,
            source_cluster: "eu".into(),
            applied_at: None,
            decoded_by: None,
            status: ReplicaStatus::Ok,
        }
    }

    async fn written(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("replicas.ckpt");
        let mut file = CheckpointFile::open(&path).await.unwrap();
        let identity = Identity {
            log: "sqlite://log.db".into(),
            cluster_id: "eu".into(),
        };
        file.claim(&identity).await.unwrap();
        file.write((0..ROWS).map(replica).collect()).await.unwrap();
        file.close().await.unwrap();
        path
    }

    fn limits() -> HashMap<String, OutputLimits> {
        [("Counter".to_owned(), OutputLimits::default())].into()
    }

    #[tokio::test]
    async fn a_load_of_many_chunks_restores_every_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path()).await;
        let store = ReplicaStore::new();
        let mut file = CheckpointFile::open(&path).await.unwrap();
        let builds = [("Counter".to_owned(), None)].into();
        let loaded = load_into(&mut file, &store, &limits(), &builds)
            .await
            .unwrap();
        assert_eq!(loaded.replicas, ROWS as u64);
        assert!(loaded.stale_types.is_empty());
        for n in [0, 8191, 8192, ROWS - 1] {
            let got = store.get("Counter", &format!("c{n:06}")).unwrap();
            assert_eq!(got.sequence, 1 + n as u64);
            assert_eq!(got.state, replica(n).state);
        }
        assert_eq!(store.keys("Counter", None, ROWS + 1).len(), ROWS);
    }

    #[tokio::test]
    async fn a_corrupt_row_in_an_early_chunk_fails_the_load_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path()).await;
        // Damage a row of the first chunk: the reader is then chunks ahead
        // of the failing side and must stop instead of waiting for it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let changed = conn
            .execute(
                "UPDATE replicas SET sequence = sequence + 1 WHERE grain_key = 'c000010'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        drop(conn);
        let store = ReplicaStore::new();
        let mut file = CheckpointFile::open(&path).await.unwrap();
        let builds = [("Counter".to_owned(), None)].into();
        let error = load_into(&mut file, &store, &limits(), &builds)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("c000010: checksum mismatch"),
            "{error}"
        );
        assert!(store.grain_types().is_empty());
    }

    #[tokio::test]
    async fn a_state_over_todays_limits_in_an_early_chunk_fails_the_load_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path()).await;
        // The plugin's limits were lowered since: grain c000010's state no
        // longer validates. The reader is chunks ahead of the validation
        // by then and must stop, not wait for it.
        let limits = [(
            "Counter".to_owned(),
            OutputLimits {
                max_bytes: 100,
                ..OutputLimits::default()
            },
        )]
        .into();
        let store = ReplicaStore::new();
        let mut file = CheckpointFile::open(&path).await.unwrap();
        let builds = [("Counter".to_owned(), None)].into();
        let error = load_into(&mut file, &store, &limits, &builds)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("c000010: the state does not validate"),
            "{error}"
        );
        assert!(store.grain_types().is_empty());
    }

    #[cfg(feature = "tools")]
    #[tokio::test]
    async fn a_warm_start_reads_only_the_grains_the_log_changed_since_and_lists_once() {
        use crate::bench::CountingLog;
        use crate::consumer::{ConsumerConfig, Replicator, SnapshotDecoder, list_first};
        use crate::replication_log::{EntryType, LogEntry, LogWriter, MemoryLog};

        /// Decodes any snapshot as `{"count": sequence}`.
        struct SequenceDecoder;

        #[async_trait::async_trait]
        impl SnapshotDecoder for SequenceDecoder {
            async fn decode(&self, entry: &LogEntry) -> Result<State, crate::decode::CallError> {
                Ok(State::from_serialize(&serde_json::json!({ "count": entry.sequence })).unwrap())
            }
        }

        const GRAINS: usize = 300;
        let entry = |n: usize, sequence: u64| LogEntry {
            grain_type: "Counter".into(),
            grain_key: format!("c{n:06}"),
            sequence,
            timestamp_millis: 7,
            source_cluster: "eu".into(),
            entry_type: EntryType::FullState,
            payload: vec![1].into(),
        };
        let memory = Arc::new(MemoryLog::new());
        for n in 0..GRAINS {
            memory.append(&entry(n, 1 + n as u64)).await.unwrap();
        }
        // The checkpoint holds every grain at its head; then five move on.
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path()).await;
        let changed = [3, 10, 150, 151, 299];
        for &n in &changed {
            memory.append(&entry(n, 1_000)).await.unwrap();
        }
        let log = Arc::new(CountingLog::new(memory, true));
        let store = Arc::new(ReplicaStore::new());
        let mut file = CheckpointFile::open(&path).await.unwrap();
        let builds = [("Counter".to_owned(), None)].into();
        let limits = limits();
        let (loaded, first) = tokio::join!(
            load_into(&mut file, &store, &limits, &builds),
            list_first(log.as_ref(), ["Counter".to_owned()]),
        );
        assert_eq!(loaded.unwrap().replicas, ROWS as u64);
        let decoder: Arc<dyn SnapshotDecoder> = Arc::new(SequenceDecoder);
        let decoders = [("Counter".to_owned(), decoder)].into_iter().collect();
        let replicator = Replicator::new(
            log.clone(),
            Arc::clone(&store),
            decoders,
            ConsumerConfig::default(),
        )
        .with_first_listings(first);
        let catch_up = replicator.catch_up();
        let stop = crate::shutdown::Shutdown::new();
        let running = replicator.spawn(stop.signal());
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while !catch_up.progress().complete {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("caught up");
        for &n in &changed {
            let got = store.get("Counter", &format!("c{n:06}")).unwrap();
            assert_eq!(got.sequence, 1_000, "grain {n} caught up");
        }
        assert_eq!(store.get("Counter", "c000004").unwrap().sequence, 5);
        let [reads, listings, ..] = log.counts();
        assert_eq!(
            reads,
            changed.len() as u64,
            "only the changed grains are read"
        );
        assert_eq!(listings, 1, "the listing made ahead is not repeated");
        assert_eq!(log.scans.load(std::sync::atomic::Ordering::Relaxed), 0);
        stop.stop();
        running.await.unwrap();
    }
}
