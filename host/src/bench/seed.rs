//! The baseline of the end-to-end benchmark: Orlando's own polling consumer
//! (ARCHITECTURE.md, "The consumer, and where it differs from Orlando's",
//! says what it does), reproduced faithfully over this host's log backends.
//!
//! One task per grain, told which grains to follow; every poll interval it
//! reads up to 100 entries after its last sequence, refuses the whole batch
//! on a Delta (moving past it), and otherwise stores the raw bytes of the
//! batch's last entry in an in-memory replica store (Orlando's store keeps
//! raw bytes and decodes on read). No discovery, no decoding, no Wasm.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::replication_log::{EntryType, LogRecord, ReplicationLog};

/// A replica as Orlando's store keeps it.
#[derive(Debug, Clone)]
pub struct RawReplica {
    /// The serialized state, as read.
    pub payload: Vec<u8>,
    /// The applied sequence.
    pub sequence: u64,
    /// The primary's timestamp of the applied entry.
    pub timestamp_millis: i64,
}

/// Called with the grain key and the replica at every update.
type Observer = dyn Fn(&str, &RawReplica) + Send + Sync;

/// Orlando's replica store: raw bytes per grain, in memory.
#[derive(Default)]
pub struct RawReplicaStore {
    replicas: RwLock<HashMap<(String, String), RawReplica>>,
    on_update: Option<Box<Observer>>,
}

impl RawReplicaStore {
    /// A store that calls `on_update` with the grain key and the replica at
    /// every update (the benchmark records replication lag there).
    pub fn with_observer(on_update: impl Fn(&str, &RawReplica) + Send + Sync + 'static) -> Self {
        Self {
            replicas: RwLock::default(),
            on_update: Some(Box::new(on_update)),
        }
    }

    /// Orlando's `update`.
    pub fn update(
        &self,
        grain_type: &str,
        grain_key: &str,
        payload: Vec<u8>,
        sequence: u64,
        timestamp_millis: i64,
    ) {
        let replica = RawReplica {
            payload,
            sequence,
            timestamp_millis,
        };
        if let Some(observer) = &self.on_update {
            observer(grain_key, &replica);
        }
        self.replicas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((grain_type.to_owned(), grain_key.to_owned()), replica);
    }

    /// Orlando's `get`.
    pub fn get(&self, grain_type: &str, grain_key: &str) -> Option<RawReplica> {
        self.replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(grain_type.to_owned(), grain_key.to_owned()))
            .cloned()
    }
}

/// Orlando's `ReplicationConsumer` for one grain.
pub struct SeedConsumer {
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The log.
    pub log: Arc<dyn ReplicationLog>,
    /// Where replicas go.
    pub replica_store: Arc<RawReplicaStore>,
    /// How often it polls.
    pub poll_interval: Duration,
    /// Stops it.
    pub shutdown_rx: watch::Receiver<bool>,
}

impl SeedConsumer {
    /// Orlando's `run`: call via `tokio::spawn`.
    pub async fn run(mut self) {
        let mut last_sequence = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = self.shutdown_rx.changed() => return,
            }
            match self
                .log
                .read_from(&self.grain_type, &self.grain_key, last_sequence, 100)
                .await
            {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    let sequence_of = |r: &LogRecord| match r {
                        LogRecord::Entry(e) => Some(e.sequence),
                        LogRecord::Refused(row) => row.sequence,
                    };
                    // A Delta (or a row Orlando's consumer could not have read) refuses
                    // the whole batch; move past it.
                    let refused = entries.iter().any(|r| match r {
                        LogRecord::Entry(e) => e.entry_type == EntryType::Delta,
                        LogRecord::Refused(_) => true,
                    });
                    if refused {
                        tracing::error!(
                            grain_type = %self.grain_type,
                            grain_key = %self.grain_key,
                            "seed consumer: Delta in batch; skipping batch"
                        );
                        last_sequence = entries
                            .iter()
                            .filter_map(sequence_of)
                            .max()
                            .unwrap_or(last_sequence);
                        continue;
                    }
                    for entry in &entries {
                        if let LogRecord::Entry(entry) = entry {
                            tracing::debug!(
                                grain_type = %entry.grain_type,
                                grain_key = %entry.grain_key,
                                sequence = entry.sequence,
                                source = %entry.source_cluster,
                                "replication consumer: applying entry"
                            );
                        }
                    }
                    if let Some(LogRecord::Entry(latest)) = entries.last() {
                        self.replica_store.update(
                            &self.grain_type,
                            &self.grain_key,
                            latest.payload.to_vec(),
                            latest.sequence,
                            latest.timestamp_millis,
                        );
                        last_sequence = latest.sequence;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        error = %e,
                        "replication consumer: failed to read from log"
                    );
                }
            }
        }
    }
}
