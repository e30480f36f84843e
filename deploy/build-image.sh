#!/usr/bin/env bash
# Builds the container image of deploy/Containerfile from a static binary:
#
#   deploy/build-image.sh BINARY [TAG]     (TAG: default replica-host:latest)
#
# The build context is a temporary directory with the binary and
# deploy/container's passwd and group, nothing else.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
tag="${2:-replica-host:latest}"
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "$bin is not static; build it with deploy/build-static.sh" >&2
    exit 1
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/container/passwd" "$here/container/group" "$context/"
install -m 0555 "$bin" "$context/replica-host"
podman build -f "$here/Containerfile" -t "$tag" "$context"
