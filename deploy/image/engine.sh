# Sourced by the image scripts: picks the container engine and exports ENGINE (docker or podman).
# docker when its daemon answers, else podman; when neither exists, podman and buildah are
# installed from Debian (the CI VM runs as root with apt). podman reads this repo's
# containers.conf (why: deploy/podman/containers.conf).
# shellcheck shell=bash
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
IMAGE="${MLDM_IMAGE:-mldm-serving:latest}"
# The Dockerfile's default base; the stand-in is imported under this very name.
BASE_IMAGE="${MLDM_BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
CACHE_DIR="${MLDM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mldm-serving}"

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ -z "${ENGINE:-}" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        say "no docker daemon and no podman: installing podman and buildah from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
        ENGINE=podman
    fi
fi
if [[ "$ENGINE" == podman ]]; then
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$DEPLOY_DIR/podman/containers.conf}"
    # That containers.conf names runc (crun fails on this project's VMs), and Debian's podman
    # brings crun alone: a podman installed without runc (by hand, or an older run of this
    # script) would stop at "default OCI runtime runc not found".
    if ! command -v runc >/dev/null; then
        say "podman without runc: installing runc from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null
    fi
fi
export ENGINE IMAGE BASE_IMAGE CACHE_DIR DEPLOY_DIR REPO_ROOT

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
