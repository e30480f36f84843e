//! Decodes the `BankAccount` grain: bincode payloads of `AccountState`.

use replica_guest::{DecodeError, Plugin, Snapshot};
use serde::{Deserialize, Serialize};

/// A bank account's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    /// Account holder.
    pub owner: String,
    /// Balance in cents; may be negative.
    pub balance_cents: i64,
    /// Whether the account is frozen.
    pub frozen: bool,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The most recent transaction, if any.
    pub last_transaction: Option<Transaction>,
}

/// One transaction on an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Transaction id.
    pub id: u64,
    /// Signed amount in cents.
    pub amount_cents: i64,
    /// Free-form memo.
    pub memo: String,
}

/// The `BankAccount` decoding plugin.
pub struct BankAccount;

impl Plugin for BankAccount {
    const GRAIN_TYPE: &'static str = "BankAccount";
    const SCHEMA_NAME: &'static str = "AccountState";
    const SCHEMA_VERSION: &'static str = "1";
    type State = AccountState;

    fn decode(snapshot: &Snapshot) -> Result<AccountState, DecodeError> {
        replica_guest::formats::bincode(&snapshot.payload)
    }
}

replica_guest::export_plugin!(BankAccount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_orlando_bincode_to_typed_value() {
        let state = AccountState {
            owner: "Zoë".into(),
            balance_cents: -1250,
            frozen: false,
            tags: vec!["vip".into()],
            last_transaction: Some(Transaction {
                id: u64::MAX,
                amount_cents: -50,
                memo: "coffee".into(),
            }),
        };
        let payload = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let snapshot = Snapshot {
            grain_type: "BankAccount".into(),
            grain_key: "acc-1".into(),
            sequence: 3,
            timestamp_millis: 1,
            source_cluster: "us-east".into(),
            payload,
        };
        assert_eq!(BankAccount::decode(&snapshot).unwrap(), state);
        let encoded = replica_guest::decode_to_state::<BankAccount>(&snapshot).unwrap();
        assert_eq!(encoded, replica_guest::encoding::to_bytes(&state).unwrap());
        assert_eq!(encoded[..2], [replica_guest::encoding::VERSION, 0x0C]);
    }
}
