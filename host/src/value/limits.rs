//! Bounds on what a plugin may return for one snapshot.

/// Bounds on one encoded state, checked by [`super::State::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most values (scalars and containers alike) in one state.
    pub max_nodes: usize,
    /// Deepest nesting (the root alone has depth 1); never more than
    /// [`OutputLimits::DEPTH_CAP`].
    pub max_depth: usize,
    /// Most bytes of the encoded state. Also the most the engine copies out
    /// of the plugin in one transfer (wasmtime's hostcall fuel).
    pub max_bytes: usize,
}

impl OutputLimits {
    /// The deepest nesting any limit allows: rendering walks the value
    /// recursively, so this bounds the host's stack use.
    pub const DEPTH_CAP: usize = 512;

    /// `max_depth`, capped at [`OutputLimits::DEPTH_CAP`].
    pub fn depth(&self) -> usize {
        self.max_depth.min(Self::DEPTH_CAP)
    }
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_nodes: 1_000_000,
            max_depth: 128,
            max_bytes: 32 << 20,
        }
    }
}
