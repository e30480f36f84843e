//! Loading a checkpoint into an empty store, all or nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::file::{CheckpointError, CheckpointFile};
use crate::decode::DecodedBy;
use crate::store::{DecodedSnapshot, ReplicaStatus, ReplicaStore};
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
/// in with [`ReplicaStore::restore`] (a chunk at a time, unpublished), so
/// call it before anything watches the store.
pub async fn load_into(
    file: &mut CheckpointFile,
    store: &ReplicaStore,
    types: &HashMap<String, OutputLimits>,
    builds: &HashMap<String, Option<Arc<DecodedBy>>>,
) -> Result<Loaded, CheckpointError> {
    let mut loaded = Loaded::default();
    let mut stale = HashSet::new();
    let path = file.path().display().to_string();
    let result = file
        .read_all(|rows| {
            // Rows come in (grain type, key) order: one restore per run of
            // a type within the chunk.
            let mut run: Vec<(String, Option<DecodedSnapshot>, ReplicaStatus)> = Vec::new();
            let mut run_type: Option<String> = None;
            for row in rows {
                let Some(limits) = types.get(&row.grain_type) else {
                    loaded.skipped += 1;
                    continue;
                };
                if builds
                    .get(&row.grain_type)
                    .is_some_and(|b| *b != row.decoded_by)
                {
                    stale.insert(row.grain_type.clone());
                }
                let snapshot = match row.state {
                    Some(bytes) => Some(DecodedSnapshot {
                        state: State::validate(&bytes, limits).map_err(|e| {
                            CheckpointError::Corrupt {
                                path: path.clone(),
                                grain_type: crate::text::escape(&row.grain_type),
                                grain_key: crate::text::escape(&row.grain_key),
                                reason: format!("the state does not validate: {e}"),
                            }
                        })?,
                        sequence: row.sequence,
                        timestamp_millis: row.timestamp_millis,
                        source_cluster: row.source_cluster,
                        decoded_by: row.decoded_by,
                    }),
                    None => None,
                };
                if run_type.as_deref() != Some(row.grain_type.as_str()) {
                    if let Some(grain_type) = run_type.take() {
                        store.restore(&grain_type, std::mem::take(&mut run));
                    }
                    run_type = Some(row.grain_type);
                }
                run.push((row.grain_key, snapshot, row.status));
                loaded.replicas += 1;
            }
            if let Some(grain_type) = run_type {
                store.restore(&grain_type, run);
            }
            Ok(())
        })
        .await;
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
    use crate::store::Replica;

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
}
