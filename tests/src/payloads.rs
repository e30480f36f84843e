//! The payloads the tests write, encoded exactly as Orlando encodes them.

use crate::orlando::{self, CounterState, CounterStateV2};

/// A `Counter` grain's state (state v1, bincode).
pub fn counter(count: i64) -> Vec<u8> {
    orlando::bincode(&CounterState { count })
}

/// A `Counter` grain's state in v2, which names who updated it last.
pub fn counter_v2(count: i64, updated_by: Option<&str>) -> Vec<u8> {
    orlando::bincode(&CounterStateV2 {
        count,
        updated_by: updated_by.map(Into::into),
    })
}
