#!/usr/bin/env bash
# Smoke test of a built `replica-host` binary, as an operator would run it:
# a Counter plugin and an SQLite log in Orlando's format in a temporary
# directory, `replica-host run` on them, one replica read over HTTP, then
# SIGTERM and exit status 0.
#
#   deploy/smoke-test.sh BINARY PLUGIN.wasm
#   deploy/smoke-test.sh --image IMAGE PLUGIN.wasm [PODMAN_RUN_OPTION...]
#
# PLUGIN.wasm: the Counter sample (`replica-host plugin build plugins/counter`).
# With --image, the same runs in a container of IMAGE (podman, host network,
# the directory mounted at /etc/replica-host, the plugin at /plugins), with
# any extra `podman run` options (e.g. --ulimit nofile=1024:1024);
# PODMAN is the podman command (default `podman`; e.g. `podman --runtime runc`).
# Needs python3 (to write the SQLite log) and curl.
set -euo pipefail
image=
if [ "$1" = --image ]; then
    image="$2"
    shift
else
    bin=$(realpath "$1")
fi
plugin=$(realpath "$2")
shift 2
dir=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

mkdir "$dir/plugins"
cp "$plugin" "$dir/plugins/counter.wasm"
# Orlando's table, one FullState of Counter/c-1 with count 7: bincode 2
# (varint, zigzag) encodes 7 as the one byte 0x0e.
python3 - "$dir/replication.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.execute("""CREATE TABLE replication_log (
    grain_type TEXT NOT NULL, grain_key TEXT NOT NULL, sequence INTEGER NOT NULL,
    timestamp_millis INTEGER NOT NULL, source_cluster TEXT NOT NULL,
    entry_type INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence))""")
db.execute("INSERT INTO replication_log VALUES ('Counter', 'c-1', 1, ?, 'smoke', 0, x'0e')",
           (int(time.time() * 1000),))
db.commit()
PY
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/host.toml" <<TOML
cluster_id = "smoke"

[log]
url = "sqlite://replication.db"

[http]
listen = "127.0.0.1:$port"

[[plugin]]
grain_type = "Counter"
path = "${image:+/}plugins/counter.wasm"
TOML

if [ -n "$image" ]; then
    # The image runs as uid 65532: it reads the config and plugin, and the
    # SQLite reader may create the log's -wal/-shm files beside it.
    chmod 0755 "$dir"
    chown -R 65532:65532 "$dir" 2>/dev/null || chmod -R a+rwX "$dir"
    # shellcheck disable=SC2086 # PODMAN is a command with its options
    ${PODMAN:-podman} run --rm --network host \
        -v "$dir:/etc/replica-host" -v "$dir/plugins:/plugins:ro" \
        "$@" "$image" 2> "$dir/stderr" &
else
    REPLICA_CONFIG="$dir/host.toml" "$bin" run 2> "$dir/stderr" &
fi
pid=$!
for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
replica=$(curl -fsS "http://127.0.0.1:$port/v1/replicas/Counter/c-1")
echo "$replica"
case "$replica" in
    *'"state":{"count":7}'*) ;;
    *) echo "smoke test: unexpected replica" >&2; cat "$dir/stderr" >&2; exit 1 ;;
esac
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
if [ "$status" -ne 0 ]; then
    echo "smoke test: exit status $status after SIGTERM" >&2
    cat "$dir/stderr" >&2
    exit 1
fi
echo "smoke test passed${image:+ in a container of $image}: replica read, exit status 0 after SIGTERM"
