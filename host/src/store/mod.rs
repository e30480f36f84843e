//! The replica store: the typed state of every replicated grain, kept in
//! memory, plus the embedder API to read and watch it.
//!
//! One [`Replica`] per (grain type, grain key). Updates are sequence-guarded
//! ([`ReplicaStore::apply`] refuses a sequence not above the applied one,
//! but for the same sequence decoded by another plugin build: a re-decode),
//! so a replica never goes backwards. Locks are held only for map operations,
//! never across I/O or a decode.
//!
//! Following changes, three ways:
//! - [`ReplicaStore::feed`]: a grain type's change feed, each grain once at
//!   its newest state in the order of the changes, read from a [`Cursor`]
//!   (what the HTTP change streams use: a reader never falls behind a
//!   buffer, and resumes where it left off);
//! - [`ReplicaStore::wait_for`]: wait, holding no thread, until one grain's
//!   replica satisfies a condition (read-your-writes);
//! - [`ReplicaStore::subscribe`]: a `tokio::sync::broadcast` receiver of
//!   every [`ReplicaChange`], in store order. A receiver that falls more than
//!   the channel's capacity behind gets `RecvError::Lagged` and should
//!   re-read what it needs with [`ReplicaStore::get`].
//!
//! Longer than most modules on purpose: every method that takes the store's
//! one lock is here, so the rules that lock guards (the sequence guard, the
//! version bump, the change feed, the waiters) read in one place; the parts
//! that need no lock live beside it (`feed.rs`, `waiters.rs`, `replica.rs`).

mod feed;
mod replica;
mod waiters;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

use crate::decode::DecodedBy;
use crate::value::State;

pub use feed::{Cursor, FeedChange, FeedPage};
pub use replica::{
    ChangeKind, DecodedSnapshot, Replica, ReplicaChange, ReplicaStatus, Restored, StaleSnapshot,
    Standing, StatusCounts,
};

use feed::{FeedKey, TypeFeed};
use waiters::Waiters;

/// Default capacity of the change channel.
pub const DEFAULT_CHANGE_CAPACITY: usize = 1024;

/// Grain key → replica, sorted by key for listing.
type GrainMap = BTreeMap<Arc<str>, Stored>;

/// One grain type's replicas, by key and in the order they changed.
#[derive(Debug, Default)]
struct TypeGrains {
    /// The replicas, by key.
    by_key: GrainMap,
    /// The same keys by the version of their last change.
    feed: TypeFeed,
}

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
    /// The store's version when its sequence last changed.
    sequence_version: u64,
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
    by_type: HashMap<String, TypeGrains>,
    /// Every source cluster name, stored once.
    clusters: HashSet<Arc<str>>,
    /// Bumped by every change to a replica.
    version: u64,
    /// The version at which each removed grain type was removed: feed
    /// positions up to it must resync if the type comes back.
    removed_types: HashMap<String, u64>,
}

impl Grains {
    /// A grain type's replicas, created empty when missing.
    fn of_type(&mut self, grain_type: &str) -> &mut TypeGrains {
        if !self.by_type.contains_key(grain_type) {
            let forgotten = self.removed_types.get(grain_type).copied().unwrap_or(0);
            self.by_type.insert(
                grain_type.to_owned(),
                TypeGrains {
                    by_key: GrainMap::new(),
                    feed: TypeFeed::since(forgotten),
                },
            );
        }
        self.by_type.get_mut(grain_type).expect("inserted above")
    }
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
    /// The store version after every change, for readers of the feed.
    versions: watch::Sender<u64>,
    /// This store instance, in every [`Cursor`].
    epoch: u64,
    /// Readers waiting for a grain to change.
    waiters: Arc<Waiters>,
}

