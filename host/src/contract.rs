//! Host-side bindings generated from the plugin contract
//! (`guest-sdk/wit/plugin.wit`, package `replica:plugin`).

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "plugin",
    // A snapshot handed to the guest borrows the host's strings and
    // payload: wasmtime copies them into the guest's memory, the only copy.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

pub use replica::plugin::types;

/// The contract version this host implements (the WIT package version).
pub const CONTRACT_VERSION: &str = "2.0.0";
/// The contract's major version; plugins of another major are refused.
pub const CONTRACT_MAJOR: u64 = 2;
/// The WIT package name, without version.
pub const CONTRACT_PACKAGE: &str = "replica:plugin";
