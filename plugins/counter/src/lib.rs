//! Decodes Orlando's sample `Counter` grain: bincode payloads of `CounterState`.

use replica_guest::{DecodeError, Plugin, Snapshot};
use serde::{Deserialize, Serialize};

/// Orlando's `Counter` grain state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    /// The counter's value.
    pub count: i64,
}

/// The `Counter` decoding plugin.
pub struct Counter;

impl Plugin for Counter {
    const GRAIN_TYPE: &'static str = "Counter";
    const SCHEMA_NAME: &'static str = "CounterState";
    const SCHEMA_VERSION: &'static str = "1";
    type State = CounterState;

    fn decode(snapshot: &Snapshot) -> Result<CounterState, DecodeError> {
        replica_guest::formats::bincode(&snapshot.payload)
    }
}

replica_guest::export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(payload: Vec<u8>) -> Snapshot {
        Snapshot {
            grain_type: "Counter".into(),
            grain_key: "c-1".into(),
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: "us-east".into(),
            payload,
        }
    }

    #[test]
    fn decodes_orlando_bincode() {
        let state = CounterState { count: -42 };
        let payload = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        assert_eq!(Counter::decode(&snapshot(payload)).unwrap(), state);
    }

    #[test]
    fn empty_payload_is_malformed() {
        let err = Counter::decode(&snapshot(vec![])).unwrap_err();
        assert_eq!(err.kind, replica_guest::ErrorKind::MalformedPayload);
    }
}
