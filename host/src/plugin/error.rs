//! Errors of loading plugins. (The errors of calling one are the
//! consumer's and the runtime's common language: [`crate::decode`].)
//!
//! Each error's `Display` is the whole one line an operator reads, cause
//! included; `source()` hands programs the typed cause (a wasmtime error, an
//! I/O error) to inspect, not to print again.

use crate::contract::{CONTRACT_MAJOR, CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::decode::CallError;

/// Why a plugin file could not be loaded: the file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct LoadError {
    /// The plugin file.
    pub path: String,
    /// What is wrong with it.
    #[source]
    pub error: PluginError,
}

/// What is wrong with a plugin's bytes, or why they cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// The file is empty.
    #[error("the file is empty, not a WebAssembly component")]
    Empty,
    /// The file does not start with the WebAssembly magic number.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "a core WebAssembly module, not a component: build it with `replica-host plugin build`"
    )]
    CoreModule,
    /// A WebAssembly header of a version or layer we do not know.
    #[error("unknown WebAssembly version/layer {0:02x?}")]
    UnknownLayer([u8; 4]),
    /// It uses a WebAssembly proposal plugins may not use.
    #[error(
        "uses the WebAssembly proposal `{}`, which plugins may not use ({}); build it for wasm32-unknown-unknown without extra target features",
        .0.name, .0.reason
    )]
    RefusedProposal(&'static super::features::RefusedProposal),
    /// wasmtime refused to compile it (or to load its precompiled code).
    #[error("not a valid component: {}", one_line(.0))]
    Invalid(#[source] wasmtime::Error),
    /// Built against another major version of the contract.
    #[error(
        "built against contract {CONTRACT_PACKAGE}@{found}; this host implements {CONTRACT_VERSION} (major {CONTRACT_MAJOR}): {}",
        contract_advice(found)
    )]
    ContractMajor {
        /// The contract version the plugin was built against.
        found: String,
    },
    /// Imports something plugins may not (WASI, ...).
    #[error(
        "imports `{0}`, but plugins may only import {CONTRACT_PACKAGE}/logging@{CONTRACT_MAJOR}.x (no WASI, clocks, randomness, files or network)"
    )]
    ForbiddenImport(String),
    /// Does not export the decoder interface.
    #[error(
        "does not export {CONTRACT_PACKAGE}/decoder@{CONTRACT_MAJOR}.x (exports: {})",
        if .exports.is_empty() { "none".to_string() } else { .exports.join(", ") }
    )]
    NoDecoder {
        /// What it exports instead.
        exports: Vec<String>,
    },
    /// Its imports cannot be satisfied by the host's linker.
    #[error("cannot be linked: {}", one_line(.0))]
    Link(#[source] wasmtime::Error),
    /// Its exports do not have the contract's types.
    #[error("does not match the contract: {}", one_line(.0))]
    Contract(#[source] wasmtime::Error),
    /// Its `describe` call failed.
    #[error("describe failed: {}", .0.message)]
    Describe(#[source] Box<CallError>),
}

/// What to do about a plugin of another contract major.
fn contract_advice(found: &str) -> &'static str {
    let older = found
        .split('.')
        .next()
        .and_then(|major| major.parse::<u64>().ok())
        .is_some_and(|major| major < CONTRACT_MAJOR);
    if older {
        "rebuild it against the current replica-guest SDK (`replica-host plugin build`)"
    } else {
        "it needs a newer replica-host"
    }
}

/// An error and its causes (and, for a call, the guest's backtrace, which
/// names guest functions) on one line, escaped: a plugin controls the text.
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    crate::text::escape(&format!("{err:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_of_another_major_is_told_what_to_do() {
        let older = PluginError::ContractMajor {
            found: "1.0.0".into(),
        };
        assert!(older.to_string().ends_with(
            "this host implements 2.0.0 (major 2): rebuild it against the current replica-guest SDK (`replica-host plugin build`)"
        ));
        let newer = PluginError::ContractMajor {
            found: "3.1.0".into(),
        };
        assert!(newer.to_string().ends_with("it needs a newer replica-host"));
    }

    #[test]
    fn the_cause_is_kept_for_programs() {
        use std::error::Error;
        let err = LoadError {
            path: "p.wasm".into(),
            error: PluginError::Read(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let source = err.source().expect("the plugin error");
        let io = source
            .source()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .starts_with("p.wasm: cannot read the file: ")
        );
    }
}
