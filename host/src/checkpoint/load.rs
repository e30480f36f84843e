//! Loading a checkpoint into an empty store, all or nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::file::{CheckpointError, CheckpointFile};
use crate::decode::DecodedBy;
use crate::store::{ReplicaStatus, ReplicaStore, Snapshot};
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
            let mut run: Vec<(String, Option<Snapshot>, ReplicaStatus)> = Vec::new();
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
                    Some(bytes) => Some(Snapshot {
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
