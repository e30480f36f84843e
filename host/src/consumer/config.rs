//! The consumer's settings and its backoff schedule.

use std::time::Duration;

use super::anti_entropy::VerifySettings;
use super::shard::Shard;
use crate::replication_log::DEFAULT_SCAN_ROWS;

/// Steps (reads and decodes) run at once, over all grain types, by default.
pub const DEFAULT_WORKERS: usize = 16;

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
    /// Continuous anti-entropy (see `super::anti_entropy`); off when `None`.
    pub verify: Option<VerifySettings>,
    /// Most steps (reads and decodes) run at once, over every grain type
    /// (at least 1 is used).
    pub workers: usize,
    /// Rows per page of the catch-up scan (at least 1 is used).
    pub scan_rows: usize,
    /// Replicate only the grains of this shard; all of them when `None`.
    pub shard: Option<Shard>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            batch_limit: 100,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            grain_type_scan_interval: Duration::from_secs(10),
            verify: None,
            workers: DEFAULT_WORKERS,
            scan_rows: DEFAULT_SCAN_ROWS,
            shard: None,
        }
    }
}

/// The smallest delay ever used, so that a zero setting cannot make a hot loop.
const MIN_DELAY: Duration = Duration::from_millis(1);

impl ConsumerConfig {
    /// The delay after the `failures`-th consecutive failure (1-based), with
    /// full jitter: uniformly random between 1 ms and
    /// [`backoff_ceiling`](Self::backoff_ceiling), so grains that failed
    /// together (a log outage) do not retry together.
    pub fn backoff(&self, failures: u32) -> Duration {
        full_jitter(self.backoff_ceiling(failures))
    }

    /// The longest delay after the `failures`-th consecutive failure:
    /// `initial_backoff · 2^(failures−1)`, capped at `max_backoff`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
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

/// A delay drawn uniformly between 1 ms and `ceiling` ("full jitter").
pub fn full_jitter(ceiling: Duration) -> Duration {
    let ceiling = ceiling.max(MIN_DELAY);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    let floor = MIN_DELAY.as_micros() as u64;
    Duration::from_micros(fastrand::u64(floor..=micros.max(floor)))
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
        let ceilings: Vec<u128> = (1..=6)
            .map(|n| config.backoff_ceiling(n).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(config.backoff_ceiling(0), Duration::from_millis(100));
        assert_eq!(
            config.backoff_ceiling(u32::MAX),
            Duration::from_millis(1_000)
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_the_ceiling() {
        let config = ConsumerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
            ..ConsumerConfig::default()
        };
        let delays: Vec<Duration> = (0..1000).map(|_| config.backoff(5)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= MIN_DELAY && *d <= Duration::from_secs(1))
        );
        // Spread over the whole range, not bunched: each tenth of it is hit.
        let mut tenths = [0; 10];
        for d in &delays {
            tenths[((d.as_millis() as usize) / 100).min(9)] += 1;
        }
        assert!(tenths.iter().all(|&n| n > 30), "{tenths:?}");
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
        assert!(config.backoff_ceiling(1) >= MIN_DELAY);
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
