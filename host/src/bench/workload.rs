//! The payloads the benchmarks decode: the sample grains' states, encoded
//! exactly as Orlando encodes them, grown to a target size.

use crate::demo::orlando::{self, AccountState, CounterState, UserProfile};

/// A payload size the decode benchmark covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The state's natural size (Counter: a few bytes).
    Natural,
    /// About this many bytes.
    About(usize),
}

impl Size {
    /// `~100 B`, `~1 KiB`, …
    pub fn label(self) -> String {
        match self {
            Size::Natural => "natural".into(),
            Size::About(n) if n >= 1024 => format!("~{} KiB", n / 1024),
            Size::About(n) => format!("~{n} B"),
        }
    }
}

/// A tag or role of the grown states (24 bytes).
fn filler(n: usize) -> String {
    format!("tag-{n:06}-abcdefghijklm")
}

/// The `i`-th `CounterState`.
pub fn counter_state(i: i64) -> CounterState {
    CounterState {
        count: -1_234_567 - i,
    }
}

/// A `BankAccount` state whose bincode payload is at least `target` bytes:
/// the demo's sample account with tags added.
pub fn account_state(i: u64, target: usize) -> AccountState {
    let mut state = orlando::sample_account(i);
    while orlando::bincode(&state).len() < target {
        let n = state.tags.len();
        state.tags.push(filler(n));
    }
    state
}

/// A `UserProfile` state whose JSON payload is at least `target` bytes.
pub fn user_state(i: u64, target: usize) -> UserProfile {
    let mut state = UserProfile {
        name: format!("User {i}"),
        email: format!("user{i}@example.com"),
        visits: i as u32,
        roles: vec!["admin".into()],
    };
    while orlando::json(&state).len() < target {
        let n = state.roles.len();
        state.roles.push(filler(n));
    }
    state
}
