#!/usr/bin/env bash
# Prepares this machine to build and run the project image with podman, as measured in
# ../shared/PLATFORM-NOTES.md ("Containers for real"). Idempotent: each step is skipped when done.
#   1. podman, runc and debootstrap from Debian (no Docker daemon is needed).
#   2. runc instead of crun (the kernel mounts cgroup v1 in hybrid mode, which crun refuses), and no
#      default ulimits (runc cannot raise RLIMIT_NOFILE/NPROC above the VM's hard limits).
#   3. A Debian bookworm minbase image, debootstrapped and imported as $BASE_IMAGE: no registry is
#      reachable here, and bookworm's python3 is 3.11, the project's Python.
# Needs root (apt, debootstrap). Prints nothing on success but what the tools print.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/debian-bookworm-minbase}"
CONF=/etc/containers/containers.conf

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

if ! grep -qs '^runtime = "runc"' "$CONF"; then
    mkdir -p "$(dirname "$CONF")"
    # containers.conf is TOML: one table per section, so write both tables in one go.
    cat >"$CONF" <<'TOML'
# Written by docker/podman-host.sh: see the reasons there.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
TOML
fi

if ! podman image exists "$BASE_IMAGE"; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
fi
