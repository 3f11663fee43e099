#!/usr/bin/env bash
# `make image-test`: run the built image as docker-compose.yml runs it (read-only root, tmpfs
# /tmp, every capability dropped, no-new-privileges, an init) and check it from outside:
#   uid 10001 (not root); the root file system is read-only and /tmp writable;
#   /v2/health/ready; the image's own HEALTHCHECK command with MLDM_PORT and with PORT;
#   classify (real MNIST digits), energy (against the exact solver), V2 infer;
#   one request of every route class (image_check routes: the guard of the Dockerfile's diet,
#   which removes what those routes were measured never to use);
#   SIGTERM with requests in flight: every one answered, exit status 0.
# Builds the image first when it is missing. PYTHON: the project virtualenv's python (the checks
# use the project's own client and data code: deploy/image_check.py).
set -euo pipefail
source "$(dirname "$0")/engine.sh"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
cd "$REPO_ROOT"

have_image "$IMAGE" || "$DEPLOY_DIR/image/build.sh"

# The same hardening as the compose `x-api` anchor.
HARDENED=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --init)
containers=()
cleanup() { for c in "${containers[@]}"; do "$ENGINE" rm -f "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {  # start NAME HOSTPORT CONTAINERPORT [run options...]
    local name="$1" host_port="$2" port="$3"; shift 3
    "$ENGINE" rm -f "$name" >/dev/null 2>&1 || true
    containers+=("$name")
    # podman without systemd cannot schedule the periodic HEALTHCHECK (it says so on every run);
    # this test runs the HEALTHCHECK command itself instead (healthcheck below).
    "$ENGINE" run -d --name "$name" "${HARDENED[@]}" -p "127.0.0.1:$host_port:$port" "$@" "$IMAGE" \
        2> >(grep -v "unable to get systemd connection" >&2) >/dev/null
}

healthcheck() {  # the image's HEALTHCHECK command itself, run by the engine in the container
    local name="$1"
    if [[ "$ENGINE" == podman ]]; then
        "$ENGINE" healthcheck run "$name" >/dev/null 2>&1
    else
        local cmd
        cmd=$(docker inspect --format '{{json .Config.Healthcheck.Test}}' "$name" \
            | "$PYTHON" -c 'import json,sys; t=json.load(sys.stdin); print(json.dumps(t[1:]))')
        eval "docker exec $name $("$PYTHON" -c 'import json,shlex,sys; print(shlex.join(json.loads(sys.argv[1])))' "$cmd")" >/dev/null 2>&1
    fi
}

t0=$(date +%s)
main=mldm-image-test
port=$(free_port)
say "run $IMAGE as compose does: ${HARDENED[*]}"
start "$main" "$port" 8000
url="http://127.0.0.1:$port"
"$PYTHON" -m deploy.image_check ready "$url" --within 180

uid=$("$ENGINE" exec "$main" id -u)
[[ "$uid" == 10001 ]] || { echo "FAIL: runs as uid $uid, expected 10001" >&2; exit 1; }
say "uid: $uid (not root)"
if "$ENGINE" exec "$main" sh -c 'touch /app/models/x' 2>/dev/null; then
    echo "FAIL: the root file system is writable" >&2; exit 1
fi
"$ENGINE" exec "$main" sh -c 'touch /tmp/x && rm /tmp/x'
say "read-only root: writing under /app fails, /tmp (tmpfs) works"
healthcheck "$main" || { echo "FAIL: HEALTHCHECK fails on the default port" >&2; exit 1; }
say "HEALTHCHECK: healthy (default port 8000)"

"$PYTHON" -m deploy.image_check answers "$url"
"$PYTHON" -m deploy.image_check routes "$url"
# Every committed SavedModel version (not only those the service serves) loads with plain
# TensorFlow in the image: the diet must not remove anything SavedModel loading needs.
"$ENGINE" run --rm --read-only --tmpfs /tmp --entrypoint python "$IMAGE" -c '
import pathlib, tensorflow as tf
found = sorted(p.parent for p in pathlib.Path("/app/models").glob("*/*/saved_model.pb"))
for path in found:
    tf.saved_model.load(str(path))
print(f"tf.saved_model.load: {len(found)} committed versions load (TensorFlow {tf.__version__})")
' 2> >(grep -v "unable to get systemd connection" >&2)

rss=$("$ENGINE" stats --no-stream --format '{{.MemUsage}}' "$main" 2>/dev/null || echo "?")
say "memory after the checks (engine stats): $rss"

# The HEALTHCHECK with the port moved both ways the service accepts (service/settings.py).
for setting in MLDM_PORT PORT; do
    name="mldm-image-test-$setting"
    hport=$(free_port)
    start "$name" "$hport" 9000 -e "$setting=9000"
    "$PYTHON" -m deploy.image_check ready "http://127.0.0.1:$hport" --within 180
    healthcheck "$name" || { echo "FAIL: HEALTHCHECK unhealthy with $setting=9000" >&2; exit 1; }
    say "HEALTHCHECK: healthy with $setting=9000"
    "$ENGINE" rm -f "$name" >/dev/null 2>&1
done

# SIGTERM while requests are in flight: the service drains them, then exits 0. Eight exact-solver
# calls of 1,024 potentials: the solver lane admits MLDM_SOLVER_MAX_QUEUE (8) per worker, so none
# is shed on arrival and every one must be answered; some must be answered after the signal.
"$PYTHON" -m deploy.image_check sigterm "$url" --requests 8 -- "$ENGINE" kill --signal TERM "$main"
status=$("$ENGINE" wait "$main")
[[ "$status" == 0 ]] || { echo "FAIL: exit status $status after SIGTERM" >&2; "$ENGINE" logs --tail 30 "$main" >&2; exit 1; }
say "SIGTERM: exit status 0"
say "image test passed in $(( $(date +%s) - t0 )) s"
