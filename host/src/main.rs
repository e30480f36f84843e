//! The `replica-host` command line: the library's `cli` (feature `tools`).

/// The binary's allocator: mimalloc, not the C library's malloc (the
/// library itself leaves the choice to its embedder).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    replica_host::cli::main()
}
