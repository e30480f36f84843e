//! The failing and behind grains, and the replication lag per grain type,
//! kept up to date from the store's changes for the operator page.
//!
//! The store can count replicas by status but not list the failing ones
//! without reading every grain; this index holds only the grains that are
//! not `ok`, so a page of them costs what it shows. A change stream that
//! lagged is repaired by one full pass over the store.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast::error::RecvError;

use crate::shutdown::StopSignal;
use crate::store::{ChangeKind, Replica, ReplicaStatus, ReplicaStore, now_millis};

/// A grain that is not `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The applied sequence (0 when none).
    pub sequence: u64,
    /// `behind` or `failing`, with its sequence and reason.
    pub status: ReplicaStatus,
}

/// The lag of one grain type's latest applied snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Apply time minus the primary's timestamp of the latest applied snapshot, ms.
    pub last_ms: i64,
    /// The largest such lag seen, ms.
    pub max_ms: i64,
    /// When the latest snapshot was applied (Unix ms).
    pub applied_at_ms: i64,
}

/// The index; share it behind an [`Arc`].
#[derive(Debug, Default)]
pub struct Problems {
    /// (grain type, grain key) → status, only for grains not `ok`.
    grains: Mutex<BTreeMap<(String, String), (u64, ReplicaStatus)>>,
    /// Grain type → lag.
    lag: Mutex<HashMap<String, Lag>>,
}

impl Problems {
    /// Records one replica as it now is.
    pub fn record(&self, replica: &Replica, kind: ChangeKind) {
        let key = (replica.grain_type.clone(), replica.grain_key.clone());
        let mut grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
        match (&replica.status, kind) {
            (_, ChangeKind::Removed) | (ReplicaStatus::Ok, _) => {
                grains.remove(&key);
            }
            (status, _) => {
                grains.insert(key, (replica.sequence, status.clone()));
            }
        }
        drop(grains);
        if kind == ChangeKind::Applied {
            let applied_at_ms = replica.applied_at.map_or_else(now_millis, |t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
            let last_ms = (applied_at_ms - replica.timestamp_millis).max(0);
            let mut lag = self.lag.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = lag.entry(replica.grain_type.clone()).or_default();
            *entry = Lag {
                last_ms,
                max_ms: entry.max_ms.max(last_ms),
                applied_at_ms,
            };
        }
    }

    /// Up to `limit` problems after `after` (grain type, key), in order,
    /// optionally of one grain type; and whether more follow.
    pub fn page(
        &self,
        grain_type: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> (Vec<Problem>, bool) {
        let grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
        let lower = match after {
            Some((t, k)) => Bound::Excluded((t.to_owned(), k.to_owned())),
            None => Bound::Unbounded,
        };
        let mut matching = grains
            .range((lower, Bound::Unbounded))
            .filter(|((t, _), _)| grain_type.is_none_or(|want| want == t))
            .map(|((t, k), (sequence, status))| Problem {
                grain_type: t.clone(),
                grain_key: k.clone(),
                sequence: *sequence,
                status: status.clone(),
            });
        let page: Vec<Problem> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// The lag of `grain_type`'s latest applied snapshot, if any was applied.
    pub fn lag(&self, grain_type: &str) -> Option<Lag> {
        self.lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(grain_type)
            .copied()
    }

    /// Rebuilds the index from every replica in `store`.
    pub fn rebuild(&self, store: &ReplicaStore) {
        const PAGE: usize = 1024;
        let mut fresh = BTreeMap::new();
        for grain_type in store.grain_types() {
            let mut after: Option<String> = None;
            loop {
                let keys = store.keys(&grain_type, after.as_deref(), PAGE);
                for key in &keys {
                    if let Some(r) = store.get(&grain_type, key)
                        && r.status != ReplicaStatus::Ok
                    {
                        fresh.insert((grain_type.clone(), key.clone()), (r.sequence, r.status));
                    }
                }
                if keys.len() < PAGE {
                    break;
                }
                after = keys.last().cloned();
            }
        }
        *self.grains.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// Follows `store`'s changes until `stop`.
    pub async fn follow(self: Arc<Self>, store: Arc<ReplicaStore>, mut stop: StopSignal) {
        let mut changes = store.subscribe();
        self.rebuild(&store);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => self.record(&change.replica, change.kind),
                    Err(RecvError::Lagged(_)) => self.rebuild(&store),
                    Err(RecvError::Closed) => return,
                },
                _ = stop.stopped() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(key: &str, sequence: u64, status: ReplicaStatus) -> Replica {
        Replica {
            grain_type: "T".into(),
            grain_key: key.into(),
            state: None,
            sequence,
            timestamp_millis: now_millis() - 50,
            source_cluster: "c".into(),
            applied_at: Some(std::time::SystemTime::now()),
            decoded_by: None,
            status,
        }
    }

    #[test]
    fn only_grains_not_ok_are_listed_in_pages() {
        let store = ReplicaStore::new();
        let problems = Problems::default();
        let failing = |reason: &str| ReplicaStatus::Failing {
            sequence: 9,
            reason: reason.into(),
        };
        store.set_status("T", "a", ReplicaStatus::Ok);
        store.set_status("T", "b", failing("bad"));
        store.set_status("T", "c", ReplicaStatus::Behind { delta_sequence: 2 });
        store.set_status("U", "z", failing("worse"));
        problems.rebuild(&store);
        let (page, more) = problems.page(None, None, 2);
        assert_eq!(
            page.iter()
                .map(|p| p.grain_key.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(more);
        let (page, more) = problems.page(None, Some(("T", "c")), 2);
        assert_eq!(
            (page.len(), page[0].grain_key.as_str(), more),
            (1, "z", false)
        );
        assert_eq!(problems.page(Some("U"), None, 10).0.len(), 1);

        problems.record(&replica("b", 10, ReplicaStatus::Ok), ChangeKind::Applied);
        assert_eq!(problems.page(Some("T"), None, 10).0.len(), 1);
        let lag = problems.lag("T").unwrap();
        assert!(lag.last_ms >= 50 && lag.max_ms >= lag.last_ms, "{lag:?}");
        problems.record(&replica("c", 1, failing("x")), ChangeKind::Removed);
        assert!(problems.page(Some("T"), None, 10).0.is_empty());
    }
}
