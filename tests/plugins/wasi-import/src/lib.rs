//! A test-only plugin that imports `wasi:random`, as a plugin that reached
//! for randomness would. The host must refuse it at load, naming the import.

use replica_guest::{DecodeError, Plugin, Snapshot};

wit_bindgen::generate!({
    inline: r#"
        package wasi:random@0.2.0;
        interface random {
            get-random-u64: func() -> u64;
        }
        world imports {
            import random;
        }
    "#,
    world: "wasi:random/imports",
    type_section_suffix: "wasi-random",
});

/// Decodes to a random number.
pub struct WasiImport;

impl Plugin for WasiImport {
    const GRAIN_TYPE: &'static str = "Counter";
    const SCHEMA_NAME: &'static str = "Random";
    const SCHEMA_VERSION: &'static str = "1";
    type State = u64;

    fn decode(_snapshot: &Snapshot) -> Result<u64, DecodeError> {
        Ok(wasi::random::random::get_random_u64())
    }
}

replica_guest::export_plugin!(WasiImport);
