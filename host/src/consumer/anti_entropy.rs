//! Continuous anti-entropy (`[consumer] verify_interval_s`): each grain
//! type's scheduler re-checks a slice of its grains against the log every
//! interval, cycling through the type's key space over time, and reads a
//! grain again when its replica diverges from the log.
//!
//! This module holds the settings and the pure rule (no I/O, no clock):
//! given a grain's newest FullState sequence in the log and its replica,
//! is the replica divergent, and how. The scheduler does the reading and
//! the repair (`scheduler.rs`).

use std::time::Duration;

use crate::store::{Replica, ReplicaStatus};

/// How anti-entropy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySettings {
    /// Time between two slices of one grain type.
    pub interval: Duration,
    /// Grains per slice: one indexed range read of the log of at most this
    /// many grains per grain type and interval is what it costs.
    pub grains: usize,
}

impl VerifySettings {
    /// Grains per slice by default.
    pub const DEFAULT_GRAINS: usize = 1_000;
}

/// How a replica diverges from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mismatch {
    /// The log holds a FullState of the grain; the store has no state of it.
    Missing,
    /// The replica's applied sequence is below the log's newest FullState,
    /// and the grain is not failing on a newer snapshot.
    Behind,
    /// Another plugin build than the one in force decoded the replica.
    OtherBuild,
}

impl Mismatch {
    /// Every kind, in the order the counters keep them.
    pub const ALL: [Mismatch; 3] = [Mismatch::Missing, Mismatch::Behind, Mismatch::OtherBuild];

    /// The `kind` label of `replica_verify_mismatches_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Missing => "missing",
            Mismatch::Behind => "behind",
            Mismatch::OtherBuild => "other_build",
        }
    }

    /// The index of this kind in [`Mismatch::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Mismatch::Missing => 0,
            Mismatch::Behind => 1,
            Mismatch::OtherBuild => 2,
        }
    }
}

/// Judges one grain: `log_full_state` is its newest FullState sequence in
/// the log, `replica` what the store holds, `in_force` the sha256 of the
/// plugin build in force (`None` for a native decoder: builds are not
/// compared). A failing grain is not divergent: it keeps retrying by itself.
pub fn judge(
    log_full_state: u64,
    replica: Option<&Replica>,
    in_force: Option<&str>,
) -> Option<Mismatch> {
    let Some(replica) = replica.filter(|r| r.has_state()) else {
        return match replica.map(|r| &r.status) {
            Some(ReplicaStatus::Failing { .. }) => None,
            _ => Some(Mismatch::Missing),
        };
    };
    if matches!(replica.status, ReplicaStatus::Failing { .. }) {
        return None;
    }
    if replica.sequence < log_full_state {
        return Some(Mismatch::Behind);
    }
    let decoded_by = replica.decoded_by.as_deref().map(|d| d.sha256.as_str());
    match in_force {
        Some(sha256) if decoded_by != Some(sha256) => Some(Mismatch::OtherBuild),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::decode::DecodedBy;
    use crate::value::State;

    fn replica(sequence: u64, sha256: &str, status: ReplicaStatus) -> Replica {
        Replica {
            grain_type: "T".into(),
            grain_key: "k".into(),
            state: Some(State::from_serialize(&1).unwrap()),
            sequence,
            timestamp_millis: 0,
            source_cluster: "c".into(),
            applied_at: None,
            decoded_by: Some(Arc::new(DecodedBy {
                plugin: "p.wasm".into(),
                sha256: sha256.into(),
                schema_version: "1".into(),
            })),
            status,
        }
    }

    #[test]
    fn a_current_replica_of_the_build_in_force_matches() {
        let r = replica(5, "aa", ReplicaStatus::Ok);
        assert_eq!(judge(5, Some(&r), Some("aa")), None);
        // Applied after the log was read: ahead is fine.
        assert_eq!(judge(4, Some(&r), Some("aa")), None);
        // A Delta after the applied snapshot: the FullState is there.
        let behind_delta = replica(5, "aa", ReplicaStatus::Behind { delta_sequence: 6 });
        assert_eq!(judge(5, Some(&behind_delta), Some("aa")), None);
    }

    #[test]
    fn missing_behind_and_other_build_are_told_apart() {
        assert_eq!(judge(5, None, Some("aa")), Some(Mismatch::Missing));
        let r = replica(4, "aa", ReplicaStatus::Ok);
        assert_eq!(judge(5, Some(&r), Some("aa")), Some(Mismatch::Behind));
        let r = replica(5, "bb", ReplicaStatus::Ok);
        assert_eq!(judge(5, Some(&r), Some("aa")), Some(Mismatch::OtherBuild));
        assert_eq!(judge(5, Some(&r), None), None, "a native decoder");
    }

    #[test]
    fn a_failing_grain_is_left_to_its_retries() {
        let failing = ReplicaStatus::Failing {
            sequence: 5,
            reason: "x".into(),
        };
        let r = replica(4, "aa", failing.clone());
        assert_eq!(judge(5, Some(&r), Some("aa")), None);
        let mut stateless = replica(0, "aa", failing);
        stateless.state = None;
        assert_eq!(judge(5, Some(&stateless), Some("aa")), None);
    }
}
