//! Plugins written straight in WebAssembly text against the contract, as a
//! hostile author could write them without our SDK or even Rust: a core
//! module in WAT that follows the canonical ABI of `replica:plugin@2.0.0`,
//! turned into a component by wit-component with the contract's WIT.
//!
//! [`WatPlugin`] is a working decoder (it rejects every payload, or returns
//! `{"count":1}`) with places to put extra declarations and a probe at the
//! start of `describe` or `decode`, so each hostile case differs from a
//! plugin that loads only by what it probes.

use std::path::Path;

/// A WAT plugin; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct WatPlugin {
    /// Imports, which the text format puts before every definition.
    pub imports: String,
    /// Extra module-level declarations (types, functions, tables, tags).
    pub decls: String,
    /// Instructions run at the start of `describe`.
    pub in_describe: String,
    /// Instructions run at the start of `decode`.
    pub in_decode: String,
    /// The memory declaration; default one of 17 pages, exported.
    pub memory: Option<String>,
    /// What `describe` says: grain type (default `Wat`), schema name.
    pub grain_type: Option<String>,
    /// Schema name (default `WatState`).
    pub schema_name: Option<String>,
    /// Whether `decode` returns `{"count":1}` (true) or rejects (false).
    pub decodes: bool,
}

/// Bytes as a WAT string literal (every byte escaped).
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// Little-endian i32s as a WAT string literal.
fn wat_i32s(values: &[u32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    wat_bytes(&bytes)
}

impl WatPlugin {
    /// The core module's text.
    pub fn wat(&self) -> String {
        let grain_type = self.grain_type.as_deref().unwrap_or("Wat");
        let schema = self.schema_name.as_deref().unwrap_or("WatState");
        // Data at fixed addresses: the strings, then describe's record.
        let strings: [&[u8]; 4] = [grain_type.as_bytes(), schema.as_bytes(), b"1", b"wat"];
        let mut at = 1024u32;
        let mut data = String::new();
        let mut record = Vec::new();
        for s in strings {
            data.push_str(&format!("(data (i32.const {at}) \"{}\")\n", wat_bytes(s)));
            record.extend([at, s.len() as u32]);
            at += (s.len() as u32).div_ceil(8) * 8 + 8;
        }
        // state-versions: a list of one string, "1" (the third string).
        let versions_at = at;
        data.push_str(&format!(
            "(data (i32.const {versions_at}) \"{}\")\n",
            wat_i32s(&[record[4], record[5]])
        ));
        record.extend([versions_at, 1]);
        let record_at = versions_at + 16;
        data.push_str(&format!(
            "(data (i32.const {record_at}) \"{}\")\n",
            wat_i32s(&record)
        ));
        // decode's answers: err(rejected, "wat says no") or ok([...]).
        let message_at = record_at + 64;
        let message = b"wat says no";
        data.push_str(&format!(
            "(data (i32.const {message_at}) \"{}\")\n",
            wat_bytes(message)
        ));
        let state = [1u8, 0x0C, 1, 5, b'c', b'o', b'u', b'n', b't', 0x41, 0];
        let state_at = message_at + 32;
        data.push_str(&format!(
            "(data (i32.const {state_at}) \"{}\")\n",
            wat_bytes(&state)
        ));
        let result_at = state_at + 32;
        let result: Vec<u32> = if self.decodes {
            vec![0, state_at, state.len() as u32, 0]
        } else {
            vec![1, 2, message_at, message.len() as u32]
        };
        data.push_str(&format!(
            "(data (i32.const {result_at}) \"{}\")\n",
            wat_i32s(&result)
        ));
        let memory = self
            .memory
            .clone()
            .unwrap_or_else(|| "(memory (export \"memory\") 17)".into());
        format!(
            r#"(module
  {imports}
  {memory}
  (global $bump (mut i32) (i32.const 65536))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
    (global.set $bump (i32.add (local.get $at) (local.get 3)))
    (local.get $at))
  (func (export "replica:plugin/decoder@2.0.0#describe") (result i32)
    {in_describe}
    (i32.const {record_at}))
  (func (export "replica:plugin/decoder@2.0.0#decode")
    (param i32 i32 i32 i32 i64 i64 i32 i32 i32 i32) (result i32)
    {in_decode}
    (i32.const {result_at}))
  {decls}
  {data}
)"#,
            imports = self.imports,
            in_describe = self.in_describe,
            in_decode = self.in_decode,
            decls = self.decls,
        )
    }

    /// The component's bytes.
    pub fn component(&self) -> Vec<u8> {
        component_from_wat(&self.wat())
    }

    /// Writes the component to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.component()).expect("write the WAT plugin");
    }
}

/// A component of the contract's world from a core module in WAT.
pub fn component_from_wat(text: &str) -> Vec<u8> {
    let mut module = wat::parse_str(text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{text}"));
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_path(crate::workspace().join("guest-sdk/wit"))
        .expect("the contract's WIT")
        .0;
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("the plugin world");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed the contract");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .unwrap_or_else(|e| panic!("componentize: {e:#}\n{text}"))
}
