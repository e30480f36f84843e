//! An optional circuit breaker per plugin: after `after_faults` consecutive
//! guest faults (traps, timeouts, out-of-memory, bad output; see
//! [`CallErrorKind::is_guest_fault`](crate::decode::CallErrorKind::is_guest_fault))
//! the plugin is *open* (paused): its calls fail fast with
//! [`CallErrorKind::Unavailable`](crate::decode::CallErrorKind::Unavailable) without
//! running any guest code. After `cooldown` one call is let through as a
//! trial (*half open*; concurrent calls still fail fast): if the guest
//! behaves, the breaker closes; if it faults again, it opens for another
//! cooldown.
//!
//! A call that returns a decode error of the plugin's own (malformed payload,
//! rejected, ...) is the plugin working as designed: it resets the count.
//!
//! The state machine is pure: every method takes the current time, so it is
//! tested without sleeping. [`super::PluginDecoder`] drives it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When a plugin's breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive guest faults that open the breaker (at least 1).
    pub after_faults: u32,
    /// How long the breaker stays open before one trial call.
    pub cooldown: Duration,
}

impl BreakerConfig {
    /// The cool-down when the config names none.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls run.
    Closed,
    /// Calls fail fast until the cool-down ends.
    Open,
    /// One trial call is running; others fail fast.
    HalfOpen,
}

impl BreakerState {
    /// A stable snake_case label, used in HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run it; `trial` when it is the one call that decides whether the
    /// breaker closes again.
    Call {
        /// The call is the half-open trial.
        trial: bool,
    },
    /// Fail fast; the next trial is possible after `retry_in`.
    Reject {
        /// Time left in the cool-down.
        retry_in: Duration,
        /// Consecutive faults that opened the breaker.
        faults: u32,
    },
}

/// A change of state worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open after `after_faults` consecutive faults.
    Opened,
    /// The trial call faulted: open again.
    Reopened,
    /// The trial call succeeded: closed.
    Closed,
}

/// A breaker's state and counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    /// Where it stands.
    pub state: BreakerState,
    /// Guest faults in a row (reset by any call that does not fault).
    pub consecutive_faults: u32,
    /// How often it opened (reopening after a failed trial included).
    pub times_opened: u64,
    /// Calls failed fast while open or half open.
    pub rejected_calls: u64,
    /// While open: time left before the next trial.
    pub retry_in: Option<Duration>,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    /// Closed, open until a time, or half-open.
    state: State,
    /// Guest faults in a row.
    consecutive: u32,
    /// How often it opened.
    times_opened: u64,
    /// Calls refused while open.
    rejected: u64,
}

