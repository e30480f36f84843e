//! Shadow decoding: a candidate plugin (`[[plugin]] shadow`) decodes the
//! snapshots the plugin in force decodes, beside it, and each pair of
//! results is classified ([`classify`]) and counted ([`tally`]). The
//! candidate never replaces a served value, and it runs on spare decode
//! capacity only: when no decode slot is free the moment the served
//! decode returns, its shadow decode is dropped and counted as `shed`, so
//! the served path never waits on it (README.md, "Shadow decoding").

pub mod classify;
pub mod tally;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use self::classify::{Class, Verdict};
use self::tally::{Example, LINES_PER_EXAMPLE, Tally};
use crate::decode::{CallError, CallErrorKind, DecodedBy, SnapshotDecoder};
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder};
use crate::replication_log::LogEntry;
use crate::text;
use crate::value::State;

/// The most snapshots one shadow call decodes: a shadow holds its spare
/// decode slot for at most this many decodes (a served call arriving
/// meanwhile waits that long at worst); the rest of a larger batch is
/// `shed`.
pub const SHADOW_CALL_MAX: usize = 8;

/// A grain type's shadow: the candidate, how much of the traffic it sees,
/// and what it has shown.
pub struct Shadow {
    /// The candidate plugin, loaded and checked like any plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// The candidate's file, as the config resolves it.
    pub path: PathBuf,
    /// The share of snapshots it decodes (`shadow_sample`, 0.0 to 1.0).
    pub sample: f64,
    /// Its counts and examples.
    pub tally: Arc<Tally>,
}

impl Shadow {
    /// A fresh shadow of `grain_type` with `plugin`, loaded from `path`.
    pub fn new(grain_type: &str, plugin: Arc<LoadedPlugin>, path: PathBuf, sample: f64) -> Self {
        Self {
            plugin,
            path,
            sample,
            tally: Arc::new(Tally::new(grain_type)),
        }
    }

    /// `served` (the plugin in force's decoder) with this shadow beside
    /// it, on `slots`.
    pub fn wrap(
        &self,
        served: Arc<dyn SnapshotDecoder>,
        slots: &DecodeSlots,
    ) -> Arc<dyn SnapshotDecoder> {
        Arc::new(ShadowedDecoder {
            served,
            candidate: PluginDecoder::new(Arc::clone(&self.plugin), slots.clone()),
            sample: self.sample,
            tally: Arc::clone(&self.tally),
        })
    }

    /// The shadow as `/v1/plugins` shows it: file, sha256, sample rate,
    /// a count per class and the recent examples of each class but `same`.
    pub fn json(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> = Class::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), self.tally.count(*c).into()))
            .collect();
        let examples: serde_json::Map<String, serde_json::Value> = Class::ALL
            .iter()
            .filter(|c| **c != Class::Same)
            .map(|c| {
                let examples = serde_json::to_value(self.tally.examples(*c))
                    .unwrap_or(serde_json::Value::Null);
                (c.as_str().to_string(), examples)
            })
            .collect();
        serde_json::json!({
            "file": text::escape(&self.path.display().to_string()),
            "name": self.plugin.name(),
            "sha256": self.plugin.sha256(),
            "schema_version": self.plugin.description().schema_version,
            "sample": self.sample,
            "counts": counts,
            "examples": examples,
        })
    }
}

/// A decoder that runs only on spare capacity, never making its caller
/// wait: the candidate's [`PluginDecoder`].
pub trait SpareDecoder: Send + Sync + 'static {
    /// As [`PluginDecoder::decode_on_spare_slot`]: `false` at once when no
    /// slot is free, else `then` gets each entry's result later.
    fn decode_on_spare_slot(
        &self,
        entries: impl FnOnce() -> Vec<LogEntry>,
        then: impl FnOnce(Vec<LogEntry>, Vec<Result<State, CallError>>) + Send + 'static,
    ) -> bool;
}

impl SpareDecoder for PluginDecoder {
    fn decode_on_spare_slot(
        &self,
        entries: impl FnOnce() -> Vec<LogEntry>,
        then: impl FnOnce(Vec<LogEntry>, Vec<Result<State, CallError>>) + Send + 'static,
    ) -> bool {
        PluginDecoder::decode_on_spare_slot(self, entries, then)
    }
}

/// The consumer's decoder of a grain type with a shadow: the plugin in
/// force decodes and its result is what is served; the candidate decodes
/// the same (sampled) snapshots afterwards on a spare decode slot.
struct ShadowedDecoder<C> {
    /// The plugin in force's decoder.
    served: Arc<dyn SnapshotDecoder>,
    /// The candidate, on the same decode slots.
    candidate: C,
    /// The share of snapshots the candidate decodes.
    sample: f64,
    /// Where each result is counted.
    tally: Arc<Tally>,
}

