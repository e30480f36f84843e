//! Bindings generated from the contract in `wit/plugin.wit`.
//!
//! Grain authors never touch these directly; [`crate::export_plugin!`] wires
//! a [`crate::Plugin`] to them.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "__export_plugin_world",
    default_bindings_module: "::replica_guest::bindings",
});
