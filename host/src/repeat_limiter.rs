//! Keeps many grains failing at once from flooding the log.
//!
//! Errors are grouped by grain type and kind (`malformed_payload`, `trap`,
//! `delta`, `read_error`, ...). The first of a group is logged in full; the
//! identical ones that follow within the summary interval are only counted,
//! and once the interval is over one summary line says how many there were,
//! over how long, with a few example grain keys. The next error of the group
//! after that is logged in full again. So a group costs at most two lines per
//! interval, whether one grain fails or ten thousand; every failure is still
//! counted in the metrics and shown in the grain's status.
//!
//! Summaries are written when any limited event happens after the interval
//! (failing grains retry, so events keep coming while anything fails) and
//! when the daemon stops ([`flush_all`]).
//!
//! One limiter serves the process ([`global`]); [`RepeatLimiter`] itself takes
//! the time as an argument, so its rules are tested with a fake clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The summary interval when none is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Example grain keys a summary names.
const MAX_EXAMPLES: usize = 3;

/// What was left out of the log for one group during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The grain type.
    pub grain_type: String,
    /// The error kind.
    pub kind: &'static str,
    /// How many identical errors were not logged.
    pub suppressed: u64,
    /// The time since the group's last full line.
    pub over: Duration,
    /// A few of the grains they came from.
    pub examples: Vec<String>,
}

#[derive(Debug)]
struct Group {
    /// When the group's last full line was written.
    logged_at: Instant,
    /// Identical errors counted since then.
    suppressed: u64,
    /// A few grain keys of those, for the summary.
    examples: Vec<String>,
}

