//! Logs for tests that count a consumer's calls or make some of them fail.
//! Each wraps a [`MemoryLog`] (write to it through `inner`) and is a
//! [`ForwardLog`]: only the calls it changes are written out here.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use replica_host::replication_log::{
    ChangeCursor, ForwardLog, GrainHead, HeadChanges, LogError, LogRecord, MemoryLog,
    ReplicationLog, ScanPage,
};

/// A memory log whose reads or listings can be made to fail, counting
/// both. It has no catch-up scan and no incremental discovery: every grain
/// is read by `read_from`, and every discovery is a `grain_heads` listing.
#[derive(Default)]
pub struct FlakyLog {
    /// The log read from; tests append to it.
    pub inner: MemoryLog,
    /// While set, `read_from` fails as unavailable.
    pub reads_down: AtomicBool,
    /// While set, `grain_heads` and `grain_types` fail as unavailable.
    pub listing_down: AtomicBool,
    /// `read_from` calls, failed ones included.
    pub reads: AtomicU64,
    /// `grain_heads` calls (every discovery), failed ones included.
    pub listings: AtomicU64,
}

/// The error of a call a test made fail.
fn unavailable() -> LogError {
    LogError::unavailable("connection refused (test)")
}

#[async_trait]
impl ForwardLog for FlakyLog {
    fn inner(&self) -> &dyn ReplicationLog {
        &self.inner
    }

    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.reads_down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner
            .read_from(grain_type, grain_key, after, limit)
            .await
    }

    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        if self.listing_down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.grain_heads(grain_type).await
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        _cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        Ok(HeadChanges {
            heads: ForwardLog::grain_heads(self, grain_type).await?,
            complete: true,
            cursor: None,
        })
    }

    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        if self.listing_down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.grain_types().await
    }

    async fn scan(
        &self,
        _grain_type: &str,
        _after: Option<&str>,
        _max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        Ok(None)
    }
}

/// A memory log whose catch-up scan fails the first `failures` times,
/// counting scans and per-grain reads.
#[derive(Default)]
pub struct FlakyScanLog {
    /// The log read from; tests append to it.
    pub inner: MemoryLog,
    /// How many scans are still to fail.
    pub failures: AtomicU32,
    /// `scan` calls, failed ones included.
    pub scans: AtomicU32,
    /// `read_from` calls.
    pub reads: AtomicU32,
    /// How long an incremental listing (one from a cursor) takes, in ms.
    pub incremental_ms: AtomicU64,
}

impl FlakyScanLog {
    /// A log whose first `failures` scans fail.
    pub fn new(failures: u32) -> Self {
        Self {
            failures: failures.into(),
            ..Self::default()
        }
    }
}

#[async_trait]
impl ForwardLog for FlakyScanLog {
    fn inner(&self) -> &dyn ReplicationLog {
        &self.inner
    }

    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner
            .read_from(grain_type, grain_key, after, limit)
            .await
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        let delay = self.incremental_ms.load(Ordering::SeqCst);
        if cursor.is_some() && delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        self.inner.changes_since(grain_type, cursor).await
    }

    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(LogError::unavailable("scan refused (test)"));
        }
        self.inner.scan(grain_type, after, max_rows).await
    }
}
