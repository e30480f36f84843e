#!/usr/bin/env bash
# Builds a static x86_64-unknown-linux-musl `replica-host` (profile `deploy`:
# release, symbols stripped) and prints its path last.
#
# Needs the Rust target (`rustup target add x86_64-unknown-linux-musl`) and
# a C compiler for musl (Debian: `apt-get install musl-tools`), for the C in
# ring and SQLite. Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "musl-gcc not found: apt-get install musl-tools" >&2
    exit 1
fi
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --locked --profile deploy --target "$target" -p replica-host --bin replica-host >&2
bin="${CARGO_TARGET_DIR:-target}/$target/deploy/replica-host"
# Static: no program interpreter, no shared libraries.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "$bin is dynamically linked" >&2
    exit 1
fi
echo "$bin"