#[async_trait]
impl<C: SpareDecoder> SnapshotDecoder for ShadowedDecoder<C> {
    async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
        let result = self.served.decode(entry).await;
        self.shadow(std::slice::from_ref(entry), std::slice::from_ref(&result));
        result
    }

    async fn decode_batch(&self, entries: &[LogEntry]) -> Vec<Result<State, CallError>> {
        let results = self.served.decode_batch(entries).await;
        self.shadow(entries, &results);
        results
    }

    fn batch_max(&self) -> usize {
        self.served.batch_max()
    }

    fn decoded_by(&self) -> Option<Arc<DecodedBy>> {
        self.served.decoded_by()
    }
}

impl<C: SpareDecoder> ShadowedDecoder<C> {
    /// Hands the sampled snapshots the served plugin really ran on to the
    /// candidate if a decode slot is free, or counts them as `shed`.
    fn shadow(&self, entries: &[LogEntry], served: &[Result<State, CallError>]) {
        let chosen: Vec<usize> = (0..entries.len().min(served.len()))
            .filter(|&i| ran(&served[i]) && sampled(&entries[i], self.sample))
            .collect();
        if chosen.is_empty() {
            return;
        }
        // One shadow call carries at most SHADOW_CALL_MAX snapshots, so it
        // holds a slot a served call may want next only that long.
        let (chosen, over) = chosen.split_at(chosen.len().min(SHADOW_CALL_MAX));
        for &i in over {
            self.tally
                .record(Class::Shed, example(&entries[i], Vec::new(), None, None));
        }
        let chosen = chosen.to_vec();
        let served: Vec<Result<State, CallError>> =
            chosen.iter().map(|&i| served[i].clone()).collect();
        let tally = Arc::clone(&self.tally);
        let started = self.candidate.decode_on_spare_slot(
            || chosen.iter().map(|&i| entries[i].clone()).collect(),
            move |entries, candidate| {
                for ((entry, served), candidate) in entries.iter().zip(&served).zip(&candidate) {
                    let (class, example) = judge(entry, served, candidate);
                    tally.record(class, example);
                }
            },
        );
        if !started {
            for &i in &chosen {
                self.tally
                    .record(Class::Shed, example(&entries[i], Vec::new(), None, None));
            }
        }
    }
}

/// Whether the served plugin's guest ran (or refused) the snapshot: a
/// call failed fast (breaker open, shutdown, quarantine) is not compared.
fn ran(served: &Result<State, CallError>) -> bool {
    !matches!(served, Err(e) if matches!(e.kind, CallErrorKind::Unavailable | CallErrorKind::Quarantined))
}

/// Whether the snapshot is in the `sample` share: decided by a hash of its
/// grain and sequence, so a retried snapshot is sampled alike every time.
fn sampled(entry: &LogEntry, sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    if sample <= 0.0 {
        return false;
    }
    // FNV-1a over the key and the sequence.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in entry
        .grain_key
        .as_bytes()
        .iter()
        .chain(&entry.sequence.to_le_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash as f64) < sample * (u64::MAX as f64)
}

/// Classifies one snapshot's pair of results, with its example.
fn judge(
    entry: &LogEntry,
    served: &Result<State, CallError>,
    candidate: &Result<State, CallError>,
) -> (Class, Example) {
    let as_json = |r: &Result<State, CallError>| {
        r.as_ref()
            .ok()
            .map(|state| serde_json::to_value(state).map_err(|e| e.to_string()))
    };
    let (served_json, candidate_json) = (as_json(served), as_json(candidate));
    let failure = |r: &Result<State, CallError>,
                   json: &Option<Result<serde_json::Value, String>>| match (
        r, json,
    ) {
        (Err(e), _) => Some(text::escape(&format!("{}: {}", e.kind, e.message))),
        (Ok(_), Some(Err(e))) => Some(text::escape(&format!("render: {e}"))),
        _ => None,
    };
    let served_error = failure(served, &served_json);
    let candidate_error = failure(candidate, &candidate_json);
    let Verdict { class, differences } = classify::classify(
        served_json.as_ref().and_then(|j| j.as_ref().ok()),
        candidate_json.as_ref().and_then(|j| j.as_ref().ok()),
    );
    let lines = differences
        .iter()
        .map(|d| text::escape(&d.line("served", "candidate")))
        .collect();
    (class, example(entry, lines, served_error, candidate_error))
}

