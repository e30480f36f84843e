//! How u64 sequences map onto the log's signed 64-bit `sequence` column:
//! values 0..=i64::MAX are stored as they are; nothing else is valid.

use super::LogError;

/// The stored form of a sequence to append; above `i64::MAX` it cannot be
/// stored without turning negative, so it is refused.
pub(crate) fn to_stored(sequence: u64) -> Result<i64, LogError> {
    i64::try_from(sequence).map_err(|e| LogError::Backend {
        message: format!(
            "sequence {sequence} does not fit the log's signed 64-bit column (max {})",
            i64::MAX
        ),
        source: Some(e.into()),
    })
}

/// A stored sequence as a `u64`, if it is a valid one (not negative).
pub(crate) fn from_stored(stored: i64) -> Option<u64> {
    u64::try_from(stored).ok()
}

/// The stored bound for `sequence > after`: no valid row lies above `i64::MAX`.
pub(crate) fn after_bound(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

/// The highest stored sequence that `sequence < before` keeps, or `None`
/// when nothing is below `before`.
pub(crate) fn last_below(before: u64) -> Option<i64> {
    before.checked_sub(1).map(after_bound)
}

/// A row limit as SQL takes it.
pub(crate) fn limit_bound(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Stored `(grain_key, MAX(sequence))` rows as heads, leaving out sequences
/// that are not valid `u64`s.
pub(crate) fn to_heads(heads: Vec<(String, i64)>) -> Vec<super::GrainHead> {
    heads
        .into_iter()
        .filter_map(|(grain_key, head)| {
            from_stored(head).map(|latest_sequence| super::GrainHead {
                grain_key,
                latest_sequence,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_clamp_at_i64_max() {
        assert_eq!(to_stored(i64::MAX as u64).unwrap(), i64::MAX);
        assert!(to_stored(i64::MAX as u64 + 1).is_err());
        assert_eq!(from_stored(-1), None);
        assert_eq!(after_bound(u64::MAX), i64::MAX);
        assert_eq!(last_below(0), None);
        assert_eq!(last_below(1), Some(0));
        assert_eq!(last_below(u64::MAX), Some(i64::MAX));
    }
}
