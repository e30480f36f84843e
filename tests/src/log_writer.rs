//! Writes entries into a real log from synchronous tests, as an Orlando
//! primary would.

use std::sync::Arc;

use replica_host::replication_log::{self, EntryType, LogEntry};
use replica_host::store::now_millis;

/// A log handle with its own runtime.
pub struct LogWriter {
    rt: tokio::runtime::Runtime,
    /// The log, as its writer.
    pub log: Arc<dyn replication_log::LogWriter>,
}

impl LogWriter {
    /// Opens the log at `url` as a writer, creating the SQLite file and
    /// Orlando's table when missing.
    pub fn open(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = rt
            .block_on(replication_log::create(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        Self { rt, log }
    }

    /// Appends a FullState entry stamped now.
    pub fn full(&self, grain_type: &str, key: &str, sequence: u64, payload: Vec<u8>) {
        self.append(
            grain_type,
            key,
            sequence,
            EntryType::FullState,
            payload,
            now_millis(),
        );
    }

    /// Appends a Delta entry stamped now.
    pub fn delta(&self, grain_type: &str, key: &str, sequence: u64) {
        self.append(
            grain_type,
            key,
            sequence,
            EntryType::Delta,
            vec![1, 2, 3],
            now_millis(),
        );
    }

    /// Appends any entry.
    pub fn append(
        &self,
        grain_type: &str,
        key: &str,
        sequence: u64,
        entry_type: EntryType,
        payload: Vec<u8>,
        timestamp_millis: i64,
    ) {
        let entry = LogEntry {
            grain_type: grain_type.into(),
            grain_key: key.into(),
            sequence,
            timestamp_millis,
            source_cluster: "us-east".into(),
            entry_type,
            payload: payload.into(),
        };
        self.rt
            .block_on(self.log.append(&entry))
            .unwrap_or_else(|e| panic!("append: {e}"));
    }

    /// Runs an async block on this writer's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
