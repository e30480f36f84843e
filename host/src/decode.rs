//! What the consumer and the plugin runtime share, and nothing else: the
//! decoding interface ([`SnapshotDecoder`]) and its errors ([`CallError`],
//! [`CallErrorKind`]). A leaf module: the consumer calls a decoder, the
//! plugin runtime implements one, and neither depends on the other.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::replication_log::LogEntry;
use crate::value::State;

/// Turns a FullState entry's payload into the grain's typed state. The
/// consumer calls it only with FullState entries, possibly concurrently for
/// different grains. A panic is treated as a [`CallErrorKind::Trap`].
#[async_trait]
pub trait SnapshotDecoder: Send + Sync + 'static {
    /// Decodes one snapshot.
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError>;

    /// Decodes several snapshots (of one grain type, any grains), one
    /// result per entry in the same order. Each result is the one
    /// [`SnapshotDecoder::decode`] would give; a decoder may share work
    /// between them (a plugin: a fresh instance per `[limits] batch_max`
    /// snapshots, up to four of them per trip to the blocking pool). By
    /// default, one call after another.
    async fn decode_batch(&self, entries: &[LogEntry]) -> Vec<Result<State, CallError>> {
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            results.push(self.decode(entry).await);
        }
        results
    }

    /// How many snapshots a [`SnapshotDecoder::decode_batch`] call should
    /// carry to share work between them; 1 (the default) when it shares
    /// none. Callers split larger sets into calls of this size and keep
    /// several in flight, so one slow snapshot holds only its own call.
    fn batch_max(&self) -> usize {
        1
    }

    /// Which plugin build this decoder runs, recorded with every state it
    /// decodes; `None` for a native decoder.
    fn decoded_by(&self) -> Option<Arc<DecodedBy>> {
        None
    }
}

/// The plugin build that produced a replica's state: its provenance, shown
/// as `decoded_by` in every read. When a grain type's plugin is swapped,
/// the replicas whose `decoded_by` differs from the new plugin's are
/// decoded again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct DecodedBy {
    /// The plugin's name (its file name).
    pub plugin: String,
    /// The plugin file's hex sha256.
    pub sha256: String,
    /// The state schema version the plugin declares.
    pub schema_version: String,
}

/// Why one decode call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    /// The plugin says the payload is not a valid encoding of the state.
    MalformedPayload,
    /// The plugin says the payload's schema version is not one it decodes.
    UnsupportedSchemaVersion,
    /// The plugin's own validation refused the state.
    Rejected,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The call ran past its time limit.
    Timeout,
    /// The guest tried to grow its memory past its limit.
    OutOfMemory,
    /// The guest returned a value the host refuses (bad tree, too large, too deep).
    BadOutput,
    /// The plugin is paused or the host could not run the call.
    Unavailable,
    /// The host died twice in a row while decoding this snapshot with this
    /// plugin; it is not decoded again until the plugin changes.
    Quarantined,
}

impl CallErrorKind {
    /// A stable snake_case label, used in logs, metrics and HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::MalformedPayload => "malformed_payload",
            CallErrorKind::UnsupportedSchemaVersion => "unsupported_schema_version",
            CallErrorKind::Rejected => "rejected",
            CallErrorKind::Trap => "trap",
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::OutOfMemory => "out_of_memory",
            CallErrorKind::BadOutput => "bad_output",
            CallErrorKind::Unavailable => "unavailable",
            CallErrorKind::Quarantined => "quarantined",
        }
    }

    /// Whether the guest itself misbehaved (as opposed to refusing a payload).
    pub fn is_guest_fault(self) -> bool {
        matches!(
            self,
            CallErrorKind::Trap
                | CallErrorKind::Timeout
                | CallErrorKind::OutOfMemory
                | CallErrorKind::BadOutput
        )
    }
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed decode call, naming the plugin, the grain and the sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin {plugin}: {kind} decoding {grain_type}/{grain_key} at sequence {sequence}: {message}"
)]
pub struct CallError {
    /// The plugin's name (its file name).
    pub plugin: String,
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// What went wrong.
    pub kind: CallErrorKind,
    /// Why, in one line.
    pub message: String,
}
