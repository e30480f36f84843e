//! The replica store: the typed state of every replicated grain, kept in
//! memory, plus the embedder API to read and watch it.
//!
//! One [`Replica`] per (grain type, grain key). Updates are sequence-guarded
//! ([`ReplicaStore::apply`] refuses a sequence not above the applied one,
//! but for the same sequence decoded by another plugin build: a re-decode),
//! so a replica never goes backwards. Locks are held only for map operations,
//! never across I/O or a decode.
//!
//! Watching: [`ReplicaStore::subscribe`] returns a `tokio::sync::broadcast`
//! receiver of every [`ReplicaChange`], in store order. A receiver that falls
//! more than the channel's capacity behind gets `RecvError::Lagged` and should
//! re-read what it needs with [`ReplicaStore::get`].

mod replica;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::decode::DecodedBy;
use crate::value::State;

pub use replica::{
    ChangeKind, Replica, ReplicaChange, ReplicaStatus, Snapshot, StaleSnapshot, StatusCounts,
};

/// Default capacity of the change channel.
pub const DEFAULT_CHANGE_CAPACITY: usize = 1024;

/// Grain key → replica, sorted by key for listing.
type GrainMap = BTreeMap<Box<str>, Stored>;

/// What the store keeps per grain: the [`Replica`] without the names it
/// is filed under, the source cluster interned, a rare failure boxed. At a
/// million grains every byte here is a megabyte.
#[derive(Debug)]
struct Stored {
    /// The applied snapshot's state; `None` until one decodes.
    state: Option<State>,
    /// The applied snapshot's sequence.
    sequence: u64,
    /// The primary's clock when it wrote that snapshot.
    timestamp_millis: i64,
    /// The cluster that wrote it, interned.
    source_cluster: Arc<str>,
    /// When this host applied it.
    applied_at: Option<SystemTime>,
    /// The plugin build that decoded it (shared by all its replicas).
    decoded_by: Option<Arc<DecodedBy>>,
    /// How current the replica is.
    status: StoredStatus,
    /// The store's version when the replica last changed (see
    /// [`ReplicaStore::changed_since`]).
    version: u64,
}

/// [`ReplicaStatus`] in 16 bytes.
#[derive(Debug, PartialEq, Eq)]
enum StoredStatus {
    Ok,
    Behind(u64),
    Failing(Box<(u64, String)>),
}

impl From<ReplicaStatus> for StoredStatus {
    fn from(status: ReplicaStatus) -> Self {
        match status {
            ReplicaStatus::Ok => StoredStatus::Ok,
            ReplicaStatus::Behind { delta_sequence } => StoredStatus::Behind(delta_sequence),
            ReplicaStatus::Failing { sequence, reason } => {
                StoredStatus::Failing(Box::new((sequence, reason)))
            }
        }
    }
}

impl StoredStatus {
    fn to_status(&self) -> ReplicaStatus {
        match self {
            StoredStatus::Ok => ReplicaStatus::Ok,
            StoredStatus::Behind(delta_sequence) => ReplicaStatus::Behind {
                delta_sequence: *delta_sequence,
            },
            StoredStatus::Failing(failure) => ReplicaStatus::Failing {
                sequence: failure.0,
                reason: failure.1.clone(),
            },
        }
    }

    fn is(&self, status: &ReplicaStatus) -> bool {
        match (self, status) {
            (StoredStatus::Ok, ReplicaStatus::Ok) => true,
            (StoredStatus::Behind(a), ReplicaStatus::Behind { delta_sequence }) => {
                a == delta_sequence
            }
            (StoredStatus::Failing(f), ReplicaStatus::Failing { sequence, reason }) => {
                f.0 == *sequence && f.1 == *reason
            }
            _ => false,
        }
    }
}

impl Stored {
    fn has_state(&self) -> bool {
        self.state.is_some()
    }