/// An example of `entry`, its difference lines cut to [`LINES_PER_EXAMPLE`].
fn example(
    entry: &LogEntry,
    mut differences: Vec<String>,
    served_error: Option<String>,
    candidate_error: Option<String>,
) -> Example {
    let more_differences = differences.len().saturating_sub(LINES_PER_EXAMPLE);
    differences.truncate(LINES_PER_EXAMPLE);
    Example {
        grain_key: text::escape(&entry.grain_key),
        sequence: entry.sequence,
        differences,
        more_differences,
        served_error,
        candidate_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication_log::EntryType;

    fn entry(key: &str, sequence: u64) -> LogEntry {
        LogEntry {
            grain_type: "T".into(),
            grain_key: key.into(),
            sequence,
            timestamp_millis: 0,
            source_cluster: "c".into(),
            entry_type: EntryType::FullState,
            payload: bytes::Bytes::new(),
        }
    }

    #[test]
    fn sampling_is_stable_and_near_its_rate() {
        let all: Vec<LogEntry> = (0..10_000).map(|i| entry(&format!("k{i}"), 7)).collect();
        let share = |rate| all.iter().filter(|e| sampled(e, rate)).count();
        assert_eq!(share(1.0), 10_000);
        assert_eq!(share(0.0), 0);
        let quarter = share(0.25);
        assert!((2_200..2_800).contains(&quarter), "{quarter}");
        assert_eq!(share(0.25), quarter, "the same snapshots every time");
    }

    /// Decodes every snapshot to `{"count": sequence}`.
    struct Served;

    #[async_trait]
    impl SnapshotDecoder for Served {
        async fn decode(&self, entry: &LogEntry) -> Result<State, CallError> {
            Ok(State::from_serialize(&serde_json::json!({ "count": entry.sequence })).unwrap())
        }
    }

    /// A candidate on `slots` that adds a field, at once on the caller's
    /// thread (so the test sees its result without waiting).
    struct Candidate {
        slots: DecodeSlots,
    }

    impl SpareDecoder for Candidate {
        fn decode_on_spare_slot(
            &self,
            entries: impl FnOnce() -> Vec<LogEntry>,
            then: impl FnOnce(Vec<LogEntry>, Vec<Result<State, CallError>>) + Send + 'static,
        ) -> bool {
            let Some(_slot) = self.slots.try_acquire() else {
                return false;
            };
            let entries = entries();
            let results = entries
                .iter()
                .map(|e| {
                    Ok(State::from_serialize(
                        &serde_json::json!({ "count": e.sequence, "updated_by": "v2" }),
                    )
                    .unwrap())
                })
                .collect();
            then(entries, results);
            true
        }
    }

    #[tokio::test]
    async fn with_every_slot_busy_the_shadow_is_shed_and_the_served_value_returned_at_once() {
        let slots = DecodeSlots::new(2);
        let tally = Arc::new(Tally::new("T"));
        let decoder = ShadowedDecoder {
            served: Arc::new(Served) as Arc<dyn SnapshotDecoder>,
            candidate: Candidate {
                slots: slots.clone(),
            },
            sample: 1.0,
            tally: Arc::clone(&tally),
        };
        let busy = [slots.try_acquire().unwrap(), slots.try_acquire().unwrap()];
        let served = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            decoder.decode(&entry("a", 1)),
        )
        .await
        .expect("the served path never waits for a slot the shadow would need")
        .unwrap();
        assert_eq!(served.to_json().unwrap(), r#"{"count":1}"#);
        let batch = decoder.decode_batch(&[entry("b", 2), entry("c", 3)]).await;
        assert_eq!(batch.len(), 2);
        assert_eq!(tally.count(Class::Shed), 3);
        assert_eq!(tally.count(Class::FieldsAdded), 0);
        let shed: Vec<String> = tally
            .examples(Class::Shed)
            .into_iter()
            .map(|e| e.grain_key)
            .collect();
        assert_eq!(shed, ["a", "b", "c"]);

        drop(busy);
        let served = decoder.decode(&entry("d", 4)).await.unwrap();
        assert_eq!(
            served.to_json().unwrap(),
            r#"{"count":4}"#,
            "the candidate's value is never served"
        );
        assert_eq!(tally.count(Class::FieldsAdded), 1);
        assert_eq!(tally.count(Class::Shed), 3);
        let example = &tally.examples(Class::FieldsAdded)[0];
        assert_eq!(example.grain_key, "d");
        assert_eq!(
            example.differences,
            [".updated_by: served (absent), candidate \"v2\""]
        );
        assert!(
            slots.try_acquire().is_some(),
            "the shadow gave its slot back"
        );

        // A batch larger than one shadow call: the rest is shed.
        let batch: Vec<LogEntry> = (0..SHADOW_CALL_MAX as u64 + 2)
            .map(|i| entry(&format!("b{i}"), 10 + i))
            .collect();
        assert_eq!(decoder.decode_batch(&batch).await.len(), batch.len());
        assert_eq!(tally.count(Class::FieldsAdded), 1 + SHADOW_CALL_MAX as u64);
        assert_eq!(tally.count(Class::Shed), 3 + 2);
    }

    #[test]
    fn calls_that_never_ran_are_not_compared() {
        let failed = |kind| {
            Err(CallError {
                plugin: "p".into(),
                grain_type: "T".into(),
                grain_key: "k".into(),
                sequence: 1,
                kind,
                message: "m".into(),
            })
        };
        assert!(ran(&failed(CallErrorKind::MalformedPayload)));
        assert!(ran(&failed(CallErrorKind::Trap)));
        assert!(!ran(&failed(CallErrorKind::Unavailable)));
        assert!(!ran(&failed(CallErrorKind::Quarantined)));
    }
}
