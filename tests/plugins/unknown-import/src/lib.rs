//! A test-only plugin that imports `replica:plugin/secrets@2.0.0`, an
//! interface in the contract's own package that the host does not offer
//! (not WASI: an unknown function). The host must refuse it at load,
//! naming the import.

use replica_guest::{DecodeError, Plugin, Snapshot};

wit_bindgen::generate!({
    inline: r#"
        package replica:plugin@2.0.0;
        interface secrets {
            read-secret: func(name: string) -> string;
        }
        world imports {
            import secrets;
        }
    "#,
    world: "replica:plugin/imports",
    type_section_suffix: "secrets",
});

/// Decodes to a secret the host never hands out.
pub struct UnknownImport;

impl Plugin for UnknownImport {
    const GRAIN_TYPE: &'static str = "Counter";
    const SCHEMA_NAME: &'static str = "Secret";
    const SCHEMA_VERSION: &'static str = "1";
    type State = String;

    fn decode(snapshot: &Snapshot) -> Result<String, DecodeError> {
        Ok(replica::plugin::secrets::read_secret(&snapshot.grain_key))
    }
}

replica_guest::export_plugin!(UnknownImport);
