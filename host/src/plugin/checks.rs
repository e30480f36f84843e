//! Static checks of a plugin file before and after compilation: is it a
//! component at all, of our contract's major version, importing nothing but
//! logging, exporting the decoder.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::PluginError;
use crate::contract::{CONTRACT_MAJOR, CONTRACT_PACKAGE};

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What the header of a file says it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(if bytes.is_empty() {
            PluginError::Empty
        } else {
            PluginError::NotWasm
        });
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(PluginError::CoreModule),
        other => Err(PluginError::UnknownLayer(other)),
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

/// A plugin of another contract major.
fn contract_mismatch(version: &str) -> PluginError {
    PluginError::ContractMajor {
        found: version.to_string(),
    }
}

/// Checks a compiled component's imports and exports against the contract.
/// Returns its import names.
pub(crate) fn check_component(
    engine: &Engine,
    component: &Component,
) -> Result<Vec<String>, PluginError> {
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
        return Err(PluginError::ForbiddenImport(bad.clone()));
    }
    match exports
        .iter()
        .find_map(|name| parse_versioned(name, "decoder"))
    {
        Some((major, _)) if major == CONTRACT_MAJOR => Ok(imports),
        Some((_, version)) => Err(contract_mismatch(version)),
        None => Err(PluginError::NoDecoder { exports }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(check_header(b"\0asm\x0d\x00\x01\x00").is_ok());
        assert!(matches!(
            check_header(b"\0asm\x01\x00\x00\x00"),
            Err(PluginError::CoreModule)
        ));
        assert!(matches!(
            check_header(b"hello world"),
            Err(PluginError::NotWasm)
        ));
        assert!(matches!(check_header(b""), Err(PluginError::Empty)));
        assert!(matches!(check_header(b"\0asm"), Err(PluginError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x0e\x00\x01\x00"),
            Err(PluginError::UnknownLayer([0x0e, 0, 1, 0]))
        ));
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
}
