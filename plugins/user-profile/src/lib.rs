//! Decodes the `UserProfile` grain: JSON payloads of `UserProfile`.

use replica_guest::{DecodeError, Plugin, Snapshot};
use serde::{Deserialize, Serialize};

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// Number of visits.
    pub visits: u32,
    /// Granted roles.
    pub roles: Vec<String>,
}

/// The `UserProfile` decoding plugin.
pub struct UserProfilePlugin;

impl Plugin for UserProfilePlugin {
    const GRAIN_TYPE: &'static str = "UserProfile";
    const SCHEMA_NAME: &'static str = "UserProfile";
    const SCHEMA_VERSION: &'static str = "1";
    type State = UserProfile;

    fn decode(snapshot: &Snapshot) -> Result<UserProfile, DecodeError> {
        replica_guest::formats::json(&snapshot.payload)
    }
}

replica_guest::export_plugin!(UserProfilePlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_orlando_json() {
        let state = UserProfile {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            visits: 7,
            roles: vec!["admin".into()],
        };
        let snapshot = Snapshot {
            grain_type: "UserProfile".into(),
            grain_key: "u-1".into(),
            sequence: 1,
            timestamp_millis: 1,
            source_cluster: "us-east".into(),
            payload: serde_json::to_vec(&state).unwrap(),
        };
        assert_eq!(UserProfilePlugin::decode(&snapshot).unwrap(), state);
    }
}
