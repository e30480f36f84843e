//! The `replica-host` command line: the library's `cli` (feature `tools`).

fn main() -> std::process::ExitCode {
    replica_host::cli::main()
}
