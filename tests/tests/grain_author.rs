//! The grain author's path from the README: an empty directory, a new crate
//! depending on the SDK, `replica-host plugin build`, `replica-host plugin decode`.

use replica_e2e::{run_host, target_dir, workspace};

#[test]
fn from_an_empty_directory_to_a_decoded_payload() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("thermostat");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let sdk = workspace().join("guest-sdk");
    // The manifest and code as the README shows them.
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            r#"[package]
name = "thermostat"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
replica-guest = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}

[workspace]
"#,
            sdk.display()
        ),
    )
    .unwrap();
    std::fs::write(
        krate.join("src/lib.rs"),
        r#"
use replica_guest::{DecodeError, Plugin, Snapshot};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct ThermostatState {
    pub celsius: f64,
    pub mode: Mode,
}

#[derive(Serialize, Deserialize)]
pub enum Mode { Off, Heat { target: f32 } }

pub struct Thermostat;

impl Plugin for Thermostat {
    const GRAIN_TYPE: &'static str = "Thermostat";
    const SCHEMA_NAME: &'static str = "ThermostatState";
    const SCHEMA_VERSION: &'static str = "1";
    type State = ThermostatState;

    fn decode(snapshot: &Snapshot) -> Result<ThermostatState, DecodeError> {
        let state: ThermostatState = replica_guest::formats::json(&snapshot.payload)?;
        if state.celsius < -273.15 {
            return Err(DecodeError::rejected("below absolute zero"));
        }
        Ok(state)
    }
}

replica_guest::export_plugin!(Thermostat);
"#,
    )
    .unwrap();

    // Share the workspace's build cache so the SDK's dependencies compile once.
    let target = target_dir().join("grain-author");
    let target = target.to_str().unwrap();
    let (code, stdout, stderr) = run_host(
        &["plugin", "build", krate.to_str().unwrap()],
        &[("CARGO_TARGET_DIR", target)],
    );
    assert_eq!(code, 0, "build failed:\n{stderr}");
    let wasm = stdout
        .lines()
        .last()
        .expect("the component path is the last line")
        .to_string();
    assert!(std::path::Path::new(&wasm).is_file(), "{wasm}");

    let payload = dir.path().join("p.json");
    std::fs::write(
        &payload,
        r#"{"celsius":21.5,"mode":{"Heat":{"target":22.5}}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "decode",
            &wasm,
            "--payload",
            payload.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim_end(),
        r#"{"celsius":21.5,"mode":{"Heat":{"target":22.5}}}"#
    );

    std::fs::write(&payload, r#"{"celsius":-300.0,"mode":"Off"}"#).unwrap();
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "decode",
            &wasm,
            "--payload",
            payload.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("rejected") && stderr.contains("below absolute zero"),
        "{stderr}"
    );
}