/// The circuit breaker of one plugin; shared by every call of it.
#[derive(Debug)]
pub struct Breaker {
    /// When to open and for how long.
    config: BreakerConfig,
    /// The state, behind a lock held for no I/O.
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: BreakerConfig {
                after_faults: config.after_faults.max(1),
                cooldown: config.cooldown,
            },
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                times_opened: 0,
                rejected: 0,
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides whether a call starting at `now` may run. A caller admitted
    /// as the trial must end with [`Breaker::record`] or [`Breaker::abandon_trial`].
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Admission::Call { trial: false },
            State::Open { until } if now >= until => {
                inner.state = State::HalfOpen;
                Admission::Call { trial: true }
            }
            State::Open { until } => {
                inner.rejected += 1;
                Admission::Reject {
                    retry_in: until - now,
                    faults: inner.consecutive,
                }
            }
            State::HalfOpen => {
                inner.rejected += 1;
                Admission::Reject {
                    retry_in: Duration::ZERO,
                    faults: inner.consecutive,
                }
            }
        }
    }

    /// Records how an admitted call ended: `fault` when the guest misbehaved.
    pub fn record(&self, now: Instant, fault: bool, trial: bool) -> Option<Transition> {
        let mut inner = self.lock();
        if fault {
            inner.consecutive = inner.consecutive.saturating_add(1);
        }
        match (&inner.state, trial) {
            (State::HalfOpen, true) if fault => {
                inner.state = State::Open {
                    until: now + self.config.cooldown,
                };
                inner.times_opened += 1;
                Some(Transition::Reopened)
            }
            (State::HalfOpen, true) => {
                inner.state = State::Closed;
                inner.consecutive = 0;
                Some(Transition::Closed)
            }
            (State::Closed, _) if fault && inner.consecutive >= self.config.after_faults => {
                inner.state = State::Open {
                    until: now + self.config.cooldown,
                };
                inner.times_opened += 1;
                Some(Transition::Opened)
            }
            (State::Closed, _) if !fault => {
                inner.consecutive = 0;
                None
            }
            // A call admitted before the breaker opened, ending late: its
            // fault is counted, but it decides nothing.
            _ => None,
        }
    }

    /// The trial call ended without telling anything about the guest (it
    /// was cancelled, or the host could not run it): the next call is the trial.
    pub fn abandon_trial(&self, now: Instant) {
        let mut inner = self.lock();
        if matches!(inner.state, State::HalfOpen) {
            inner.state = State::Open { until: now };
        }
    }

    /// The state and counters at `now`.
    pub fn status(&self, now: Instant) -> BreakerStatus {
        let inner = self.lock();
        let (state, retry_in) = match inner.state {
            State::Closed => (BreakerState::Closed, None),
            State::Open { until } => (
                BreakerState::Open,
                Some(until.saturating_duration_since(now)),
            ),
            State::HalfOpen => (BreakerState::HalfOpen, None),
        };
        BreakerStatus {
            state,
            consecutive_faults: inner.consecutive,
            times_opened: inner.times_opened,
            rejected_calls: inner.rejected,
            retry_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker(after_faults: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            after_faults,
            cooldown: 100 * MS,
        })
    }

    fn call(b: &Breaker, now: Instant, fault: bool) -> Option<Transition> {
        match b.admit(now) {
            Admission::Call { trial } => b.record(now, fault, trial),
            reject => panic!("expected a call, got {reject:?}"),
        }
    }

    #[test]
    fn opens_after_consecutive_faults_only() {
        let b = breaker(3);
        let t = Instant::now();
        assert_eq!(call(&b, t, true), None);
        assert_eq!(call(&b, t, true), None);
        // A call that does not fault resets the count.
        assert_eq!(call(&b, t, false), None);
        assert_eq!(b.status(t).consecutive_faults, 0);
        assert_eq!(call(&b, t, true), None);
        assert_eq!(call(&b, t, true), None);
        assert_eq!(call(&b, t, true), Some(Transition::Opened));
        let status = b.status(t + 40 * MS);
        assert_eq!(status.state, BreakerState::Open);
        assert_eq!(status.consecutive_faults, 3);
        assert_eq!(status.times_opened, 1);
        assert_eq!(status.retry_in, Some(60 * MS));
    }

    #[test]
    fn fails_fast_while_open_then_lets_one_trial_through() {
        let b = breaker(1);
        let t = Instant::now();
        assert_eq!(call(&b, t, true), Some(Transition::Opened));
        assert_eq!(
            b.admit(t + 99 * MS),
            Admission::Reject {
                retry_in: MS,
                faults: 1
            }
        );
        assert_eq!(b.admit(t + 100 * MS), Admission::Call { trial: true });
        assert_eq!(b.status(t + 100 * MS).state, BreakerState::HalfOpen);
        // Only one trial at a time.
        assert!(matches!(b.admit(t + 101 * MS), Admission::Reject { .. }));
        assert_eq!(b.status(t).rejected_calls, 2);
        // The trial faults: open for another cool-down.
        assert_eq!(
            b.record(t + 110 * MS, true, true),
            Some(Transition::Reopened)
        );
        assert_eq!(b.status(t + 110 * MS).times_opened, 2);
        assert!(matches!(b.admit(t + 150 * MS), Admission::Reject { .. }));
        // The next trial succeeds: closed, count reset.
        assert_eq!(b.admit(t + 210 * MS), Admission::Call { trial: true });
        assert_eq!(
            b.record(t + 211 * MS, false, true),
            Some(Transition::Closed)
        );
        let status = b.status(t + 211 * MS);
        assert_eq!(
            (status.state, status.consecutive_faults, status.retry_in),
            (BreakerState::Closed, 0, None)
        );
        assert_eq!(b.admit(t + 212 * MS), Admission::Call { trial: false });
    }

    #[test]
    fn an_abandoned_trial_hands_the_trial_to_the_next_call() {
        let b = breaker(1);
        let t = Instant::now();
        call(&b, t, true);
        assert_eq!(b.admit(t + 100 * MS), Admission::Call { trial: true });
        b.abandon_trial(t + 105 * MS);
        assert_eq!(b.status(t + 105 * MS).state, BreakerState::Open);
        assert_eq!(b.admit(t + 105 * MS), Admission::Call { trial: true });
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening_decide_nothing() {
        let b = breaker(1);
        let t = Instant::now();
        // Two calls admitted while closed; the first faults and opens.
        assert_eq!(b.admit(t), Admission::Call { trial: false });
        assert_eq!(b.admit(t), Admission::Call { trial: false });
        assert_eq!(b.record(t, true, false), Some(Transition::Opened));
        // The second ends well, late: the breaker stays open.
        assert_eq!(b.record(t + MS, false, false), None);
        assert_eq!(b.status(t + MS).state, BreakerState::Open);
    }

    #[test]
    fn zero_faults_means_one() {
        let b = breaker(0);
        assert_eq!(b.config().after_faults, 1);
        assert_eq!(call(&b, Instant::now(), true), Some(Transition::Opened));
    }
}
