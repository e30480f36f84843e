//! The consumer's settings and its backoff schedule.

use std::time::Duration;

/// How the consumer polls, batches and backs off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// How often each grain type's discovery task asks the log for its
    /// grains' heads. Also bounds how long shutdown takes.
    pub poll_interval: Duration,
    /// Most entries read per query (at least 1 is used).
    pub batch_limit: usize,
    /// Delay before the first retry after a read error or a snapshot that
    /// does not decode; doubled on each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the retry delay.
    pub max_backoff: Duration,
    /// How often the log's grain types are listed to report types that have
    /// no decoder.
    pub grain_type_scan_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            batch_limit: 100,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            grain_type_scan_interval: Duration::from_secs(10),
        }
    }
}

/// The smallest delay ever used, so that a zero setting cannot make a hot loop.
const MIN_DELAY: Duration = Duration::from_millis(1);

impl ConsumerConfig {
    /// The delay after the `failures`-th consecutive failure (1-based):
    /// `initial_backoff · 2^(failures−1)`, capped at `max_backoff`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let initial = self.initial_backoff.max(MIN_DELAY);
        let cap = self.max_backoff.max(initial);
        let exponent = failures.saturating_sub(1).min(31);
        initial
            .checked_mul(1u32 << exponent)
            .unwrap_or(cap)
            .min(cap)
    }

    /// The batch limit actually used (at least 1).
    pub(crate) fn limit(&self) -> usize {
        self.batch_limit.max(1)
    }

    /// The poll interval actually used (at least 1 ms).
    pub(crate) fn poll(&self) -> Duration {
        self.poll_interval.max(MIN_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let config = ConsumerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
            ..ConsumerConfig::default()
        };
        let delays: Vec<u128> = (1..=6).map(|n| config.backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(config.backoff(0), Duration::from_millis(100));
        assert_eq!(config.backoff(u32::MAX), Duration::from_millis(1_000));
    }

    #[test]
    fn zero_settings_never_give_a_zero_delay() {
        let config = ConsumerConfig {
            poll_interval: Duration::ZERO,
            batch_limit: 0,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..ConsumerConfig::default()
        };
        assert!(config.backoff(1) >= MIN_DELAY);
        assert!(config.poll() >= MIN_DELAY);
        assert_eq!(config.limit(), 1);
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = ConsumerConfig::default();
        assert_eq!(config.poll_interval, Duration::from_millis(100));
        assert_eq!(config.batch_limit, 100);
        assert_eq!(config.max_backoff, Duration::from_secs(30));
    }
}
