//! What `replica-host verify` prints: per grain type the grains compared,
//! how many match, and each kind of disagreement with a count and example
//! keys; then the totals and the time each side took.

use std::fmt;
use std::time::Duration;

use super::compare::{Finding, Findings};
use crate::text::escape;

/// Example keys shown per kind of disagreement.
pub const EXAMPLES: usize = 5;

/// One grain type's outcome.
#[derive(Debug, Clone)]
pub struct TypeReport {
    /// The grain type.
    pub grain_type: String,
    /// Whether the host has a plugin for it.
    pub has_plugin: bool,
    /// What the comparison found (re-checks done).
    pub findings: Findings,
}

/// The whole outcome.
#[derive(Debug, Clone)]
pub struct Report {
    /// The log's URL, password hidden.
    pub log_url: String,
    /// The host's base URL.
    pub host_url: String,
    /// The host's shard and the shard count.
    pub shard: (u32, u32),
    /// Per grain type, sorted by name.
    pub types: Vec<TypeReport>,
    /// How long reading the log's snapshot took.
    pub log_read: Duration,
    /// How long reading the host's pages (and comparing) took.
    pub host_read: Duration,
    /// Grains checked again after the wait.
    pub rechecked: usize,
}

impl Report {
    /// Whether every grain matches (exit status 0).
    pub fn all_match(&self) -> bool {
        self.types.iter().all(|t| t.findings.all_match())
    }

    /// Confirmed disagreements of one kind, over every grain type.
    pub fn count(&self, kind: Finding) -> usize {
        self.types.iter().map(|t| t.findings.count(kind)).sum()
    }

    /// Grains in the log's snapshot (of this shard), over every type.
    pub fn log_grains(&self) -> u64 {
        self.types.iter().map(|t| t.findings.log_grains).sum()
    }

    /// Grains that match, over every type.
    pub fn matching(&self) -> u64 {
        self.types.iter().map(|t| t.findings.matching).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verify of {} against {} (read-only, one snapshot), shard {}/{}",
            self.host_url, self.log_url, self.shard.0, self.shard.1
        )?;
        for t in &self.types {
            let plugin = if t.has_plugin {
                ""
            } else {
                " (no plugin on the host)"
            };
            writeln!(
                f,
                "{}{plugin}: {} grains in the log, {} replicas on the host, {} match",
                escape(&t.grain_type),
                t.findings.log_grains,
                t.findings.host_replicas,
                t.findings.matching
            )?;
            for kind in Finding::ALL {
                let Some(found) = t.findings.confirmed.get(&kind).filter(|f| !f.is_empty()) else {
                    continue;
                };
                let mut examples: Vec<&_> = found.iter().collect();
                examples.sort_by(|a, b| a.grain_key.cmp(&b.grain_key));
                let shown: Vec<String> = examples
                    .iter()
                    .take(EXAMPLES)
                    .map(|d| {
                        format!(
                            "{} (log {}, host {})",
                            escape(&d.grain_key),
                            d.log_sequence,
                            d.host_sequence
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "  {}: {} (e.g. {})",
                    kind.as_str(),
                    found.len(),
                    shown.join(", ")
                )?;
            }
        }
        let totals: Vec<String> = Finding::ALL
            .iter()
            .map(|&k| format!("{} {}", self.count(k), k.as_str()))
            .collect();
        writeln!(
            f,
            "total: {} grains in the log, {} match; {}",
            self.log_grains(),
            self.matching(),
            totals.join(", ")
        )?;
        write!(
            f,
            "log snapshot read in {:.2} s, host read in {:.2} s, {} grains checked again",
            self.log_read.as_secs_f64(),
            self.host_read.as_secs_f64(),
            self.rechecked
        )
    }
}
