#!/usr/bin/env bash
# `make perf-analyzer`: Triton's own benchmark tool, perf_analyzer 2.60, unmodified, against this
# server over HTTP and gRPC at concurrency 1 and 8, with our --input-data files.
#
# Its wheel needs glibc >= 2.38 and Debian 12 has 2.36, so it runs in a Debian 13 root made with
# debootstrap (Debian's own tool: root, ~130 MB from deb.debian.org, kept in PA_ROOT for the next
# run) into which pip installs perf-analyzer==2.60.0; the chroot shares the host's network, so
# it reaches the server on loopback. The server runs on the host with the committed models.
# Writes bench/results/perf-analyzer-<date>-<commit>.md (every run's report, and the commands).
# Needs root (chroot, debootstrap); PA_MODEL picks the model (default digit_classifier).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOTFS=${PA_ROOT:-build/perf-analyzer-root}
MODEL=${PA_MODEL:-digit_classifier}
PYTHON=${PYTHON:-.venv/bin/python}
OPTIONS=(--stability-percentage 50 --max-trials 6 --measurement-interval 3000)

if [ ! -x "$ROOTFS/opt/pa/bin/perf_analyzer" ]; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    }
    [ -x "$ROOTFS/usr/bin/python3" ] || debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates trixie "$ROOTFS" http://deb.debian.org/debian
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    chroot "$ROOTFS" python3 -m venv /opt/pa
    chroot "$ROOTFS" /opt/pa/bin/pip install --disable-pip-version-check -q perf-analyzer==2.60.0
fi

mounted=
if ! mountpoint -q "$ROOTFS/proc"; then
    mount --bind /proc "$ROOTFS/proc" && mounted=1
fi
port=$("$PYTHON" -c 'from tests.service.live_server import free_port; print(free_port())')
grpc_port=$("$PYTHON" -c 'from tests.service.live_server import free_port; print(free_port())')
log=$(mktemp)
MLDM_GRPC_PORT=$grpc_port MLDM_LOG_LEVEL=warning MLDM_LOG_FORMAT=text \
    "$PYTHON" -m service --port "$port" >"$log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    [ -z "$mounted" ] || umount "$ROOTFS/proc"
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
done
cp "deploy/perf_analyzer/$MODEL.json" "$ROOTFS/tmp/input-data.json"

commit=$(git rev-parse --short HEAD)
out="bench/results/perf-analyzer-$(date -u +%Y-%m-%d)-$commit.md"
{
    echo "# perf_analyzer 2.60 against mldm-serving ($MODEL), HTTP and gRPC"
    echo
    echo "\`make perf-analyzer\` (deploy/perf_analyzer/run.sh) at $commit, $(date -u +%FT%TZ):"
    echo "perf_analyzer 2.60.0 from PyPI in a Debian 13 root (glibc $(chroot "$ROOTFS" ldd --version | head -1 | awk '{print $NF}')),"
    echo "the server (\`python -m service\`, committed models, default settings) on the host's"
    echo "loopback. $(nproc) cores, shared with other work while it ran: the figures are what this"
    echo "loaded machine gave, not a capacity; stability was relaxed to 50 % (\`${OPTIONS[*]}\`)."
    echo
} >"$out"
for protocol in http grpc; do
    url="localhost:$port"
    extra=()
    if [ "$protocol" = grpc ]; then url="localhost:$grpc_port"; extra=(-i grpc); fi
    for concurrency in 1 8; do
        command=(/opt/pa/bin/perf_analyzer -m "$MODEL" -u "$url" "${extra[@]}"
            --input-data /tmp/input-data.json --concurrency-range "$concurrency" "${OPTIONS[@]}")
        echo "running: ${command[*]}"
        {
            echo "## $protocol, concurrency $concurrency"
            echo
            echo '```'
            echo "\$ ${command[*]}"
            chroot "$ROOTFS" "${command[@]}" 2>&1 | sed -n '/^Request concurrency/,$p' || true
            echo '```'
            echo
        } >>"$out"
    done
done
echo "wrote $out"
