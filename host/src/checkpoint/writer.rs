//! Writing the checkpoint in the background, at a bounded cost.
//!
//! A pass walks every grain type's replicas in key order, a page at a time
//! (the store's read lock held for one page only), and writes those changed
//! since the previous pass began (the store's version). Each flush, every
//! [`CheckpointWriter::INTERVAL`], writes at most
//! [`CheckpointWriter::MAX_ROWS_PER_FLUSH`] rows in one transaction, then
//! yields until the next flush: a pass after a cold catch-up of a million
//! grains is spread over several flushes instead of one long burst, and an
//! idle host writes nothing. [`CheckpointWriter::finish`] (SIGTERM) runs
//! passes until nothing is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file::{CheckpointError, CheckpointFile, thread_cpu};
use crate::shutdown::StopSignal;
use crate::store::ReplicaStore;

/// Grains looked at per page (one read-lock hold).
const SCAN_PAGE: usize = 16_384;

/// What the writer did, for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// Rows written in all.
    pub rows: u64,
    /// Flushes (transactions) that wrote something.
    pub flushes: u64,
    /// Time spent in flushes.
    pub busy: Duration,
    /// CPU time of the flushes: looking for changed replicas (on the
    /// writer's task) and writing them (on the blocking pool).
    pub cpu: Duration,
    /// The part of [`Self::cpu`] spent looking for changed replicas.
    pub scan_cpu: Duration,
}

/// The background writer of one checkpoint file.
pub struct CheckpointWriter {
    file: CheckpointFile,
    store: Arc<ReplicaStore>,
    /// The grain types written, in order.
    types: Vec<String>,
    /// Replicas changed after this store version are written by this pass.
    since: u64,
    /// The store's version when this pass began.
    pass_version: u64,
    /// Where the pass stands: a grain type's index and the key after which
    /// it goes on; `None` when no pass is under way.
    at: Option<(usize, Option<String>)>,
    stats: WriterStats,
}

impl CheckpointWriter {
    /// How often a flush runs.
    pub const INTERVAL: Duration = Duration::from_secs(5);
    /// Most rows one flush writes.
    pub const MAX_ROWS_PER_FLUSH: usize = 100_000;

    /// A writer of `types`' replicas into `file`; `since` is the store
    /// version up to which the file already holds everything (0: nothing).
    pub fn new(
        file: CheckpointFile,
        store: Arc<ReplicaStore>,
        types: Vec<String>,
        since: u64,
    ) -> Self {
        Self {
            file,
            store,
            types,
            since,
            pass_version: since,
            at: None,
            stats: WriterStats::default(),
        }
    }

    /// What it wrote so far (read by `bench e2e`).
    #[cfg(feature = "tools")]
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Flushes every [`Self::INTERVAL`] until `stop`, then writes what is
    /// left ([`Self::finish`]).
    pub async fn run(mut self, mut stop: StopSignal) -> WriterStats {
        loop {
            tokio::select! {
                () = stop.stopped() => break,
                () = tokio::time::sleep(Self::INTERVAL) => {}
            }
            if let Err(e) = self.flush(Self::MAX_ROWS_PER_FLUSH).await {
                tracing::warn!(error = %e, "checkpoint write failed; retrying at the next flush");
            }
        }
        match self.finish().await {
            Ok(()) => tracing::info!(
                rows = self.stats.rows,
                path = %self.file.path().display(),
                "checkpoint written"
            ),
            Err(e) => tracing::warn!(error = %e, "checkpoint not written at shutdown"),
        }
        let stats = self.stats;
        if let Err(e) = self.file.close().await {
            tracing::warn!(error = %e, "checkpoint not closed cleanly");
        }
        stats
    }

    /// Writes everything changed until a pass finds nothing more.
    pub async fn finish(&mut self) -> Result<(), CheckpointError> {
        loop {
            let ended = self.flush(usize::MAX).await?;
            if ended && self.store.version() == self.since {
                return Ok(());
            }
        }
    }

    /// Writes up to `max_rows` changed replicas in one transaction;
    /// returns whether the pass it worked on ended.
    pub async fn flush(&mut self, max_rows: usize) -> Result<bool, CheckpointError> {
        let started = Instant::now();
        let (mut index, mut after) = match self.at.take() {
            Some(at) => at,
            None => {
                self.pass_version = self.store.version();
                (0, None)
            }
        };
        let mut batch = Vec::new();
        let mut ended = false;
        let scan_started = thread_cpu();
        while batch.len() < max_rows {
            let Some(grain_type) = self.types.get(index) else {
                ended = true;
                break;
            };
            let (changed, next) =
                self.store
                    .changed_since(grain_type, after.as_deref(), SCAN_PAGE, self.since);
            batch.extend(changed);
            match next {
                Some(key) => after = Some(key),
                None => {
                    index += 1;
                    after = None;
                }
            }
        }
        let scan_cpu = thread_cpu().saturating_sub(scan_started);
        self.stats.scan_cpu += scan_cpu;
        self.stats.cpu += scan_cpu;
        if !batch.is_empty() {
            let rows = batch.len() as u64;
            self.stats.cpu += self.file.write(batch).await?;
            self.stats.rows += rows;
            self.stats.flushes += 1;
        }
        if ended {
            self.since = self.pass_version;
        } else {
            self.at = Some((index, after));
        }
        self.stats.busy += started.elapsed();
        Ok(ended)
    }
}
