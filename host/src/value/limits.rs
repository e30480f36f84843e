//! Bounds on what a plugin may return for one snapshot.

/// Bounds on one encoded state, checked by [`super::State::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most values (scalars and containers alike) in one state.
    pub max_nodes: usize,
    /// Deepest nesting (the root alone has depth 1); never more than
    /// [`OutputLimits::DEPTH_CAP`].
    pub max_depth: usize,
    /// Most bytes of the encoded state. The most wasmtime copies out of the
    /// guest in one transfer (its hostcall fuel) is this plus a margin for
    /// error messages and log lines (`PluginLimits::hostcall_fuel`).
    pub max_bytes: usize,
    /// Most bytes of JSON the state may render as (an upper bound computed
    /// when it is validated). Guards against amplification: names are
    /// interned, so a small state can refer to a long name millions of
    /// times and render as gigabytes on every read.
    pub max_rendered_bytes: u64,
}

impl OutputLimits {
    /// The deepest nesting any limit allows: rendering walks the value
    /// recursively, so this bounds the host's stack use.
    pub const DEPTH_CAP: usize = 512;

    /// [`OutputLimits::max_rendered_bytes`] when not configured: this many
    /// times `max_bytes`. An honest state renders at most a few times its
    /// encoded size (strings of control characters six times).
    pub const RENDERED_PER_ENCODED: u64 = 4;

    /// The default rendered-size limit for `max_bytes` of encoded state.
    pub fn default_rendered(max_bytes: usize) -> u64 {
        (max_bytes as u64).saturating_mul(Self::RENDERED_PER_ENCODED)
    }

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
            max_rendered_bytes: Self::default_rendered(32 << 20),
        }
    }
}