    fn to_replica(&self, grain_type: &str, grain_key: &str) -> Replica {
        Replica {
            grain_type: grain_type.to_owned(),
            grain_key: grain_key.to_owned(),
            state: self.state.clone(),
            sequence: self.sequence,
            timestamp_millis: self.timestamp_millis,
            source_cluster: self.source_cluster.as_ref().to_owned(),
            applied_at: self.applied_at,
            decoded_by: self.decoded_by.clone(),
            status: self.status.to_status(),
        }
    }
}

/// The replicas and the interned source clusters.
#[derive(Debug, Default)]
struct Grains {
    /// The replicas, by grain type, then key.
    by_type: HashMap<String, GrainMap>,
    /// Every source cluster name, stored once.
    clusters: HashSet<Arc<str>>,
    /// Bumped by every change to a replica.
    version: u64,
}

/// The one shared copy of a source cluster's name.
fn intern(clusters: &mut HashSet<Arc<str>>, cluster: &str) -> Arc<str> {
    if let Some(known) = clusters.get(cluster) {
        return Arc::clone(known);
    }
    let interned: Arc<str> = cluster.into();
    clusters.insert(Arc::clone(&interned));
    interned
}

/// The in-memory replicas of all grains, safe to share between threads.
#[derive(Debug)]
pub struct ReplicaStore {
    /// Grain type → grain key → replica, behind one lock held only for map
    /// operations.
    grains: RwLock<Grains>,
    /// Every change, for watchers.
    changes: broadcast::Sender<ReplicaChange>,
}

