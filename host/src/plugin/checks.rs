//! Static checks of a plugin file before and after compilation: is it a
//! component at all, of our contract's major version, importing nothing but
//! logging, exporting the decoder.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::contract::{CONTRACT_MAJOR, CONTRACT_PACKAGE, CONTRACT_VERSION};

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What the header of a file says it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(if bytes.is_empty() {
            "the file is empty, not a WebAssembly component".to_string()
        } else {
            "not a WebAssembly file (no \\0asm header)".to_string()
        });
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "a core WebAssembly module, not a component: build it with `replica-host plugin build`"
                .to_string(),
        ),
        _ => Err(format!(
            "unknown WebAssembly version/layer {:02x?}",
            &bytes[4..8]
        )),
    }
}

/// The interfaces a plugin may import (any version of our major).
fn import_allowed(name: &str) -> bool {
    ["logging", "types"]
        .iter()
        .any(|iface| parse_versioned(name, iface).is_some_and(|(major, _)| major == CONTRACT_MAJOR))
}

/// Splits `replica:plugin/IFACE@X.Y.Z` into (major, full version).
fn parse_versioned<'a>(name: &'a str, iface: &str) -> Option<(u64, &'a str)> {
    let rest = name
        .strip_prefix(CONTRACT_PACKAGE)?
        .strip_prefix('/')?
        .strip_prefix(iface)?;
    let version = rest.strip_prefix('@')?;
    let major = version.split('.').next()?.parse().ok()?;
    Some((major, version))
}

/// The version of a `replica:plugin/IFACE@X.Y.Z` name whose major is not ours.
fn other_contract_major(name: &str) -> Option<&str> {
    let (_, versioned) = name
        .strip_prefix(CONTRACT_PACKAGE)?
        .strip_prefix('/')?
        .split_once('@')?;
    let major: u64 = versioned.split('.').next()?.parse().ok()?;
    (major != CONTRACT_MAJOR).then_some(versioned)
}

/// The one line for a plugin of another contract major: what to do about it.
fn contract_mismatch(version: &str) -> String {
    let older = version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u64>().ok())
        .is_some_and(|major| major < CONTRACT_MAJOR);
    let advice = if older {
        "rebuild it against the current replica-guest SDK (`replica-host plugin build`)"
    } else {
        "it needs a newer replica-host"
    };
    format!(
        "built against contract {CONTRACT_PACKAGE}@{version}; this host implements {CONTRACT_VERSION} (major {CONTRACT_MAJOR}): {advice}"
    )
}

/// Checks a compiled component's imports and exports against the contract.
/// Returns its import names.
pub(crate) fn check_component(
    engine: &Engine,
    component: &Component,
) -> Result<Vec<String>, String> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    // Another major version of the contract is the root cause of every other
    // mismatch such a plugin has (its logging import too): say so first.
    if let Some(version) = imports
        .iter()
        .chain(&exports)
        .find_map(|name| other_contract_major(name))
    {
        return Err(contract_mismatch(version));
    }
    if let Some(bad) = imports.iter().find(|name| !import_allowed(name)) {
        return Err(format!(
            "imports `{bad}`, but plugins may only import {CONTRACT_PACKAGE}/logging@{CONTRACT_MAJOR}.x (no WASI, clocks, randomness, files or network)"
        ));
    }
    match exports
        .iter()
        .find_map(|name| parse_versioned(name, "decoder"))
    {
        Some((major, _)) if major == CONTRACT_MAJOR => Ok(imports),
        Some((_, version)) => Err(contract_mismatch(version)),
        None => Err(format!(
            "does not export {CONTRACT_PACKAGE}/decoder@{CONTRACT_MAJOR}.x (exports: {})",
            if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(check_header(b"\0asm\x0d\x00\x01\x00").is_ok());
        assert!(
            check_header(b"\0asm\x01\x00\x00\x00")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(check_header(b"").unwrap_err().contains("empty"));
        assert!(check_header(b"\0asm").is_err());
    }

    #[test]
    fn import_names() {
        assert!(import_allowed("replica:plugin/logging@2.0.0"));
        assert!(import_allowed("replica:plugin/logging@2.3.0"));
        assert!(!import_allowed("replica:plugin/logging@1.0.0"));
        assert!(!import_allowed("wasi:random/random@0.2.0"));
        assert!(!import_allowed("replica:plugin/loggingx@2.0.0"));
        assert!(!import_allowed("replica:plugin/secrets@2.0.0"));
    }

    #[test]
    fn other_contract_majors() {
        assert_eq!(
            other_contract_major("replica:plugin/logging@1.0.0"),
            Some("1.0.0")
        );
        assert_eq!(
            other_contract_major("replica:plugin/decoder@3.0.1"),
            Some("3.0.1")
        );
        assert_eq!(other_contract_major("replica:plugin/decoder@2.4.0"), None);
        assert_eq!(other_contract_major("wasi:random/random@1.0.0"), None);
        assert_eq!(other_contract_major("replica:pluginx/decoder@1.0.0"), None);
    }

    #[test]
    fn a_plugin_of_another_major_is_told_what_to_do() {
        assert!(contract_mismatch("1.0.0").ends_with(
            "this host implements 2.0.0 (major 2): rebuild it against the current replica-guest SDK (`replica-host plugin build`)"
        ));
        assert!(contract_mismatch("3.1.0").ends_with("it needs a newer replica-host"));
    }
}
