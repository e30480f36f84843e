//! `replica-host plugin fixture`: a snapshot from the live log turned into
//! a golden case. The payload is read from the log (read-only), decoded by
//! the given plugin exactly as `plugin test` will decode it, and written as
//! `NAME.payload` with `NAME.json` (the state) or `NAME.error` (the error
//! kind), so a production failure becomes a test the fixed plugin must pass.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plugin::{LoadedPlugin, SnapshotRef};
use crate::replication_log::{EntryType, LogEntry, LogRecord, ReplicationLog};

/// Rows read per query while looking for the snapshot.
const PAGE: usize = 1000;

/// What `plugin fixture` captures.
#[derive(Debug, Clone)]
pub struct FixtureRequest {
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key.
    pub grain_key: String,
    /// The snapshot's sequence; `None` for the grain's newest FullState.
    pub sequence: Option<u64>,
    /// The case's name; `None` for one made of the key and the sequence.
    pub name: Option<String>,
}

/// The log holds no FullState the request names.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoSuchSnapshot(String);

/// What was written.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The case's name.
    pub name: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// The files written: the payload, then the state or the error.
    pub files: Vec<PathBuf>,
    /// The decode's outcome, one line: `state` or the error.
    pub outcome: String,
}

/// Reads the snapshot from `log`, decodes it with `plugin` and writes the
/// case into `out` (created when missing).
pub async fn capture(
    log: &dyn ReplicationLog,
    plugin: &LoadedPlugin,
    request: &FixtureRequest,
    out: &Path,
) -> anyhow::Result<Fixture> {
    let grain = format!("{}/{}", request.grain_type, request.grain_key);
    let entry = find(log, request).await?.ok_or_else(|| {
        NoSuchSnapshot(match request.sequence {
            Some(n) => format!("{grain}: the log holds no FullState at sequence {n}"),
            None => format!("{grain}: the log holds no FullState of this grain"),
        })
    })?;
    let name = match &request.name {
        Some(name) => {
            check_name(name)?;
            name.clone()
        }
        None => default_name(&request.grain_key, entry.sequence),
    };
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    let payload_path = out.join(format!("{name}.payload"));
    std::fs::write(&payload_path, &entry.payload)
        .with_context(|| format!("{}", payload_path.display()))?;
    // Decoded as `plugin test` decodes a case: grain NAME at sequence 1.
    let decoded = plugin.decode(SnapshotRef {
        grain_type: &plugin.description().grain_type,
        grain_key: &name,
        sequence: 1,
        timestamp_millis: 0,
        source_cluster: "fixtures",
        payload: &entry.payload,
    });
    let (path, text, outcome) = match decoded {
        Ok(state) => {
            let value = serde_json::to_value(&state).context("rendering the state")?;
            (
                out.join(format!("{name}.json")),
                format!("{}\n", serde_json::to_string_pretty(&value)?),
                "decodes".to_string(),
            )
        }
        Err(e) => (
            out.join(format!("{name}.error")),
            format!("{}\n", e.kind.as_str()),
            format!("{}: {}", e.kind, e.message),
        ),
    };
    std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
    Ok(Fixture {
        name,
        sequence: entry.sequence,
        files: vec![payload_path, path],
        outcome,
    })
}

/// The requested FullState: the one at `sequence`, or the newest.
async fn find(
    log: &dyn ReplicationLog,
    request: &FixtureRequest,
) -> anyhow::Result<Option<LogEntry>> {
    let mut after = request.sequence.map_or(0, |n| n.saturating_sub(1));
    let mut newest = None;
    loop {
        let page = log
            .read_from(&request.grain_type, &request.grain_key, after, PAGE)
            .await
            .context("reading the log")?;
        let full = page.len() == PAGE;
        for record in page {
            let LogRecord::Entry(entry) = record else {
                continue;
            };
            after = after.max(entry.sequence);
            if entry.entry_type != EntryType::FullState {
                continue;
            }
            match request.sequence {
                Some(n) if entry.sequence == n => return Ok(Some(entry)),
                Some(_) => {}
                None => newest = Some(entry),
            }
        }
        if !full || request.sequence.is_some_and(|n| after >= n) {
            return Ok(newest);
        }
    }
}

/// A case name made of the key (characters a file name cannot hold become
/// `_`) and the sequence: `cart-42_at_17`.
fn default_name(key: &str, sequence: u64) -> String {
    let key: String = key
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{key}_at_{sequence}")
}

/// A name must be a plain file stem.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !plain {
        bail!(
            "case name `{}` is not valid: use ASCII letters, digits, `-` and `_`",
            name.escape_debug()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_stems() {
        assert_eq!(default_name("cart/42 ü", 17), "cart_42___at_17");
        check_name("bad/name").unwrap_err();
        check_name("ok-name_1").unwrap();
    }
}