/// Groups errors by (grain type, kind) and decides which to log.
#[derive(Debug)]
pub struct RepeatLimiter {
    /// The summary interval, in ms.
    interval_ms: AtomicU64,
    /// The groups, by grain type and kind.
    groups: Mutex<HashMap<(String, &'static str), Group>>,
}

impl RepeatLimiter {
    /// A limiter logging each group in full at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: AtomicU64::new(interval.as_millis() as u64),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the summary interval.
    pub fn set_interval(&self, interval: Duration) {
        self.interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// The summary interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, &'static str), Group>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the groups whose interval is over at `now`: returns the summary
    /// of each that left something out. Their next error is logged in full.
    pub fn take_due(&self, now: Instant) -> Vec<Summary> {
        let interval = self.interval();
        let mut due = Vec::new();
        self.lock().retain(|(grain_type, kind), group| {
            let over = now.saturating_duration_since(group.logged_at);
            if over < interval {
                return true;
            }
            if group.suppressed > 0 {
                due.push(Summary {
                    grain_type: grain_type.clone(),
                    kind,
                    suppressed: group.suppressed,
                    over,
                    examples: std::mem::take(&mut group.examples),
                });
            }
            false
        });
        due.sort_by(|a, b| (&a.grain_type, a.kind).cmp(&(&b.grain_type, b.kind)));
        due
    }

    /// Every group's summary, now (at shutdown); forgets every group.
    pub fn take_all(&self, now: Instant) -> Vec<Summary> {
        let mut all: Vec<Summary> = self
            .lock()
            .drain()
            .filter(|(_, group)| group.suppressed > 0)
            .map(|((grain_type, kind), group)| Summary {
                grain_type,
                kind,
                suppressed: group.suppressed,
                over: now.saturating_duration_since(group.logged_at),
                examples: group.examples,
            })
            .collect();
        all.sort_by(|a, b| (&a.grain_type, a.kind).cmp(&(&b.grain_type, b.kind)));
        all
    }

    /// Whether an error of `kind` for `grain_type/grain_key` at `now` is
    /// logged in full (the first of its group in this interval) or only counted.
    /// Call [`RepeatLimiter::take_due`] first, so that ended groups start afresh.
    pub fn admit(
        &self,
        now: Instant,
        grain_type: &str,
        kind: &'static str,
        grain_key: &str,
    ) -> bool {
        let mut groups = self.lock();
        match groups.get_mut(&(grain_type.to_owned(), kind)) {
            None => {
                groups.insert(
                    (grain_type.to_owned(), kind),
                    Group {
                        logged_at: now,
                        suppressed: 0,
                        examples: Vec::new(),
                    },
                );
                true
            }
            Some(group) => {
                group.suppressed += 1;
                if group.examples.len() < MAX_EXAMPLES
                    && !group.examples.iter().any(|k| k == grain_key)
                {
                    group.examples.push(grain_key.to_owned());
                }
                false
            }
        }
    }
}

/// The process's limiter, used by every grain's steps.
pub fn global() -> &'static RepeatLimiter {
    static GLOBAL: OnceLock<RepeatLimiter> = OnceLock::new();
    GLOBAL.get_or_init(|| RepeatLimiter::new(DEFAULT_INTERVAL))
}

/// Writes one summary line.
fn emit(summary: &Summary) {
    tracing::warn!(
        grain_type = %summary.grain_type,
        kind = summary.kind,
        suppressed = summary.suppressed,
        over_ms = summary.over.as_millis() as u64,
        examples = ?summary.examples,
        "{} more `{}` errors of grain type {} in the last {:.1} s, not logged one by one",
        summary.suppressed,
        summary.kind,
        summary.grain_type,
        summary.over.as_secs_f64()
    );
}

/// Runs `log` (which writes the full line) unless an identical error of the
/// same grain type and kind was logged within the interval; writes any
/// summaries that are due first.
pub(crate) fn limited(grain_type: &str, kind: &'static str, grain_key: &str, log: impl FnOnce()) {
    let limiter = global();
    let now = Instant::now();
    for summary in limiter.take_due(now) {
        emit(&summary);
    }
    if limiter.admit(now, grain_type, kind, grain_key) {
        log();
    }
}

/// Writes every pending summary (at shutdown).
pub fn flush_all() {
    for summary in global().take_all(Instant::now()) {
        emit(&summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// One event through the limiter at `now`: (logged in full, summaries due).
    fn event(
        l: &RepeatLimiter,
        now: Instant,
        gt: &str,
        kind: &'static str,
        key: &str,
    ) -> (bool, Vec<Summary>) {
        let due = l.take_due(now);
        (l.admit(now, gt, kind, key), due)
    }

    #[test]
    fn first_error_in_full_then_counted_then_summarised() {
        let l = RepeatLimiter::new(10 * S);
        let t = Instant::now();
        assert_eq!(event(&l, t, "Counter", "trap", "g0"), (true, vec![]));
        for i in 1..200 {
            let (logged, due) = event(&l, t + S, "Counter", "trap", &format!("g{i}"));
            assert!(!logged && due.is_empty(), "event {i}");
        }
        // Still inside the interval: nothing due.
        assert!(l.take_due(t + 9 * S).is_empty());
        // The interval is over: one summary, and the next error is in full.
        let (logged, due) = event(&l, t + 12 * S, "Counter", "trap", "g7");
        assert!(logged);
        assert_eq!(
            due,
            vec![Summary {
                grain_type: "Counter".into(),
                kind: "trap",
                suppressed: 199,
                over: 12 * S,
                examples: vec!["g1".into(), "g2".into(), "g3".into()],
            }]
        );
    }

    #[test]
    fn groups_are_per_grain_type_and_kind() {
        let l = RepeatLimiter::new(10 * S);
        let t = Instant::now();
        assert!(event(&l, t, "Counter", "trap", "a").0);
        assert!(event(&l, t, "Counter", "timeout", "a").0);
        assert!(event(&l, t, "Other", "trap", "a").0);
        assert!(!event(&l, t, "Counter", "trap", "b").0);
        assert!(!event(&l, t, "Counter", "trap", "b").0);
        // An event of another group after the interval brings the summary out.
        let (_, due) = event(&l, t + 10 * S, "Other", "delta", "z");
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].kind, due[0].suppressed, due[0].examples.clone()),
            ("trap", 2, vec!["b".to_string()])
        );
    }

    #[test]
    fn a_lone_error_has_no_summary_and_a_quiet_group_starts_afresh() {
        let l = RepeatLimiter::new(S);
        let t = Instant::now();
        assert!(event(&l, t, "Counter", "trap", "a").0);
        assert!(l.take_due(t + 5 * S).is_empty());
        assert!(event(&l, t + 5 * S, "Counter", "trap", "a").0);
    }

    #[test]
    fn at_shutdown_every_pending_count_is_summarised() {
        let l = RepeatLimiter::new(60 * S);
        let t = Instant::now();
        event(&l, t, "Counter", "trap", "a");
        event(&l, t, "Counter", "trap", "b");
        event(&l, t, "Counter", "delta", "c");
        let all = l.take_all(t + S);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].kind, all[0].suppressed), ("trap", 1));
        assert!(l.take_all(t + S).is_empty());
    }

    #[test]
    fn the_interval_can_change() {
        let l = RepeatLimiter::new(60 * S);
        l.set_interval(S / 2);
        assert_eq!(l.interval(), S / 2);
    }
}
