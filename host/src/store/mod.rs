//! The replica store: the typed state of every replicated grain, kept in
//! memory, plus the embedder API to read and watch it.
//!
//! One [`Replica`] per (grain type, grain key). Updates are sequence-guarded
//! ([`ReplicaStore::apply`] refuses a sequence not above the applied one), so
//! a replica never goes backwards. Locks are held only for map operations,
//! never across I/O or a decode.
//!
//! Watching: [`ReplicaStore::subscribe`] returns a `tokio::sync::broadcast`
//! receiver of every [`ReplicaChange`], in store order. A receiver that falls
//! more than the channel's capacity behind gets `RecvError::Lagged` and should
//! re-read what it needs with [`ReplicaStore::get`].

mod replica;

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

pub use replica::{
    ChangeKind, Replica, ReplicaChange, ReplicaStatus, Snapshot, StaleSnapshot, StatusCounts,
};

/// Default capacity of the change channel.
pub const DEFAULT_CHANGE_CAPACITY: usize = 1024;

/// Grain key → replica, sorted by key for listing.
type GrainMap = BTreeMap<String, Replica>;

/// The in-memory replicas of all grains, safe to share between threads.
#[derive(Debug)]
pub struct ReplicaStore {
    grains: RwLock<HashMap<String, GrainMap>>,
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
            grains: RwLock::new(HashMap::new()),
            changes,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, GrainMap>> {
        self.grains.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, GrainMap>> {
        self.grains.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, kind: ChangeKind, replica: &Replica) {
        // No receivers is not an error for the store.
        let _ = self.changes.send(ReplicaChange {
            kind,
            replica: replica.clone(),
        });
    }

    /// Applies a decoded snapshot with the grain's new status. Refuses (and
    /// changes nothing) when `snapshot.sequence` is not above the applied
    /// sequence. Returns the replica as stored.
    pub fn apply(
        &self,
        grain_type: &str,
        grain_key: &str,
        snapshot: Snapshot,
        status: ReplicaStatus,
    ) -> Result<Replica, StaleSnapshot> {
        let mut grains = self.write();
        let by_key = grains.entry(grain_type.to_owned()).or_default();
        if let Some(current) = by_key.get(grain_key)
            && current.has_state()
            && snapshot.sequence <= current.sequence
        {
            return Err(StaleSnapshot {
                grain_type: grain_type.to_owned(),
                grain_key: grain_key.to_owned(),
                current: current.sequence,
                offered: snapshot.sequence,
            });
        }
        let replica = Replica {
            grain_type: grain_type.to_owned(),
            grain_key: grain_key.to_owned(),
            state: Some(snapshot.state),
            sequence: snapshot.sequence,
            timestamp_millis: snapshot.timestamp_millis,
            source_cluster: snapshot.source_cluster,
            applied_at: Some(SystemTime::now()),
            status,
        };
        by_key.insert(grain_key.to_owned(), replica.clone());
        self.publish(ChangeKind::Applied, &replica);
        Ok(replica)
    }

    /// Sets a grain's status, keeping its state. A grain not in the store yet
    /// is added without state. Returns whether anything changed.
    pub fn set_status(&self, grain_type: &str, grain_key: &str, status: ReplicaStatus) -> bool {
        let mut grains = self.write();
        let by_key = grains.entry(grain_type.to_owned()).or_default();
        match by_key.get_mut(grain_key) {
            Some(replica) if replica.status == status => false,
            Some(replica) => {
                replica.status = status;
                let replica = replica.clone();
                self.publish(ChangeKind::Status, &replica);
                true
            }
            None => {
                let replica = Replica::empty(grain_type, grain_key, status);
                by_key.insert(grain_key.to_owned(), replica.clone());
                self.publish(ChangeKind::Status, &replica);
                true
            }
        }
    }

    /// A copy of one grain's replica.
    pub fn get(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        self.read().get(grain_type)?.get(grain_key).cloned()
    }

    /// The applied sequence of a grain that has state.
    pub fn applied_sequence(&self, grain_type: &str, grain_key: &str) -> Option<u64> {
        let grains = self.read();
        let replica = grains.get(grain_type)?.get(grain_key)?;
        replica.has_state().then_some(replica.sequence)
    }

    /// A page of a grain type's keys in ascending order: those strictly after
    /// `after` (from the start when `None`), at most `limit`.
    pub fn keys(&self, grain_type: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let grains = self.read();
        let Some(by_key) = grains.get(grain_type) else {
            return Vec::new();
        };
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        by_key
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The grain types with at least one replica, sorted.
    pub fn grain_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .read()
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
        if let Some(by_key) = self.read().get(grain_type) {
            for replica in by_key.values() {
                match replica.status {
                    ReplicaStatus::Ok => counts.ok += 1,
                    ReplicaStatus::Behind { .. } => counts.behind += 1,
                    ReplicaStatus::Failing { .. } => counts.failing += 1,
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
        let Some(replica) = grains.get(grain_type).and_then(|m| m.get(grain_key)) else {
            return false;
        };
        replica.has_state()
            && i128::from(now_millis) - i128::from(replica.timestamp_millis)
                <= i128::from(max_staleness_millis)
    }

    /// Removes a grain's replica, returning it.
    pub fn remove(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        let mut grains = self.write();
        let by_key = grains.get_mut(grain_type)?;
        let replica = by_key.remove(grain_key)?;
        if by_key.is_empty() {
            grains.remove(grain_type);
        }
        self.publish(ChangeKind::Removed, &replica);
        Some(replica)
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
