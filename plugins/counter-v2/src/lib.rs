//! Decodes Orlando's sample `Counter` grain after its state gained a field:
//! bincode payloads of `CounterState` version 2, and of version 1 (the
//! `counter` plugin's), upcast to version 2.

use replica_guest::versions::Versions;
use replica_guest::{DecodeError, Plugin, Snapshot, formats};
use serde::{Deserialize, Serialize};

/// Version 1 of the state, as the `counter` plugin reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterStateV1 {
    /// The counter's value.
    pub count: i64,
}

/// Orlando's `Counter` grain state, version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    /// The counter's value.
    pub count: i64,
    /// Who changed it last; `None` in a snapshot written before version 2.
    pub updated_by: Option<String>,
}

impl From<CounterStateV1> for CounterState {
    fn from(v1: CounterStateV1) -> Self {
        CounterState {
            count: v1.count,
            updated_by: None,
        }
    }
}

/// Every layout this plugin reads, newest first.
pub const VERSIONS: Versions<CounterState, 2> = Versions::new([
    ("2", formats::bincode::<CounterState>),
    ("1", |p| {
        formats::bincode::<CounterStateV1>(p).map(Into::into)
    }),
]);

/// The `Counter` decoding plugin, state version 2.
pub struct Counter;

impl Plugin for Counter {
    const GRAIN_TYPE: &'static str = "Counter";
    const SCHEMA_NAME: &'static str = "CounterState";
    const SCHEMA_VERSION: &'static str = VERSIONS.current();
    const STATE_VERSIONS: &'static [&'static str] = &VERSIONS.names();
    type State = CounterState;

    fn decode(snapshot: &Snapshot) -> Result<CounterState, DecodeError> {
        VERSIONS.decode(&snapshot.payload)
    }
}

replica_guest::export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use super::*;

    fn bin<T: Serialize>(state: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap()
    }

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

    fn v2() -> CounterState {
        CounterState {
            count: -42,
            updated_by: Some("ops".into()),
        }
    }

    #[test]
    fn decodes_both_versions_and_upcasts_version_1() {
        assert_eq!(Counter::decode(&snapshot(bin(&v2()))).unwrap(), v2());
        let v1 = Counter::decode(&snapshot(bin(&CounterStateV1 { count: 7 }))).unwrap();
        assert_eq!(
            v1,
            CounterState {
                count: 7,
                updated_by: None
            }
        );
        assert_eq!(replica_guest::state_versions::<Counter>(), ["2", "1"]);
        assert_eq!(Counter::SCHEMA_VERSION, "2");
    }

    #[test]
    fn the_two_layouts_are_unambiguous() {
        VERSIONS.assert_unambiguous(&[
            ("2", bin(&v2())),
            (
                "2",
                bin(&CounterState {
                    count: 0,
                    updated_by: None,
                }),
            ),
            ("1", bin(&CounterStateV1 { count: 7 })),
            ("1", bin(&CounterStateV1 { count: i64::MIN })),
        ]);
    }

    #[test]
    fn a_payload_of_neither_version_names_both() {
        let err = Counter::decode(&snapshot(vec![])).unwrap_err();
        assert_eq!(err.kind, replica_guest::ErrorKind::MalformedPayload);
        assert!(err.message.contains("version 2: ") && err.message.contains("; version 1: "));
    }
}
