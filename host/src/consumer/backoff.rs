//! [`Backoff`]: when a grain retries after consecutive failures.

use std::time::Duration;

// tokio's clock, as the rest of the consumer: tests pause and advance it.
use tokio::time::Instant;

use super::ConsumerConfig;

/// Consecutive failures of one kind (reads, or decodes) and when the next
/// try is due. Each failure waits [`ConsumerConfig::backoff`] of the new
/// count: a random delay (full jitter) under a ceiling that doubles from
/// the initial delay up to the cap.
///
/// Packed to 4-byte alignment: 20 bytes instead of 24, so a grain's two
/// backoffs cost what the four loose fields did before them (see the size
/// test in `grain.rs`). Its fields are `Copy` and only ever read by value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(Rust, packed(4))]
pub(crate) struct Backoff {
    /// Failures since the last success; 0 when not backing off.
    failures: u32,
    /// When the next try is due; `None` when not backing off.
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Records one more failure at `now`; returns the wait before the next try.
    pub(crate) fn fail(&mut self, config: &ConsumerConfig, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = config.backoff(self.failures);
        self.retry_at = Some(now + delay);
        delay
    }

    /// A success: back to no failures and no wait.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next try is due, if backing off.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether a try is waiting and due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now >= at)
    }

    /// Whether a try is waiting and due now. The clock is read only when a
    /// try is waiting: most grains of a catch-up have none.
    pub(crate) fn is_due_now(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ConsumerConfig {
        ConsumerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            ..ConsumerConfig::default()
        }
    }

    #[test]
    fn each_failure_waits_at_most_its_ceiling_up_to_the_cap() {
        let config = config();
        let now = Instant::now();
        let mut backoff = Backoff::default();
        for ceiling in [100, 200, 400, 400] {
            let wait = backoff.fail(&config, now);
            assert!(
                wait <= Duration::from_millis(ceiling),
                "{wait:?} > {ceiling} ms"
            );
            assert!(wait >= Duration::from_millis(1));
            assert_eq!(backoff.retry_at(), Some(now + wait));
        }
        assert_eq!(backoff.failures(), 4);
    }

    #[test]
    fn due_only_once_the_wait_is_over() {
        let config = config();
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(!backoff.is_due(now), "nothing to retry before a failure");
        let wait = backoff.fail(&config, now);
        assert!(!backoff.is_due(now + wait - Duration::from_micros(1)));
        assert!(backoff.is_due(now + wait));
    }

    #[test]
    fn reset_forgets_the_failures() {
        let config = config();
        let now = Instant::now();
        let mut backoff = Backoff::default();
        backoff.fail(&config, now);
        backoff.fail(&config, now);
        backoff.reset();
        assert_eq!(backoff, Backoff::default());
        assert!(!backoff.is_due(now + Duration::from_secs(60)));
        assert!(backoff.fail(&config, now) <= Duration::from_millis(100));
        assert_eq!(backoff.failures(), 1);
    }
}
