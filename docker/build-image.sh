#!/usr/bin/env bash
# `make image`: builds the project image (Dockerfile) with podman on this machine, which reaches
# Debian's and PyPI's packages but no image registry (../shared/PLATFORM-NOTES.md, "Containers
# for real"). The base is a debootstrapped bookworm minbase (docker/podman-host.sh makes it); torch
# is the CPU wheel that lies in /opt/wheels, or PyTorch's CPU index where that folder is absent.
#
#   docker/build-image.sh [TAG]      # default localhost/interactavatar:dev; prints the image size
#
# The image is also tagged with the name the pipeline's components run (cluster/names.py IMAGE),
# under docker.io/, which is how podman's Docker-compatible API matches the bare name: KFP's local
# DockerRunner (`pipeline run --local --runner docker`) then finds it instead of pulling it.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${1:-${IMAGE:-localhost/interactavatar:dev}}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-bookworm-minbase}"
export BASE_IMAGE
docker/podman-host.sh

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
mounts=()
# pip inside the build trusts the index only with the host's CA bundle.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mounts+=(-v /etc/ssl/certs:/host-certs:ro)
    build_args+=(--build-arg PIP_CERT=/host-certs/ca-certificates.crt)
fi
if compgen -G "/opt/wheels/torch-*+cpu-*.whl" >/dev/null; then
    mounts+=(-v /opt/wheels:/host-wheels:ro)
    build_args+=(--build-arg PIP_FIND_LINKS=/host-wheels)
else
    build_args+=(--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)
fi

podman build --network host "${mounts[@]}" "${build_args[@]}" --tag "$IMAGE" .
component_image="$(sed -n 's/^IMAGE = "\(.*\)"$/\1/p' src/interactavatar/cluster/names.py)"
podman tag "$IMAGE" "docker.io/$component_image"
podman image inspect "$IMAGE" --format '{{.Size}}' \
    | awk -v image="$IMAGE" '{ printf "%s: %.0f MB\n", image, $1 / 1e6 }'