impl Default for ReplicaStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicaStore {
    /// An empty store whose change channel holds [`DEFAULT_CHANGE_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_change_capacity(DEFAULT_CHANGE_CAPACITY)
    }

    /// An empty store whose change channel holds `capacity` events per
    /// receiver before it lags (at least 1).
    pub fn with_change_capacity(capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(capacity.max(1));
        Self {
            grains: RwLock::new(Grains::default()),
            changes,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Grains> {
        self.grains.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Grains> {
        self.grains.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, kind: ChangeKind, replica: Replica) {
        // No receivers is not an error for the store.
        let _ = self.changes.send(ReplicaChange { kind, replica });
    }

    /// Applies a decoded snapshot with the grain's new status. Refuses (and
    /// changes nothing) when `snapshot.sequence` is below the applied
    /// sequence, or equal to it and decoded by the same plugin build.
    /// Returns the replica as stored.
    pub fn apply(
        &self,
        grain_type: &str,
        grain_key: &str,
        snapshot: Snapshot,
        status: ReplicaStatus,
    ) -> Result<Replica, StaleSnapshot> {
        let mut grains = self.write();
        if let Some(current) = grains
            .by_type
            .get(grain_type)
            .and_then(|m| m.get(grain_key))
            && current.has_state()
            && (snapshot.sequence < current.sequence
                || (snapshot.sequence == current.sequence
                    && snapshot.decoded_by == current.decoded_by))
        {
            return Err(StaleSnapshot {
                grain_type: grain_type.to_owned(),
                grain_key: grain_key.to_owned(),
                current: current.sequence,
                offered: snapshot.sequence,
            });
        }
        grains.version += 1;
        let stored = Stored {
            state: Some(snapshot.state),
            sequence: snapshot.sequence,
            timestamp_millis: snapshot.timestamp_millis,
            source_cluster: intern(&mut grains.clusters, &snapshot.source_cluster),
            applied_at: Some(SystemTime::now()),
            decoded_by: snapshot.decoded_by,
            status: status.into(),
            version: grains.version,
        };
        let replica = stored.to_replica(grain_type, grain_key);
        let by_key = match grains.by_type.get_mut(grain_type) {
            Some(by_key) => by_key,
            None => grains.by_type.entry(grain_type.to_owned()).or_default(),
        };
        match by_key.get_mut(grain_key) {
            Some(slot) => *slot = stored,
            None => {
                by_key.insert(grain_key.into(), stored);
            }
        }
        self.publish(ChangeKind::Applied, replica.clone());
        Ok(replica)
    }

    /// Sets a grain's status, keeping its state. A grain not in the store yet
    /// is added without state. Returns whether anything changed.
    pub fn set_status(&self, grain_type: &str, grain_key: &str, status: ReplicaStatus) -> bool {
        let mut grains = self.write();
        let Grains {
            by_type,
            clusters,
            version,
        } = &mut *grains;
        let next = *version + 1;
        let by_key = match by_type.get_mut(grain_type) {
            Some(by_key) => by_key,
            None => by_type.entry(grain_type.to_owned()).or_default(),
        };
        let replica = match by_key.get_mut(grain_key) {
            Some(stored) if stored.status.is(&status) => return false,
            Some(stored) => {
                stored.status = status.into();
                stored.version = next;
                stored.to_replica(grain_type, grain_key)
            }
            None => {
                let stored = Stored {
                    state: None,
                    sequence: 0,
                    timestamp_millis: 0,
                    source_cluster: intern(clusters, ""),
                    applied_at: None,
                    decoded_by: None,
                    status: status.into(),
                    version: next,
                };
                let replica = stored.to_replica(grain_type, grain_key);
                by_key.insert(grain_key.into(), stored);
                replica
            }
        };
        *version = next;
        self.publish(ChangeKind::Status, replica);
        true
    }

    /// A copy of one grain's replica.
    pub fn get(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        let grains = self.read();
        let stored = grains.by_type.get(grain_type)?.get(grain_key)?;
        Some(stored.to_replica(grain_type, grain_key))
    }

    /// The applied sequence of a grain that has state.
    pub fn applied_sequence(&self, grain_type: &str, grain_key: &str) -> Option<u64> {
        let grains = self.read();
        let stored = grains.by_type.get(grain_type)?.get(grain_key)?;
        stored.has_state().then_some(stored.sequence)
    }

    /// A page of a grain type's keys in ascending order: those strictly after
    /// `after` (from the start when `None`), at most `limit`.
    pub fn keys(&self, grain_type: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let grains = self.read();
        let Some(by_key) = grains.by_type.get(grain_type) else {
            return Vec::new();
        };
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        by_key
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(key, _)| key.as_ref().to_owned())
            .collect()
    }

    /// The grain types with at least one replica, sorted.
    pub fn grain_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .read()
            .by_type
            .iter()
            .filter(|(_, by_key)| !by_key.is_empty())
            .map(|(grain_type, _)| grain_type.clone())
            .collect();
        types.sort();
        types
    }

    /// How many replicas of a grain type are in each status.
    pub fn status_counts(&self, grain_type: &str) -> StatusCounts {
        let mut counts = StatusCounts::default();
        if let Some(by_key) = self.read().by_type.get(grain_type) {
            for stored in by_key.values() {
                match stored.status {
                    StoredStatus::Ok => counts.ok += 1,
                    StoredStatus::Behind(_) => counts.behind += 1,
                    StoredStatus::Failing(_) => counts.failing += 1,
                }
            }
        }
        counts
    }

    /// Orlando's freshness check: the grain has state and
    /// now − `timestamp_millis` ≤ `max_staleness_millis`, by this host's clock.
    pub fn is_fresh(&self, grain_type: &str, grain_key: &str, max_staleness_millis: u64) -> bool {
        self.is_fresh_at(grain_type, grain_key, max_staleness_millis, now_millis())
    }

    /// [`Self::is_fresh`] at a given `now` (Unix ms).
    pub fn is_fresh_at(
        &self,
        grain_type: &str,
        grain_key: &str,
        max_staleness_millis: u64,
        now_millis: i64,
    ) -> bool {
        let grains = self.read();
        let Some(replica) = grains
            .by_type
            .get(grain_type)
            .and_then(|m| m.get(grain_key))
        else {
            return false;
        };
        replica.has_state()
            && i128::from(now_millis) - i128::from(replica.timestamp_millis)
                <= i128::from(max_staleness_millis)
    }

    /// Removes every replica of a grain type (its plugin was removed);
    /// returns how many. Each removal is published.
    pub fn remove_type(&self, grain_type: &str) -> usize {
        let removed = self.write().by_type.remove(grain_type);
        let Some(by_key) = removed else { return 0 };
        let count = by_key.len();
        for (grain_key, stored) in by_key {
            self.publish(
                ChangeKind::Removed,
                stored.to_replica(grain_type, &grain_key),
            );
        }
        count
    }

    /// Removes a grain's replica, returning it.
    pub fn remove(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        let mut grains = self.write();
        let by_key = grains.by_type.get_mut(grain_type)?;
        let replica = by_key.remove(grain_key)?.to_replica(grain_type, grain_key);
        if by_key.is_empty() {
            grains.by_type.remove(grain_type);
        }
        self.publish(ChangeKind::Removed, replica.clone());
        Some(replica)
    }

    /// The store's version: bumped by every change to a replica.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// A page of a grain type's replicas that changed after store version
    /// `since`, in key order: of at most `scan` grains after `after` (all
    /// looked at, changed or not, so a page holds the lock briefly), those
    /// changed, and the key to continue after (`None` at the end).
    pub fn changed_since(
        &self,
        grain_type: &str,
        after: Option<&str>,
        scan: usize,
        since: u64,
    ) -> (Vec<Replica>, Option<String>) {
        use std::ops::Bound;
        let grains = self.read();
        let Some(by_key) = grains.by_type.get(grain_type) else {
            return (Vec::new(), None);
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut changed = Vec::new();
        let mut last = None;
        for (looked, (key, stored)) in by_key
            .range::<str, _>((lower, Bound::Unbounded))
            .enumerate()
        {
            if looked == scan {
                return (changed, last.map(str::to_owned));
            }
            last = Some(key.as_ref());
            if stored.version > since {
                changed.push(stored.to_replica(grain_type, key));
            }
        }
        (changed, None)
    }

    /// Restores replicas saved earlier (a checkpoint being loaded) into
    /// `grain_type`: each `(grain key, snapshot, status)`, without a
    /// snapshot for a grain that never decoded. One write-lock hold for
    /// all of them, nothing published: meant for a store nobody watches
    /// yet (a watcher that starts later reads the store first). A grain
    /// that already has a state keeps it. Returns how many were restored.
    pub fn restore(
        &self,
        grain_type: &str,
        replicas: Vec<(String, Option<Snapshot>, ReplicaStatus)>,
    ) -> usize {
        let applied_at = SystemTime::now();
        let mut grains = self.write();
        let Grains {
            by_type,
            clusters,
            version,
        } = &mut *grains;
        let by_key = match by_type.get_mut(grain_type) {
            Some(by_key) => by_key,
            None => by_type.entry(grain_type.to_owned()).or_default(),
        };
        let mut restored = 0;
        for (grain_key, snapshot, status) in replicas {
            if by_key
                .get(grain_key.as_str())
                .is_some_and(Stored::has_state)
            {
                continue;
            }
            *version += 1;
            let stored = match snapshot {
                Some(s) => Stored {
                    state: Some(s.state),
                    sequence: s.sequence,
                    timestamp_millis: s.timestamp_millis,
                    source_cluster: intern(clusters, &s.source_cluster),
                    applied_at: Some(applied_at),
                    decoded_by: s.decoded_by,
                    status: status.into(),
                    version: *version,
                },
                None => Stored {
                    state: None,
                    sequence: 0,
                    timestamp_millis: 0,
                    source_cluster: intern(clusters, ""),
                    applied_at: None,
                    decoded_by: None,
                    status: status.into(),
                    version: *version,
                },
            };
            by_key.insert(grain_key.into_boxed_str(), stored);
            restored += 1;
        }
        restored
    }

    /// A receiver of every change from now on (see the module docs on lag).
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaChange> {
        self.changes.subscribe()
    }
}

/// This host's wall clock as Unix milliseconds.
pub fn now_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests;
