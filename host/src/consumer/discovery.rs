//! One grain type's discovery task: asks the log every poll interval which
//! of the type's grains have new entries (with their newest sequences),
//! starts a grain task for each new grain, and passes each running grain
//! task its grain's head.
//!
//! The first poll lists every grain. Later polls ask only for what changed
//! since the last answer ([`ReplicationLog::changes_since`]), which backends
//! with a change watermark answer in O(new rows) rather than O(rows): the
//! idle cost of a poll does not grow with the number of grains. Every
//! [`RECONCILE_EVERY`], and whenever the backend cannot answer
//! incrementally, a full listing is done again as a safety net.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};

use tokio::time::Instant;

use super::SnapshotDecoder;
use super::config::ConsumerConfig;
use super::grain::GrainTask;
use super::metrics::GrainTypeCounters;
use super::shutdown::stopped;
use crate::replication_log::{ChangeCursor, GrainHead, ReplicationLog};
use crate::store::ReplicaStore;

/// How often discovery lists every grain even when the log can answer
/// incrementally: the safety net against a watermark that missed a change.
pub(crate) const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Everything one grain type's discovery needs.
pub(crate) struct Discovery {
    pub(crate) grain_type: String,
    pub(crate) log: Arc<dyn ReplicationLog>,
    pub(crate) store: Arc<ReplicaStore>,
    pub(crate) decoder: Arc<dyn SnapshotDecoder>,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) counters: Arc<GrainTypeCounters>,
}

/// The running grain tasks of one grain type.
#[derive(Default)]
struct Grains {
    heads: HashMap<String, watch::Sender<u64>>,
    tasks: JoinSet<()>,
    keys: HashMap<Id, String>,
}

impl Discovery {
    /// Runs until shutdown, then waits for its grain tasks to stop.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut grains = Grains::default();
        let mut failures = 0u32;
        let mut cursor: Option<ChangeCursor> = None;
        let mut listed_all_at: Option<Instant> = None;
        'poll: loop {
            let reconcile = listed_all_at.is_none_or(|at| at.elapsed() >= RECONCILE_EVERY);
            let since = if reconcile { None } else { cursor.as_ref() };
            let listed = tokio::select! {
                () = stopped(&mut shutdown) => break 'poll,
                listed = self.log.changes_since(&self.grain_type, since) => listed,
            };
            let wait = match listed {
                Ok(changes) => {
                    if changes.complete {
                        listed_all_at = Some(Instant::now());
                    }
                    cursor = changes.cursor;
                    let heads = changes.heads;
                    if failures > 0 {
                        tracing::info!(
                            grain_type = %self.grain_type,
                            failures,
                            "listing grains again"
                        );
                        failures = 0;
                    }
                    for head in heads {
                        self.update(head, &mut grains, &shutdown);
                    }
                    self.config.poll()
                }
                Err(error) => {
                    failures += 1;
                    self.counters.discovery_error();
                    let delay = self.config.backoff(failures);
                    tracing::warn!(
                        grain_type = %self.grain_type,
                        %error,
                        failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "failed to list the grain type's grains; retrying"
                    );
                    delay
                }
            };
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    () = stopped(&mut shutdown) => break 'poll,
                    () = tokio::time::sleep_until(deadline) => break,
                    Some(joined) = grains.tasks.join_next_with_id() => {
                        self.reap(joined, &mut grains);
                    }
                }
            }
        }
        // Grain tasks watch the same signal; closing the heads stops any
        // that are waiting on theirs.
        grains.heads.clear();
        while let Some(joined) = grains.tasks.join_next_with_id().await {
            self.reap(joined, &mut grains);
        }
        tracing::debug!(grain_type = %self.grain_type, "grain type's consumers stopped");
    }

    /// Starts a task for a new grain, or passes a known grain its head.
    fn update(&self, head: GrainHead, grains: &mut Grains, shutdown: &watch::Receiver<bool>) {
        if let Some(sender) = grains.heads.get(&head.grain_key) {
            sender.send_if_modified(|known| {
                let newer = head.latest_sequence > *known;
                if newer {
                    *known = head.latest_sequence;
                }
                newer
            });
            return;
        }
        let (sender, receiver) = watch::channel(head.latest_sequence);
        let task = GrainTask {
            grain_type: self.grain_type.clone(),
            grain_key: head.grain_key.clone(),
            log: Arc::clone(&self.log),
            store: Arc::clone(&self.store),
            decoder: Arc::clone(&self.decoder),
            config: Arc::clone(&self.config),
            counters: Arc::clone(&self.counters),
        };
        let handle = grains.tasks.spawn(task.run(receiver, shutdown.clone()));
        grains.keys.insert(handle.id(), head.grain_key.clone());
        self.counters.grain_discovered();
        tracing::debug!(
            grain_type = %self.grain_type,
            grain_key = %head.grain_key,
            sequence = head.latest_sequence,
            "discovered grain"
        );
        grains.heads.insert(head.grain_key, sender);
    }

    /// Forgets a finished grain task. One that panicked is started again at
    /// the next poll.
    fn reap(&self, joined: Result<(Id, ()), JoinError>, grains: &mut Grains) {
        let id = match &joined {
            Ok((id, ())) => *id,
            Err(error) => error.id(),
        };
        let Some(grain_key) = grains.keys.remove(&id) else {
            return;
        };
        grains.heads.remove(&grain_key);
        if let Err(error) = joined
            && error.is_panic()
        {
            tracing::error!(
                grain_type = %self.grain_type,
                grain_key = %grain_key,
                %error,
                "grain consumer panicked; restarting it at the next poll"
            );
        }
    }
}
