//! A log that passes its calls on to another: the base of wrappers that
//! count calls, hide a backend's optional reads, or make some calls fail
//! (the benchmarks' `CountingLog`, the tests' flaky logs), and of the
//! writers, which read through their reader.
//!
//! A wrapper implements [`ForwardLog`]: it names the log it wraps
//! ([`ForwardLog::inner`]) and overrides only the calls it changes; every
//! other call goes to the inner log as it is. Every `ForwardLog` is a
//! [`ReplicationLog`].
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use async_trait::async_trait;
//! use replica_host::replication_log::{
//!     ForwardLog, LogError, LogRecord, MemoryLog, ReplicationLog,
//! };
//!
//! /// Counts `read_from` calls; forwards everything.
//! struct CountReads {
//!     inner: MemoryLog,
//!     reads: AtomicU64,
//! }
//!
//! #[async_trait]
//! impl ForwardLog for CountReads {
//!     fn inner(&self) -> &dyn ReplicationLog {
//!         &self.inner
//!     }
//!
//!     async fn read_from(
//!         &self,
//!         grain_type: &str,
//!         grain_key: &str,
//!         after: u64,
//!         limit: usize,
//!     ) -> Result<Vec<LogRecord>, LogError> {
//!         self.reads.fetch_add(1, Ordering::Relaxed);
//!         self.inner().read_from(grain_type, grain_key, after, limit).await
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let log = CountReads { inner: MemoryLog::new(), reads: AtomicU64::new(0) };
//! let log: &dyn ReplicationLog = &log;
//! assert!(log.read_from("Counter", "a", 0, 10).await.unwrap().is_empty());
//! assert_eq!(log.grain_types().await.unwrap(), Vec::<String>::new());
//! # });
//! ```

use async_trait::async_trait;

use super::{
    ChangeCursor, GrainHead, HeadChanges, HeadsSnapshot, LogError, LogRecord, ReplicationLog,
    ScanPage,
};

/// A [`ReplicationLog`] made of another: each call goes to
/// [`ForwardLog::inner`] unless the implementor overrides it. The methods
/// are [`ReplicationLog`]'s, with the same meaning.
#[async_trait]
pub trait ForwardLog: Send + Sync + 'static {
    /// The log calls are passed on to.
    fn inner(&self) -> &dyn ReplicationLog;

    /// [`ReplicationLog::read_from`].
    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.inner()
            .read_from(grain_type, grain_key, after, limit)
            .await
    }

    /// [`ReplicationLog::latest_sequence`].
    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError> {
        self.inner().latest_sequence(grain_type, grain_key).await
    }

    /// [`ReplicationLog::grain_heads`].
    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        self.inner().grain_heads(grain_type).await
    }

    /// [`ReplicationLog::changes_since`].
    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        self.inner().changes_since(grain_type, cursor).await
    }

    /// [`ReplicationLog::change_cursor`].
    async fn change_cursor(&self, grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        self.inner().change_cursor(grain_type).await
    }

    /// [`ReplicationLog::grain_types`].
    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        self.inner().grain_types().await
    }

    /// [`ReplicationLog::ping`].
    async fn ping(&self) -> Result<(), LogError> {
        self.inner().ping().await
    }

    /// [`ReplicationLog::scan`].
    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        self.inner().scan(grain_type, after, max_rows).await
    }

    /// [`ReplicationLog::full_state_heads`].
    async fn full_state_heads(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        self.inner()
            .full_state_heads(grain_type, after, limit)
            .await
    }

    /// [`ReplicationLog::heads_snapshot`].
    async fn heads_snapshot(&self, only: Option<&str>) -> Result<Option<HeadsSnapshot>, LogError> {
        self.inner().heads_snapshot(only).await
    }
}

#[async_trait]
impl<T: ForwardLog> ReplicationLog for T {
    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        ForwardLog::read_from(self, grain_type, grain_key, after, limit).await
    }

    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError> {
        ForwardLog::latest_sequence(self, grain_type, grain_key).await
    }

    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        ForwardLog::grain_heads(self, grain_type).await
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        ForwardLog::changes_since(self, grain_type, cursor).await
    }

    async fn change_cursor(&self, grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        ForwardLog::change_cursor(self, grain_type).await
    }

    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        ForwardLog::grain_types(self).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        ForwardLog::ping(self).await
    }

    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        ForwardLog::scan(self, grain_type, after, max_rows).await
    }

    async fn full_state_heads(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        ForwardLog::full_state_heads(self, grain_type, after, limit).await
    }

    async fn heads_snapshot(&self, only: Option<&str>) -> Result<Option<HeadsSnapshot>, LogError> {
        ForwardLog::heads_snapshot(self, only).await
    }
}
