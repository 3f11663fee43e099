#!/usr/bin/env bash
# What the serving process really uses, measured in the built image (the Dockerfile's diet):
# runs the image with deploy/image/usage_probe on PYTHONPATH, sends `image_check answers` and
# `image_check routes` (one request of every route class), has the process write its imported
# modules and mapped files (SIGUSR2), then prints the biggest files under site-packages that it
# neither imported nor mapped: the candidates for the diet (each still to be checked for lazy use,
# and for being read as data: files opened with open(), e.g. /docs' swagger-ui-bundle.js, are not
# recorded, so they are listed too).
#   deploy/image/usage.sh [OUT_DIR]     (default: $CACHE_DIR/usage)
set -euo pipefail
source "$(dirname "$0")/engine.sh"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
cd "$REPO_ROOT"
out="${1:-$CACHE_DIR/usage}"
mkdir -p "$out" && rm -f "$out"/*.modules "$out"/*.maps && chmod 777 "$out"
have_image "$IMAGE" || "$DEPLOY_DIR/image/build.sh"

name=mldm-usage-probe
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ENGINE" rm -f "$name" >/dev/null 2>&1 || true
trap '"$ENGINE" rm -f "$name" >/dev/null 2>&1 || true' EXIT
"$ENGINE" run -d --name "$name" --read-only --tmpfs /tmp --init -p "127.0.0.1:$port:8000" \
    -v "$DEPLOY_DIR/image/usage_probe:/probe:ro" -v "$out:/usage:rw" \
    -e PYTHONPATH=/probe -e MLDM_USAGE_OUT=/usage "$IMAGE" >/dev/null
url="http://127.0.0.1:$port"
"$PYTHON" -m deploy.image_check ready "$url" --within 180
"$PYTHON" -m deploy.image_check answers "$url" >/dev/null
"$PYTHON" -m deploy.image_check routes "$url" >/dev/null
"$ENGINE" kill --signal USR2 "$name" >/dev/null
sleep 2
say "used files recorded in $out ($(cat "$out"/*.modules | wc -l) modules, $(cat "$out"/*.maps | wc -l) mapped files)"
"$ENGINE" run --rm -v "$out:/usage:ro" --entrypoint python "$IMAGE" -c '
import glob, os
used = {line.strip() for f in glob.glob("/usage/*.*") for line in open(f)}
site = "/opt/venv/lib/python3.11/site-packages"
rows = []
for root, _, files in os.walk(site):
    for name in files:
        path = os.path.join(root, name)
        if not os.path.islink(path) and path not in used and not name.endswith(".pyc"):
            rows.append((os.path.getsize(path), os.path.relpath(path, site)))
print(f"never imported nor mapped: {sum(s for s, _ in rows) / 1e6:.1f} MB in {len(rows)} files; largest:")
for size, path in sorted(rows, reverse=True)[:25]:
    print(f"{size / 1e6:8.1f} MB  {path}")
'
