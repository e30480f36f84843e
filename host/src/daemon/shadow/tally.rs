//! What a shadow has shown so far: a count per class and the last few
//! examples of each class other than `same`, for `/v1/plugins`, the
//! operator page and the line logged when the shadow ends. Each decode is
//! also counted in `replica_shadow_decodes_total{grain_type, result}`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::classify::Class;

/// Examples kept per class: the most recent ones.
pub const EXAMPLES_PER_CLASS: usize = 5;
/// Difference lines kept per example; the rest are counted.
pub const LINES_PER_EXAMPLE: usize = 8;

/// One snapshot the candidate classed as other than `same`. Every text
/// is escaped (`crate::text::escape`): plugins wrote the values in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Example {
    /// The grain's key.
    pub grain_key: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// Where the values differ: `PATH: served X, candidate Y`, at most
    /// [`LINES_PER_EXAMPLE`] lines.
    pub differences: Vec<String>,
    /// How many more difference lines there were.
    pub more_differences: usize,
    /// The served plugin's error, when it failed: `kind: message`.
    pub served_error: Option<String>,
    /// The candidate's error, when it failed: `kind: message`.
    pub candidate_error: Option<String>,
}

/// A shadow's counts and examples; shared by its decoder and the readers.
#[derive(Debug)]
pub struct Tally {
    /// The grain type, the metric's label.
    grain_type: String,
    /// Per class (in [`Class::ALL`] order), how many snapshots.
    counts: [AtomicU64; 6],
    /// Per class, the most recent examples, oldest first (none for `same`).
    examples: Mutex<[VecDeque<Example>; 6]>,
}

impl Tally {
    /// An empty tally of `grain_type`'s shadow.
    pub fn new(grain_type: &str) -> Self {
        Self {
            grain_type: grain_type.to_string(),
            counts: Default::default(),
            examples: Mutex::new(Default::default()),
        }
    }

    /// Counts one snapshot of `class` (here and in the metric), keeping
    /// `example` unless the class is `same`.
    pub fn record(&self, class: Class, example: Example) {
        self.counts[class.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "replica_shadow_decodes_total",
            "grain_type" => self.grain_type.clone(),
            "result" => class.as_str(),
        )
        .increment(1);
        if class == Class::Same {
            return;
        }
        let mut examples = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = &mut examples[class.index()];
        if kept.len() == EXAMPLES_PER_CLASS {
            kept.pop_front();
        }
        kept.push_back(example);
    }

    /// How many snapshots of `class` so far.
    pub fn count(&self, class: Class) -> u64 {
        self.counts[class.index()].load(Ordering::Relaxed)
    }

    /// The most recent examples of `class`, oldest first.
    pub fn examples(&self, class: Class) -> Vec<Example> {
        let examples = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
        examples[class.index()].iter().cloned().collect()
    }

    /// Every count in one line: `same=3 fields_added=2 differs=0 …`.
    pub fn summary(&self) -> String {
        Class::ALL
            .iter()
            .map(|c| format!("{}={}", c.as_str(), self.count(*c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(key: &str) -> Example {
        Example {
            grain_key: key.into(),
            sequence: 1,
            differences: vec![],
            more_differences: 0,
            served_error: None,
            candidate_error: None,
        }
    }

    #[test]
    fn counts_every_class_and_keeps_the_last_examples_but_not_of_same() {
        let tally = Tally::new("Counter");
        for i in 0..EXAMPLES_PER_CLASS + 2 {
            tally.record(Class::Differs, example(&format!("k{i}")));
        }
        tally.record(Class::Same, example("s"));
        tally.record(Class::Shed, example("busy"));
        assert_eq!(tally.count(Class::Differs), EXAMPLES_PER_CLASS as u64 + 2);
        assert_eq!(tally.count(Class::Same), 1);
        let kept: Vec<String> = tally
            .examples(Class::Differs)
            .into_iter()
            .map(|e| e.grain_key)
            .collect();
        assert_eq!(kept, ["k2", "k3", "k4", "k5", "k6"]);
        assert!(tally.examples(Class::Same).is_empty());
        assert_eq!(tally.examples(Class::Shed)[0].grain_key, "busy");
        assert_eq!(
            tally.summary(),
            "same=1 fields_added=0 differs=7 candidate_failed=0 candidate_recovers=0 shed=1"
        );
    }
}
