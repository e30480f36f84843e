//! One grain's consumer task: reads the grain's entries when there is
//! something to read, decodes and applies snapshots, keeps the replica's
//! status, and retries with backoff.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::SnapshotDecoder;
use super::batch::{Cursor, Failure};
use super::config::ConsumerConfig;
use super::log_limiter::limited;
use super::metrics::GrainTypeCounters;
use super::shutdown::{is_stopped, stopped};
use crate::plugin::{CallError, CallErrorKind};
use crate::replication_log::{LogEntry, LogRecord, ReplicationLog};
use crate::store::{ReplicaStatus, ReplicaStore, Snapshot};
use crate::value::Value;

/// Shutdown was signalled in the middle of a batch.
struct Stopped;

/// Everything one grain's consumer needs.
pub(crate) struct GrainTask {
    pub(crate) grain_type: String,
    pub(crate) grain_key: String,
    pub(crate) log: Arc<dyn ReplicationLog>,
    pub(crate) store: Arc<ReplicaStore>,
    pub(crate) decoder: Arc<dyn SnapshotDecoder>,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) counters: Arc<GrainTypeCounters>,
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl GrainTask {
    /// Runs until shutdown. `head` carries the grain's newest sequence in
    /// the log, kept current by the grain type's discovery task.
    pub(crate) async fn run(
        self,
        mut head: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let limit = self.config.limit();
        let applied = self
            .store
            .applied_sequence(&self.grain_type, &self.grain_key);
        let mut cursor = Cursor::new(applied.unwrap_or(0));
        let mut last_status = self
            .store
            .get(&self.grain_type, &self.grain_key)
            .map(|r| r.status);
        let mut read_failures = 0u32;
        let mut read_retry_at: Option<Instant> = None;
        let mut decode_retries = 0u32;
        let mut decode_retry_at: Option<Instant> = None;
        // The last batch was full and moved on: read again without waiting.
        let mut more = false;
        // A head already read up to without finding anything new.
        let mut served_head = 0u64;

        loop {
            if is_stopped(&shutdown) {
                return;
            }
            let head_now = *head.borrow_and_update();
            let now = Instant::now();
            let retry = decode_retry_at.is_some_and(|at| now >= at);
            let due = match read_retry_at {
                Some(at) => now >= at,
                None => more || retry || (head_now > cursor.seen() && head_now > served_head),
            };
            if !due {
                let backing_off = read_retry_at.is_some();
                tokio::select! {
                    () = stopped(&mut shutdown) => return,
                    changed = head.changed(), if !backing_off => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = sleep_until(read_retry_at.or(decode_retry_at)) => {}
                }
                continue;
            }

            let from = cursor.read_after(retry);
            let read = tokio::select! {
                () = stopped(&mut shutdown) => return,
                read = self.log.read_from(&self.grain_type, &self.grain_key, from, limit) => read,
            };
            let records = match read {
                Ok(records) => records,
                Err(error) => {
                    read_failures += 1;
                    self.counters.read_error();
                    let delay = self.config.backoff(read_failures);
                    limited(&self.grain_type, "read_error", &self.grain_key, || {
                        tracing::warn!(
                            grain_type = %self.grain_type,
                            grain_key = %self.grain_key,
                            sequence = from,
                            %error,
                            failures = read_failures,
                            retry_in_ms = delay.as_millis() as u64,
                            "failed to read the replication log; retrying"
                        )
                    });
                    read_retry_at = Some(Instant::now() + delay);
                    more = false;
                    continue;
                }
            };
            if read_failures > 0 {
                limited(&self.grain_type, "read_resumed", &self.grain_key, || {
                    tracing::info!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        sequence = from,
                        failures = read_failures,
                        "reading the replication log again"
                    )
                });
                read_failures = 0;
                read_retry_at = None;
            }

            if !records.is_empty()
                && self
                    .process(&mut cursor, from, &records, &mut shutdown, &mut last_status)
                    .await
                    .is_err()
            {
                return;
            }
            let progressed = cursor.seen() > from;
            more = progressed && records.len() >= limit;
            if !progressed {
                served_head = head_now;
            }

            if cursor.failing().is_none() {
                decode_retries = 0;
                decode_retry_at = None;
            } else if retry || decode_retry_at.is_none() {
                if retry {
                    decode_retries = decode_retries.saturating_add(1);
                }
                let delay = self.config.backoff(decode_retries.saturating_add(1));
                decode_retry_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Handles one non-empty batch read after `from`.
    async fn process(
        &self,
        cursor: &mut Cursor,
        from: u64,
        records: &[LogRecord],
        shutdown: &mut watch::Receiver<bool>,
        last_status: &mut Option<ReplicaStatus>,
    ) -> Result<(), Stopped> {
        let plan = cursor.plan(records);
        for &index in &plan.refusals {
            self.report_refusal(&records[index]);
        }

        let mut applied = None;
        let mut snapshot = None;
        let mut failures = Vec::new();
        for &index in &plan.attempts {
            let LogRecord::Entry(entry) = &records[index] else {
                continue;
            };
            let decoded = tokio::select! {
                () = stopped(shutdown) => return Err(Stopped),
                decoded = decode_catching(self.decoder.as_ref(), entry) => decoded,
            };
            match decoded {
                Ok(value) => {
                    applied = Some(index);
                    snapshot = Some(Snapshot {
                        state: Arc::new(value),
                        sequence: entry.sequence,
                        timestamp_millis: entry.timestamp_millis,
                        source_cluster: entry.source_cluster.clone(),
                    });
                    break;
                }
                Err(error) => {
                    self.counters.decode_failed(error.kind);
                    limited(
                        &self.grain_type,
                        error.kind.as_str(),
                        &self.grain_key,
                        || {
                            tracing::warn!(
                                grain_type = %self.grain_type,
                                grain_key = %self.grain_key,
                                sequence = entry.sequence,
                                kind = %error.kind,
                                plugin = %error.plugin,
                                error = %error.message,
                                "snapshot did not decode"
                            )
                        },
                    );
                    failures.push(Failure {
                        sequence: entry.sequence,
                        kind: error.kind,
                        reason: format!("{}: {}", error.kind, error.message),
                    });
                }
            }
        }

        let settlement = cursor.settle(from, records, applied, &failures);
        if !settlement.skipped.is_empty() {
            self.counters.snapshots_skipped(settlement.skipped.len());
            tracing::debug!(
                grain_type = %self.grain_type,
                grain_key = %self.grain_key,
                sequence = cursor.applied(),
                skipped = ?settlement.skipped,
                "older snapshots superseded without decoding"
            );
        }

        let status = cursor.status();
        let was_failing = matches!(last_status, Some(ReplicaStatus::Failing { .. }));
        if let Some(snapshot) = snapshot {
            let sequence = snapshot.sequence;
            match self
                .store
                .apply(&self.grain_type, &self.grain_key, snapshot, status.clone())
            {
                Ok(_) => {
                    self.counters.snapshot_applied();
                    tracing::debug!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        sequence,
                        status = status.label(),
                        "applied snapshot"
                    );
                }
                Err(stale) => {
                    tracing::warn!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        sequence,
                        current = stale.current,
                        "the store holds a newer snapshot; not applied"
                    );
                    self.store
                        .set_status(&self.grain_type, &self.grain_key, status.clone());
                }
            }
        } else if last_status.as_ref() != Some(&status)
            && (last_status.is_some() || status != ReplicaStatus::Ok)
        {
            self.store
                .set_status(&self.grain_type, &self.grain_key, status.clone());
        }
        if was_failing && !matches!(status, ReplicaStatus::Failing { .. }) {
            limited(&self.grain_type, "recovered", &self.grain_key, || {
                tracing::info!(
                    grain_type = %self.grain_type,
                    grain_key = %self.grain_key,
                    sequence = cursor.applied(),
                    "grain recovered: a newer snapshot decoded"
                )
            });
        }
        *last_status = Some(status);
        Ok(())
    }

    /// Logs and counts a Delta or an uninterpretable row.
    fn report_refusal(&self, record: &LogRecord) {
        match record {
            LogRecord::Entry(entry) => {
                self.counters.delta_refused();
                limited(&self.grain_type, "delta", &self.grain_key, || {
                    tracing::error!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        sequence = entry.sequence,
                        "refused a Delta entry: only FullState snapshots are supported"
                    )
                });
            }
            LogRecord::Refused(row) => {
                self.counters.row_refused();
                limited(&self.grain_type, "refused_row", &self.grain_key, || {
                    tracing::error!(
                        grain_type = %self.grain_type,
                        grain_key = %self.grain_key,
                        sequence = row.sequence,
                        reason = %row.reason,
                        "refused a log row the host cannot interpret"
                    )
                });
            }
        }
    }
}

/// Calls the decoder, turning a panic into a [`CallErrorKind::Trap`].
async fn decode_catching(
    decoder: &dyn SnapshotDecoder,
    entry: &LogEntry,
) -> Result<Value, CallError> {
    match AssertUnwindSafe(decoder.decode(entry)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(CallError {
            plugin: "(native decoder)".into(),
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            kind: CallErrorKind::Trap,
            message: format!("decoder panicked: {}", panic_message(panic.as_ref())),
        }),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
