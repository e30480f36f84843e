//! The closed set of WebAssembly proposals a plugin may use.
//!
//! wasmtime enables many proposals by default (GC and function references
//! among them, whatever its cargo features say), and each one is compiler
//! and runtime code a hostile plugin can reach. The engine enables exactly
//! what Rust's `wasm32-unknown-unknown` target emits today, which is all our
//! SDK's plugins need, and disables every other proposal wasmparser knows,
//! so a plugin that uses one is refused when it is compiled, before
//! anything replicates. [`refused_proposal`] names the proposal for the
//! error line.

use wasmtime::WasmFeatures;

/// A proposal plugins may not use, and why.
#[derive(Debug, Clone, Copy)]
pub struct RefusedProposal {
    /// The proposal's name, as the WebAssembly proposals list spells it.
    pub name: &'static str,
    /// The wasmparser flags that make it up.
    flags: WasmFeatures,
    /// Why plugins may not use it.
    pub reason: &'static str,
}

/// The proposals a plugin may use: WebAssembly 1.0, the parts of 2.0 that
/// `rustc` emits for `wasm32-unknown-unknown` by default (mutable globals,
/// sign extension, non-trapping float-to-int, multi-value, bulk memory,
/// reference types), and the component model that wraps them.
pub const ALLOWED: &[(&str, WasmFeatures)] = &[
    ("floats", WasmFeatures::FLOATS),
    ("mutable-globals", WasmFeatures::MUTABLE_GLOBAL),
    ("sign-extension", WasmFeatures::SIGN_EXTENSION),
    (
        "nontrapping-float-to-int",
        WasmFeatures::SATURATING_FLOAT_TO_INT,
    ),
    ("multi-value", WasmFeatures::MULTI_VALUE),
    // Includes bulk-memory-opt (`memory.copy`, `memory.fill`).
    ("bulk-memory", WasmFeatures::BULK_MEMORY),
    // Includes call-indirect-overlong, the table index encoding LLVM uses.
    ("reference-types", WasmFeatures::REFERENCE_TYPES),
    ("component-model", WasmFeatures::COMPONENT_MODEL),
];

/// Every proposal the engine refuses, each with its reason; a proposal
/// comes before those that build on it (function references before GC), so
/// [`refused_proposal`] names the smallest one a plugin needs.
pub const REFUSED: &[RefusedProposal] = &[
    RefusedProposal {
        name: "function-references",
        flags: WasmFeatures::FUNCTION_REFERENCES.union(WasmFeatures::GC_TYPES),
        reason: "typed function references, the ground GC's type checks stand on; no SDK plugin emits it",
    },
    RefusedProposal {
        name: "gc",
        flags: WasmFeatures::GC
            .union(WasmFeatures::GC_TYPES)
            .union(WasmFeatures::FUNCTION_REFERENCES),
        reason: "a second heap and its runtime (GHSA-rc4p-x33f-vpr2 was here); no SDK plugin emits it",
    },
    RefusedProposal {
        name: "exception-handling",
        flags: WasmFeatures::EXCEPTIONS
            .union(WasmFeatures::LEGACY_EXCEPTIONS)
            .union(WasmFeatures::GC_TYPES),
        reason: "unwinding through host frames; Rust plugins abort on panic",
    },
    RefusedProposal {
        name: "threads",
        flags: WasmFeatures::THREADS.union(WasmFeatures::SHARED_EVERYTHING_THREADS),
        reason: "shared memory and atomics outlive a call; a decode is single-threaded",
    },
    RefusedProposal {
        name: "memory64",
        flags: WasmFeatures::MEMORY64,
        reason: "64-bit memories need guard regions the pool does not reserve",
    },
    RefusedProposal {
        name: "stack-switching",
        flags: WasmFeatures::STACK_SWITCHING
            .union(WasmFeatures::FUNCTION_REFERENCES)
            .union(WasmFeatures::EXCEPTIONS)
            .union(WasmFeatures::GC_TYPES),
        reason: "continuations are experimental in wasmtime",
    },
    RefusedProposal {
        name: "custom-page-sizes",
        flags: WasmFeatures::CUSTOM_PAGE_SIZES,
        reason: "experimental; changes how the memory limit is counted",
    },
    RefusedProposal {
        name: "wide-arithmetic",
        flags: WasmFeatures::WIDE_ARITHMETIC,
        reason: "not emitted by rustc; more compiler surface for nothing",
    },
    RefusedProposal {
        name: "tail-call",
        flags: WasmFeatures::TAIL_CALL,
        reason: "not emitted by rustc by default; more compiler surface for nothing",
    },
    RefusedProposal {
        name: "simd",
        flags: WasmFeatures::SIMD,
        reason: "not emitted by rustc by default (needs +simd128); more compiler surface for nothing",
    },
    RefusedProposal {
        name: "relaxed-simd",
        flags: WasmFeatures::RELAXED_SIMD.union(WasmFeatures::SIMD),
        reason: "results differ between machines, so one snapshot could decode two ways",
    },
    RefusedProposal {
        name: "multi-memory",
        flags: WasmFeatures::MULTI_MEMORY,
        reason: "the memory limit and the pool assume one memory per plugin",
    },
    RefusedProposal {
        name: "extended-const",
        flags: WasmFeatures::EXTENDED_CONST,
        reason: "not emitted by rustc by default; more compiler surface for nothing",
    },
    RefusedProposal {
        name: "component-model-async",
        flags: WasmFeatures::CM_ASYNC
            .union(WasmFeatures::CM_ASYNC_STACKFUL)
            .union(WasmFeatures::CM_MORE_ASYNC_BUILTINS)
            .union(WasmFeatures::CM_THREADING)
            .union(WasmFeatures::CM_ERROR_CONTEXT),
        reason: "the contract is synchronous: a decode is one call that returns",
    },
];

/// The union of [`ALLOWED`].
pub fn allowed() -> WasmFeatures {
    ALLOWED
        .iter()
        .fold(WasmFeatures::empty(), |all, (_, flags)| all.union(*flags))
}

/// Applies the closed set to `config`: every proposal wasmparser knows is
/// disabled, then exactly [`ALLOWED`] enabled.
pub(crate) fn apply(config: &mut wasmtime::Config) {
    config.wasm_features(WasmFeatures::all(), false);
    config.wasm_features(allowed(), true);
}

/// When `bytes` fail to validate under [`allowed`], the first refused
/// proposal that would make them valid; `None` when none does alone (the
/// file is broken, or uses several).
pub fn refused_proposal(bytes: &[u8]) -> Option<&'static RefusedProposal> {
    let valid = |features: WasmFeatures| {
        wasmparser::Validator::new_with_features(features)
            .validate_all(bytes)
            .is_ok()
    };
    if valid(allowed()) {
        return None;
    }
    REFUSED
        .iter()
        .find(|proposal| valid(allowed().union(proposal.flags)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refused_proposals_cover_everything_not_allowed() {
        let mut covered = allowed();
        for proposal in REFUSED {
            covered |= proposal.flags;
        }
        // Flags wasmparser knows that are neither allowed nor listed with a
        // reason: component-model details no plugin toolchain emits.
        let rest = WasmFeatures::all() & !covered;
        for (name, _) in rest.iter_names() {
            assert!(
                name.starts_with("CM")
                    || ["MEMORY_CONTROL", "CUSTOM_DESCRIPTORS", "COMPACT_IMPORTS"].contains(&name),
                "{name} is neither allowed nor refused with a reason"
            );
        }
        assert!(!allowed().contains(WasmFeatures::GC));
        assert!(!allowed().contains(WasmFeatures::FUNCTION_REFERENCES));
    }
}
