//! The comparison itself, without I/O or a clock: the log's newest
//! FullState sequence per grain against what the host serves, grain by
//! grain, into [`Findings`].
//!
//! Feed it the log's snapshot first ([`TypeCheck::new`]), then the host's
//! positions page by page ([`TypeCheck::host`]), then [`TypeCheck::finish`].
//! Findings that may be the snapshot's age rather than a fault (behind,
//! missing, unknown to the log) come out as *candidates* that the caller
//! checks again ([`super::recheck`]) before they count.

use std::collections::HashMap;

/// One replica as the host's `fields=sequence` page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Position {
    /// The grain's key.
    pub grain_key: String,
    /// The applied sequence (0 when no snapshot decoded).
    pub sequence: u64,
    /// `ok`, `behind` or `failing`.
    pub status: String,
    /// The decoding plugin build's sha256; `None` without state.
    pub sha256: Option<String>,
}

/// Kinds of disagreement between the log and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Finding {
    /// The log holds a FullState of the grain; the host serves no replica
    /// of it (or its grain type has no plugin on the host).
    Missing,
    /// The host's applied sequence is below the log's newest FullState.
    Behind,
    /// The host shows the grain `failing`: its newest snapshot does not decode.
    Failing,
    /// The host serves a replica the log holds no FullState of.
    UnknownToLog,
    /// Another plugin build than the one in force decoded the replica.
    OtherBuild,
}

impl Finding {
    /// Every kind, in report order.
    pub const ALL: [Finding; 5] = [
        Finding::Missing,
        Finding::Behind,
        Finding::Failing,
        Finding::UnknownToLog,
        Finding::OtherBuild,
    ];

    /// How the report names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::Missing => "missing",
            Finding::Behind => "behind",
            Finding::Failing => "failing",
            Finding::UnknownToLog => "unknown to the log",
            Finding::OtherBuild => "decoded by another plugin build",
        }
    }
}

/// A grain that disagrees, with the two sides' sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// The grain's key.
    pub grain_key: String,
    /// The log's newest FullState sequence (0 when it holds none).
    pub log_sequence: u64,
    /// The host's applied sequence (0 when it serves none).
    pub host_sequence: u64,
}

/// What one grain type's comparison found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Grains of the log's snapshot (of this host's shard).
    pub log_grains: u64,
    /// Replicas the host served.
    pub host_replicas: u64,
    /// Grains that agree.
    pub matching: u64,
    /// Confirmed disagreements, by kind.
    pub confirmed: HashMap<Finding, Vec<Disagreement>>,
    /// Disagreements that may be the snapshot's age: to check again.
    pub candidates: HashMap<Finding, Vec<Disagreement>>,
}

impl Findings {
    /// Confirmed disagreements of one kind.
    pub fn count(&self, kind: Finding) -> usize {
        self.confirmed.get(&kind).map_or(0, Vec::len)
    }

    /// Whether nothing disagrees (candidates included).
    pub fn all_match(&self) -> bool {
        self.confirmed.values().all(Vec::is_empty) && self.candidates.values().all(Vec::is_empty)
    }
}

/// The comparison of one grain type, fed page by page.
pub struct TypeCheck {
    /// The log's grains not yet matched with a host replica: key → newest
    /// FullState sequence.
    log: HashMap<String, u64>,
    /// The sha256 of the plugin in force, `None` when the host has no
    /// plugin for the type.
    in_force: Option<String>,
    /// What was found so far.
    findings: Findings,
}

impl TypeCheck {
    /// Starts with the log's snapshot of the type (`(key, newest FullState
    /// sequence)`, already limited to this host's shard) and the sha256 of
    /// the plugin in force for it (`None`: no plugin on the host).
    pub fn new(log: impl IntoIterator<Item = (String, u64)>, in_force: Option<String>) -> Self {
        let log: HashMap<String, u64> = log.into_iter().collect();
        let findings = Findings {
            log_grains: log.len() as u64,
            ..Findings::default()
        };
        Self {
            log,
            in_force,
            findings,
        }
    }

