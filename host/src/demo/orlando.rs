//! The primary's side of the sample grains: their states, declared as the
//! Orlando grains declare them, and encoded with the real crates exactly as
//! Orlando does. Used by the demo producer, the tests and the benchmarks.

use serde::{Deserialize, Serialize};

/// Orlando's sample `Counter` grain state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    /// The count.
    pub count: i64,
}

/// The `Counter` state after it gained a field (schema version 2), as the
/// `counter-v2` sample plugin reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterStateV2 {
    /// The count.
    pub count: i64,
    /// Who changed it last.
    pub updated_by: Option<String>,
}

/// The `BankAccount` grain state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    /// Holder.
    pub owner: String,
    /// Balance.
    pub balance_cents: i64,
    /// Frozen flag.
    pub frozen: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Last transaction.
    pub last_transaction: Option<Transaction>,
}

/// A bank transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Id.
    pub id: u64,
    /// Amount.
    pub amount_cents: i64,
    /// Memo.
    pub memo: String,
}

/// The `UserProfile` grain state (JSON payloads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Visits.
    pub visits: u32,
    /// Roles.
    pub roles: Vec<String>,
}

/// Orlando's default payload encoding: bincode 2, `config::standard()`, via serde.
pub fn bincode<T: Serialize>(state: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(state, bincode::config::standard()).expect("bincode encode")
}

/// Orlando's alternative payload encoding.
pub fn json<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).expect("json encode")
}

/// A bank account with every field exercised.
pub fn sample_account(i: u64) -> AccountState {
    AccountState {
        owner: format!("Zoë \"Ω\" #{i}"),
        balance_cents: -1_234_567 - i as i64,
        frozen: i.is_multiple_of(2),
        tags: vec!["vip".into(), "日本".into()],
        last_transaction: Some(Transaction {
            id: u64::MAX - i,
            amount_cents: i64::MIN + 1,
            memo: "rent/déc".into(),
        }),
    }
}
