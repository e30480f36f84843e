//! A stand-in for an Orlando primary: appends Orlando-format snapshots of
//! the three sample grain types to a log, with an occasional Delta.

use std::sync::Arc;
use std::time::Duration;

use super::orlando::{self, CounterState, UserProfile};
use crate::replication_log::{EntryType, LogEntry, LogWriter};
use crate::shutdown::StopSignal;
use crate::store::now_millis;

/// What the producer writes.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Grains per grain type.
    pub grains_per_type: usize,
    /// Pause between two rounds (each round updates one grain of each type).
    pub interval: Duration,
    /// Every how many entries of a grain a Delta is written (0: never).
    pub delta_every: u64,
    /// The cluster written as `source_cluster`.
    pub source_cluster: String,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            grains_per_type: 5,
            interval: Duration::from_millis(200),
            delta_every: 10,
            source_cluster: "us-east".into(),
        }
    }
}

/// Appends snapshots until `shutdown` stops; returns how many entries it wrote.
pub async fn run_producer(
    log: Arc<dyn LogWriter>,
    config: ProducerConfig,
    mut shutdown: StopSignal,
) -> u64 {
    let mut written = 0u64;
    let mut round = 0u64;
    loop {
        let i = (round as usize) % config.grains_per_type.max(1);
        let sequence = round / config.grains_per_type.max(1) as u64 + 1;
        let delta = config.delta_every > 0 && sequence.is_multiple_of(config.delta_every);
        for (grain_type, key, payload) in [
            (
                "Counter",
                format!("counter-{i}"),
                orlando::bincode(&CounterState {
                    count: sequence as i64 * 10 + i as i64,
                }),
            ),
            (
                "BankAccount",
                format!("account-{i}"),
                orlando::bincode(&orlando::sample_account(sequence)),
            ),
            (
                "UserProfile",
                format!("user-{i}"),
                orlando::json(&UserProfile {
                    name: format!("User {i}"),
                    email: format!("user{i}@example.com"),
                    visits: sequence as u32,
                    roles: if i == 0 { vec!["admin".into()] } else { vec![] },
                }),
            ),
        ] {
            let entry = LogEntry {
                grain_type: grain_type.into(),
                grain_key: key,
                sequence,
                timestamp_millis: now_millis(),
                source_cluster: config.source_cluster.clone(),
                entry_type: if delta {
                    EntryType::Delta
                } else {
                    EntryType::FullState
                },
                payload: payload.into(),
            };
            match log.append(&entry).await {
                Ok(_) => written += 1,
                Err(e) => tracing::warn!(error = %e, "demo producer: append failed"),
            }
        }
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.stopped() => return written,
        }
    }
}