    /// Compares one page of the host's positions.
    pub fn host(&mut self, page: Vec<Position>) {
        for position in page {
            self.findings.host_replicas += 1;
            let log_sequence = self.log.remove(&position.grain_key);
            let disagreement = Disagreement {
                grain_key: position.grain_key,
                log_sequence: log_sequence.unwrap_or(0),
                host_sequence: position.sequence,
            };
            let (kind, certain) = match log_sequence {
                // A grain with only Deltas (no state on either side) is
                // nothing to compare.
                None if position.sequence == 0 && position.status != "failing" => continue,
                None => (Finding::UnknownToLog, false),
                Some(_) if position.status == "failing" => (Finding::Failing, true),
                Some(log) if position.sequence < log => (Finding::Behind, false),
                Some(_) if self.in_force.is_some() && position.sha256 != self.in_force => {
                    (Finding::OtherBuild, true)
                }
                Some(_) => {
                    self.findings.matching += 1;
                    continue;
                }
            };
            let into = if certain {
                &mut self.findings.confirmed
            } else {
                &mut self.findings.candidates
            };
            into.entry(kind).or_default().push(disagreement);
        }
    }

    /// Ends the comparison: the log's grains the host never served are
    /// missing (candidates, or confirmed when the type has no plugin).
    pub fn finish(mut self) -> Findings {
        let mut missing: Vec<Disagreement> = self
            .log
            .drain()
            .map(|(grain_key, log_sequence)| Disagreement {
                grain_key,
                log_sequence,
                host_sequence: 0,
            })
            .collect();
        missing.sort_by(|a, b| a.grain_key.cmp(&b.grain_key));
        let into = if self.in_force.is_some() {
            &mut self.findings.candidates
        } else {
            &mut self.findings.confirmed
        };
        if !missing.is_empty() {
            into.insert(Finding::Missing, missing);
        }
        self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(key: &str, sequence: u64, status: &str, sha: &str) -> Position {
        Position {
            grain_key: key.into(),
            sequence,
            status: status.into(),
            sha256: Some(sha.into()),
        }
    }

    fn keys(findings: &HashMap<Finding, Vec<Disagreement>>, kind: Finding) -> Vec<&str> {
        findings
            .get(&kind)
            .map(|d| d.iter().map(|d| d.grain_key.as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_kind_is_told_apart_and_ahead_is_a_match() {
        let log = [
            ("ok", 3),
            ("ahead", 3),
            ("behind", 5),
            ("failing", 4),
            ("old", 2),
            ("gone", 7),
        ]
        .map(|(k, s)| (k.to_owned(), s));
        let mut check = TypeCheck::new(log, Some("aa".into()));
        check.host(vec![
            position("ahead", 4, "ok", "aa"),
            position("behind", 4, "ok", "aa"),
            position("extra", 1, "ok", "aa"),
        ]);
        check.host(vec![
            position("failing", 3, "failing", "aa"),
            position("ok", 3, "ok", "aa"),
            position("old", 2, "ok", "bb"),
            position("delta-only", 0, "behind", "aa"),
        ]);
        let findings = check.finish();
        assert_eq!(findings.log_grains, 6);
        assert_eq!(findings.host_replicas, 7);
        assert_eq!(findings.matching, 2);
        assert_eq!(keys(&findings.confirmed, Finding::Failing), ["failing"]);
        assert_eq!(keys(&findings.confirmed, Finding::OtherBuild), ["old"]);
        assert_eq!(keys(&findings.candidates, Finding::Behind), ["behind"]);
        assert_eq!(keys(&findings.candidates, Finding::UnknownToLog), ["extra"]);
        assert_eq!(keys(&findings.candidates, Finding::Missing), ["gone"]);
        assert!(!findings.all_match());
    }

    #[test]
    fn a_type_without_a_plugin_is_missing_for_certain() {
        let check = TypeCheck::new([("a".to_owned(), 1)], None);
        let findings = check.finish();
        assert_eq!(findings.count(Finding::Missing), 1);
        assert!(findings.candidates.is_empty());
    }

    #[test]
    fn a_healthy_type_matches() {
        let mut check = TypeCheck::new([("a".to_owned(), 1)], Some("aa".into()));
        check.host(vec![position("a", 1, "ok", "aa")]);
        let findings = check.finish();
        assert!(findings.all_match());
        assert_eq!(findings.matching, 1);
    }
}