impl Default for ReplicaStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicaStore {
    /// An empty store whose change channel holds `DEFAULT_CHANGE_CAPACITY` events.
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
            versions: watch::Sender::new(0),
            epoch: random_epoch(),
            waiters: Arc::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Grains> {
        self.grains.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Grains> {
        self.grains.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the readers of the feed once the store has reached `version`
    /// (a later version is never replaced by an earlier one).
    fn version_reached(&self, version: u64) {
        self.versions.send_if_modified(|current| {
            let newer = version > *current;
            if newer {
                *current = version;
            }
            newer
        });
    }

    /// Tells everyone who follows the store that `replica` changed (called
    /// after the lock is released).
    fn publish(&self, kind: ChangeKind, replica: Replica, version: u64) {
        self.version_reached(version);
        self.waiters
            .changed(&replica.grain_type, &replica.grain_key);
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
        snapshot: DecodedSnapshot,
        status: ReplicaStatus,
    ) -> Result<Replica, StaleSnapshot> {
        let replica = self
            .apply_keeping(grain_type, grain_key, snapshot, status, true)?
            .expect("asked for");
        Ok(replica)
    }

    /// [`Self::apply`] for a caller that does not need the replica back
    /// (the consumer): a copy of it is made only for the subscribers of
    /// [`Self::subscribe`], when there are any. At a million grains a
    /// catch-up saves a million copies, or two.
    pub(crate) fn apply_quietly(
        &self,
        grain_type: &str,
        grain_key: &str,
        snapshot: DecodedSnapshot,
        status: ReplicaStatus,
    ) -> Result<(), StaleSnapshot> {
        self.apply_keeping(grain_type, grain_key, snapshot, status, false)
            .map(drop)
    }

    /// [`Self::apply`]; the replica is returned when `keep`.
    fn apply_keeping(
        &self,
        grain_type: &str,
        grain_key: &str,
        snapshot: DecodedSnapshot,
        status: ReplicaStatus,
        keep: bool,
    ) -> Result<Option<Replica>, StaleSnapshot> {
        let mut grains = self.write();
        let copy = keep || self.changes.receiver_count() > 0;
        let applied_at = SystemTime::now();
        let (version, replica) = apply_locked(
            &mut grains,
            grain_type,
            KeyOf::Str(grain_key),
            snapshot,
            status,
            applied_at,
            copy,
        )?;
        drop(grains);
        match replica {
            Some(replica) if keep => {
                self.publish(ChangeKind::Applied, replica.clone(), version);
                Ok(Some(replica))
            }
            Some(replica) => {
                self.publish(ChangeKind::Applied, replica, version);
                Ok(None)
            }
            None => {
                // Nobody subscribes: the feed and the waiters still learn.
                self.version_reached(version);
                self.waiters.changed(grain_type, grain_key);
                Ok(None)
            }
        }
    }

    /// [`Self::apply_quietly`] for many grains of one type at once (a
    /// catch-up's decoder call): one hold of the lock and one wake-up of the
    /// feed's readers for all of them. Each grain's key is shared with the
    /// caller, not copied. Returns each grain's outcome, in order.
    pub(crate) fn apply_many(
        &self,
        grain_type: &str,
        batch: Vec<(Arc<str>, DecodedSnapshot, ReplicaStatus)>,
    ) -> Vec<Result<(), StaleSnapshot>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut published = Vec::new();
        let mut keys = Vec::with_capacity(batch.len());
        let mut reached = 0;
        let mut grains = self.write();
        let copy = self.changes.receiver_count() > 0;
        let applied_at = SystemTime::now();
        grains.of_type(grain_type);
        let Grains {
            by_type,
            clusters,
            version,
            ..
        } = &mut *grains;
        let of_type = by_type.get_mut(grain_type).expect("made above");
        let mut cluster: Option<Arc<str>> = None;
        let mut next = *version;
        for (key, snapshot, status) in batch {
            let source_cluster = match &cluster {
                Some(last) if **last == *snapshot.source_cluster => Arc::clone(last),
                _ => {
                    let interned = intern(clusters, &snapshot.source_cluster);
                    cluster = Some(Arc::clone(&interned));
                    interned
                }
            };
            let applied = apply_to_type(
                of_type,
                next + 1,
                grain_type,
                KeyOf::Shared(&key),
                snapshot,
                source_cluster,
                status,
                applied_at,
                copy,
            );
            outcomes.push(applied.map(|replica| {
                next += 1;
                reached = next;
                published.extend(replica);
            }));
            keys.push(key);
        }
        *version = next;
        drop(grains);
        if reached > 0 {
            self.version_reached(reached);
        }
        for key in &keys {
            self.waiters.changed(grain_type, key);
        }
        for replica in published {
            // No receivers is not an error for the store.
            let _ = self.changes.send(ReplicaChange {
                kind: ChangeKind::Applied,
                replica,
            });
        }
        outcomes
    }

    /// Sets a grain's status, keeping its state. A grain not in the store yet
    /// is added without state. Returns whether anything changed.
    pub fn set_status(&self, grain_type: &str, grain_key: &str, status: ReplicaStatus) -> bool {
        let mut grains = self.write();
        let next = grains.version + 1;
        let cluster = intern(&mut grains.clusters, "");
        let of_type = grains.of_type(grain_type);
        let replica = match of_type.by_key.get_key_value(grain_key) {
            Some((_, stored)) if stored.status.is(&status) => return false,
            Some((key, stored)) => {
                let (key, previous) = (Arc::clone(key), stored.version);
                let stored = of_type.by_key.get_mut(grain_key).expect("found above");
                stored.status = status.into();
                stored.version = next;
                let replica = stored.to_replica(grain_type, grain_key);
                of_type.feed.moved(&key, Some(previous), next);
                replica
            }
            None => {
                let stored = Stored {
                    state: None,
                    sequence: 0,
                    timestamp_millis: 0,
                    source_cluster: cluster,
                    applied_at: None,
                    decoded_by: None,
                    status: status.into(),
                    version: next,
                    sequence_version: next,
                };
                let replica = stored.to_replica(grain_type, grain_key);
                let key: Arc<str> = grain_key.into();
                of_type.feed.moved(&key, None, next);
                of_type.by_key.insert(key, stored);
                replica
            }
        };
        grains.version = next;
        drop(grains);
        self.publish(ChangeKind::Status, replica, next);
        true
    }

    /// A copy of one grain's replica.
    pub fn get(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        let grains = self.read();
        let stored = grains.by_type.get(grain_type)?.by_key.get(grain_key)?;
        Some(stored.to_replica(grain_type, grain_key))
    }

    /// Where a grain's replica stands, without copying its state or names:
    /// what a consumer starting on the grain needs (`None` when the store
    /// does not hold the grain).
    pub fn standing(&self, grain_type: &str, grain_key: &str) -> Option<Standing> {
        let grains = self.read();
        let stored = grains.by_type.get(grain_type)?.by_key.get(grain_key)?;
        Some(Standing {
            applied: stored.has_state().then_some(stored.sequence),
            decoded_by: stored.decoded_by.clone(),
            status: stored.status.to_status(),
        })
    }

    /// Whether the store holds any replica of `grain_type`.
    pub(crate) fn holds_type(&self, grain_type: &str) -> bool {
        self.read()
            .by_type
            .get(grain_type)
            .is_some_and(|t| !t.by_key.is_empty())
    }

    /// The applied sequence of a grain that has state.
    pub fn applied_sequence(&self, grain_type: &str, grain_key: &str) -> Option<u64> {
        let grains = self.read();
        let stored = grains.by_type.get(grain_type)?.by_key.get(grain_key)?;
        stored.has_state().then_some(stored.sequence)
    }

    /// Waits until `done` holds for the grain's replica (`None` while the
    /// store has none), or until `timeout` passes; returns the replica as it
    /// was last seen. Holds no thread while it waits: it is woken when this
    /// grain changes.
    pub async fn wait_for(
        &self,
        grain_type: &str,
        grain_key: &str,
        timeout: Duration,
        mut done: impl FnMut(Option<&Replica>) -> bool,
    ) -> Option<Replica> {
        let deadline = tokio::time::Instant::now() + timeout;
        let registration = self.waiters.register(grain_type, grain_key);
        loop {
            let woken = registration.notify.notified();
            tokio::pin!(woken);
            // Registered before the read, so no change slips in between.
            woken.as_mut().enable();
            let replica = self.get(grain_type, grain_key);
            if done(replica.as_ref()) {
                return replica;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return self.get(grain_type, grain_key);
            }
        }
    }

    /// Readers waiting in [`Self::wait_for`] now.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// A page of a grain type's keys in ascending order: those strictly after
    /// `after` (from the start when `None`), at most `limit`.
    pub fn keys(&self, grain_type: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let grains = self.read();
        let Some(of_type) = grains.by_type.get(grain_type) else {
            return Vec::new();
        };
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        of_type
            .by_key
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
            .filter(|(_, of_type)| !of_type.by_key.is_empty())
            .map(|(grain_type, _)| grain_type.clone())
            .collect();
        types.sort();
        types
    }

    /// How many replicas of a grain type are in each status.
    pub fn status_counts(&self, grain_type: &str) -> StatusCounts {
        let mut counts = StatusCounts::default();
        if let Some(of_type) = self.read().by_type.get(grain_type) {
            for stored in of_type.by_key.values() {
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
            .and_then(|t| t.by_key.get(grain_key))
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
        let (removed, version) = {
            let mut grains = self.write();
            let Some(removed) = grains.by_type.remove(grain_type) else {
                return 0;
            };
            grains.version += 1;
            let version = grains.version;
            grains.removed_types.insert(grain_type.to_owned(), version);
            (removed, version)
        };
        let count = removed.by_key.len();
        self.waiters.type_changed(grain_type);
        for (grain_key, stored) in removed.by_key {
            self.publish(
                ChangeKind::Removed,
                stored.to_replica(grain_type, &grain_key),
                version,
            );
        }
        count
    }

    /// Removes a grain's replica, returning it.
    pub fn remove(&self, grain_type: &str, grain_key: &str) -> Option<Replica> {
        let mut grains = self.write();
        let next = grains.version + 1;
        let of_type = grains.by_type.get_mut(grain_type)?;
        let (key, stored) = of_type.by_key.remove_entry(grain_key)?;
        of_type.feed.removed(key, stored.version, next);
        grains.version = next;
        drop(grains);
        let replica = stored.to_replica(grain_type, grain_key);
        self.publish(ChangeKind::Removed, replica.clone(), next);
        Some(replica)
    }

    /// The store's version: bumped by every change to a replica.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// A receiver of the store's version, updated after every change: what
    /// a reader of [`Self::feed`] waits on.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// The feed position before any change of this store instance.
    pub fn feed_start(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            version: 0,
        }
    }

    /// Up to `limit` changes of a grain type after `after`, each grain once
    /// at its newest state, in the order they happened (see `FeedPage`).
    pub fn feed(&self, grain_type: &str, after: Cursor, limit: usize) -> FeedPage {
        if after.epoch != self.epoch {
            return FeedPage::Resync;
        }
        let grains = self.read();
        let Some(of_type) = grains.by_type.get(grain_type) else {
            let forgotten = grains.removed_types.get(grain_type).copied().unwrap_or(0);
            return if after.version < forgotten {
                FeedPage::Resync
            } else {
                FeedPage::Changes {
                    changes: Vec::new(),
                    next: after,
                }
            };
        };
        let Some(page) = of_type.feed.after(after.version, limit) else {
            return FeedPage::Resync;
        };
        let mut next = after;
        let changes = page
            .into_iter()
            .filter_map(|(version, key)| {
                let cursor = Cursor {
                    epoch: self.epoch,
                    version,
                };
                next = cursor;
                Some(match key {
                    FeedKey::Changed(key) => {
                        let stored = of_type.by_key.get(&key)?;
                        FeedChange::Replica {
                            replica: stored.to_replica(grain_type, &key),
                            new_sequence: stored.sequence_version > after.version,
                            cursor,
                        }
                    }
                    FeedKey::Removed(key) => FeedChange::Removed {
                        grain_key: key.as_ref().to_owned(),
                        cursor,
                    },
                })
            })
            .collect();
        FeedPage::Changes { changes, next }
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
        let Some(of_type) = grains.by_type.get(grain_type) else {
            return (Vec::new(), None);
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut changed = Vec::new();
        let mut last = None;
        for (looked, (key, stored)) in of_type
            .by_key
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
    /// `grain_type`. One write-lock hold for all of them; nothing is
    /// broadcast (meant for a store nobody subscribes to yet), but the
    /// change feed holds them like any change. A grain that already has a
    /// state keeps it. Returns how many were restored.
    ///
    /// Into a grain type that holds no replica, with the keys ascending
    /// (a checkpoint's order), the maps are built in bulk, not one insert at
    /// a time: hand over a type's replicas in one call.
    pub fn restore(&self, grain_type: &str, replicas: Vec<Restored>) -> usize {
        let applied_at = SystemTime::now();
        let ascending = replicas
            .windows(2)
            .all(|pair| pair[0].grain_key < pair[1].grain_key);
        let mut grains = self.write();
        let empty = grains
            .by_type
            .get(grain_type)
            .is_none_or(|t| t.by_key.is_empty());
        let restored = if empty && ascending {
            restore_in_bulk(&mut grains, grain_type, replicas, applied_at)
        } else {
            restore_each(&mut grains, grain_type, replicas, applied_at)
        };
        let version = grains.version;
        drop(grains);
        self.version_reached(version);
        restored
    }

    /// A receiver of every change from now on (see the module docs on lag).
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaChange> {
        self.changes.subscribe()
    }
}

/// A grain key as a caller has it: borrowed (copied into the store when
/// the grain is new) or already shared.
enum KeyOf<'a> {
    Str(&'a str),
    Shared(&'a Arc<str>),
}

/// The sequence guard and the update of one grain, under the write lock:
/// the new version, and a copy of the replica when `copy`.
fn apply_locked(
    grains: &mut Grains,
    grain_type: &str,
    grain_key: KeyOf<'_>,
    snapshot: DecodedSnapshot,
    status: ReplicaStatus,
    applied_at: SystemTime,
    copy: bool,
) -> Result<(u64, Option<Replica>), StaleSnapshot> {
    let source_cluster = intern(&mut grains.clusters, &snapshot.source_cluster);
    let next = grains.version + 1;
    let of_type = grains.of_type(grain_type);
    let applied = apply_to_type(
        of_type,
        next,
        grain_type,
        grain_key,
        snapshot,
        source_cluster,
        status,
        applied_at,
        copy,
    )?;
    grains.version = next;
    Ok((next, applied))
}

/// [`apply_locked`] within one grain type's replicas, at store version
/// `version`, with the source cluster already interned: a shared key is
/// looked up once, a borrowed one copied only when the grain is new.
#[allow(clippy::too_many_arguments)]
fn apply_to_type(
    of_type: &mut TypeGrains,
    version: u64,
    grain_type: &str,
    grain_key: KeyOf<'_>,
    snapshot: DecodedSnapshot,
    source_cluster: Arc<str>,
    status: ReplicaStatus,
    applied_at: SystemTime,
    copy: bool,
) -> Result<Option<Replica>, StaleSnapshot> {
    use std::collections::btree_map::Entry;
    let key = match grain_key {
        KeyOf::Shared(key) => Arc::clone(key),
        KeyOf::Str(key) => match of_type.by_key.get_key_value(key) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::from(key),
        },
    };
    let DecodedSnapshot {
        state,
        sequence,
        timestamp_millis,
        decoded_by,
        ..
    } = snapshot;
    let (key, sequence_version, slot) = match of_type.by_key.entry(key) {
        Entry::Vacant(vacant) => {
            let key = Arc::clone(vacant.key());
            of_type.feed.moved(&key, None, version);
            (key, version, Err(vacant))
        }
        Entry::Occupied(occupied) => {
            let current = occupied.get();
            if current.has_state()
                && (sequence < current.sequence
                    || (sequence == current.sequence && decoded_by == current.decoded_by))
            {
                return Err(StaleSnapshot {
                    grain_type: grain_type.to_owned(),
                    grain_key: occupied.key().as_ref().to_owned(),
                    current: current.sequence,
                    offered: sequence,
                });
            }
            let kept = (current.has_state() && current.sequence == sequence)
                .then_some(current.sequence_version);
            let key = Arc::clone(occupied.key());
            of_type.feed.moved(&key, Some(current.version), version);
            (key, kept.unwrap_or(version), Ok(occupied))
        }
    };
    let stored = Stored {
        state: Some(state),
        sequence,
        timestamp_millis,
        source_cluster,
        applied_at: Some(applied_at),
        decoded_by,
        status: status.into(),
        version,
        sequence_version,
    };
    let stored: &Stored = match slot {
        Err(vacant) => vacant.insert(stored),
        Ok(mut occupied) => {
            occupied.insert(stored);
            occupied.into_mut()
        }
    };
    Ok(copy.then(|| stored.to_replica(grain_type, &key)))
}

/// What the store keeps of a restored replica, at `version`; its source
/// cluster already interned.
fn restored(r: Restored, cluster: Arc<str>, applied_at: SystemTime, version: u64) -> Stored {
    let has_state = r.state.is_some();
    Stored {
        sequence: if has_state { r.sequence } else { 0 },
        timestamp_millis: if has_state { r.timestamp_millis } else { 0 },
        source_cluster: cluster,
        applied_at: has_state.then_some(applied_at),
        decoded_by: if has_state { r.decoded_by } else { None },
        state: r.state,
        status: r.status.into(),
        version,
        sequence_version: version,
    }
}

/// Interns restored replicas' clusters, remembering the last one (a
/// checkpoint's rows share a few clusters, handed over as one `Arc` each).
#[derive(Default)]
struct LastCluster(Option<(Arc<str>, Arc<str>)>);

impl LastCluster {
    fn intern(&mut self, clusters: &mut HashSet<Arc<str>>, r: &Restored) -> Arc<str> {
        let given = if r.state.is_some() {
            &r.source_cluster
        } else {
            return intern(clusters, "");
        };
        if let Some((last, interned)) = &self.0
            && (Arc::ptr_eq(last, given) || last == given)
        {
            return Arc::clone(interned);
        }
        let interned = intern(clusters, given);
        self.0 = Some((Arc::clone(given), Arc::clone(&interned)));
        interned
    }
}

/// [`ReplicaStore::restore`] into a grain type without replicas, the keys
/// ascending: both maps built from sorted runs.
fn restore_in_bulk(
    grains: &mut Grains,
    grain_type: &str,
    replicas: Vec<Restored>,
    applied_at: SystemTime,
) -> usize {
    let count = replicas.len();
    let mut by_key = Vec::with_capacity(count);
    let mut by_version = Vec::with_capacity(count);
    let mut last = LastCluster::default();
    for r in replicas {
        grains.version += 1;
        let version = grains.version;
        let cluster = last.intern(&mut grains.clusters, &r);
        let key = Arc::clone(&r.grain_key);
        by_version.push((version, Arc::clone(&key)));
        by_key.push((key, restored(r, cluster, applied_at, version)));
    }
    let of_type = grains.of_type(grain_type);
    // Both runs are sorted: the maps are built without a search per key.
    of_type.by_key = by_key.into_iter().collect();
    if of_type.feed.by_version.is_empty() {
        of_type.feed.by_version = by_version.into_iter().collect();
    } else {
        of_type.feed.by_version.extend(by_version);
    }
    count
}

/// [`ReplicaStore::restore`] one replica at a time.
fn restore_each(
    grains: &mut Grains,
    grain_type: &str,
    replicas: Vec<Restored>,
    applied_at: SystemTime,
) -> usize {
    let mut restored_count = 0;
    let mut last = LastCluster::default();
    for r in replicas {
        let previous = match grains
            .by_type
            .get(grain_type)
            .and_then(|t| t.by_key.get_key_value(&r.grain_key))
        {
            Some((_, stored)) if stored.has_state() => continue,
            Some((key, stored)) => Some((Arc::clone(key), stored.version)),
            None => None,
        };
        grains.version += 1;
        let version = grains.version;
        let cluster = last.intern(&mut grains.clusters, &r);
        let (key, previous_version) = match previous {
            Some((key, previous_version)) => (key, Some(previous_version)),
            None => (Arc::clone(&r.grain_key), None),
        };
        let stored = restored(r, cluster, applied_at, version);
        let of_type = grains.of_type(grain_type);
        of_type.feed.moved(&key, previous_version, version);
        of_type.by_key.insert(key, stored);
        restored_count += 1;
    }
    restored_count
}

/// A number that differs between store instances (and processes).
fn random_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
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
