#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml as a user runs it, with the image `make image` built.
#   1. the `api` service: ready, answers a classify, an energy and a V2 infer;
#   2. the `scaled` profile: 3 `api-replica` containers behind the `lb` nginx; requests spread
#      over all replicas, and one replica killed half-way through costs no failed request.
# The `tfserving` service is NOT exercised: its image (tensorflow/serving) cannot be pulled where
# no image registry is reachable, and there is no stand-in for it (it would not be the same
# server); the script says so. nginx: the official image when it can be pulled, else a stand-in
# from Debian's nginx-light package under the image's name (deploy/image/standin-base.sh).
# Compose: `docker compose` with docker, podman-compose (pinned, .venv-deploy) with podman.
set -euo pipefail
source "$(dirname "$0")/engine.sh"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
cd "$REPO_ROOT"

have_image "$IMAGE" || "$DEPLOY_DIR/image/build.sh"
"$DEPLOY_DIR/image/standin-base.sh" nginx

project=mldm-compose-test
if [[ "$ENGINE" == docker ]]; then
    compose=(docker compose -p "$project")
else
    compose=("${PODMAN_COMPOSE:-$REPO_ROOT/.venv-deploy/bin/podman-compose}" -p "$project")
fi
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export MLDM_PUBLISH_PORT MLDM_LB_PUBLISH_PORT
MLDM_PUBLISH_PORT=$(free_port)
MLDM_LB_PUBLISH_PORT=$(free_port)
log="${TMPDIR:-/tmp}/$project.log"
down() { "${compose[@]}" --profile scaled down -t 5 >>"$log" 2>&1 || true; }
# On a failure, the last lines of every container's log first (they are gone after `down`).
on_exit() {
    local rc=$?
    if (( rc != 0 )); then
        for name in $("$ENGINE" ps -a --filter "name=${project}_" --format '{{.Names}}'); do
            echo "--- last log lines of $name ---" >&2
            # Without the lines of answered requests, so nginx's own errors show.
            "$ENGINE" logs "$name" 2>&1 | grep -v '" 200 \|"status":200,' | tail -25 >&2 || true
        done
    fi
    down
}
trap on_exit EXIT
: > "$log"
say "compose output goes to $log"
say "NOT TESTED: the tfserving service (tensorflow/serving cannot be pulled here; no stand-in)"

t0=$(date +%s)
say "1/2 compose up api (port $MLDM_PUBLISH_PORT)"
"${compose[@]}" up -d --no-build api >>"$log" 2>&1
"$PYTHON" -m deploy.image_check ready "http://127.0.0.1:$MLDM_PUBLISH_PORT" --within 180
"$PYTHON" -m deploy.image_check answers "http://127.0.0.1:$MLDM_PUBLISH_PORT"
"${compose[@]}" down -t 40 >>"$log" 2>&1
say "api service passed in $(( $(date +%s) - t0 )) s"

t1=$(date +%s)
say "2/2 compose --profile scaled up: 3 api-replica behind lb (port $MLDM_LB_PUBLISH_PORT)"
"${compose[@]}" --profile scaled up -d --no-build api-replica lb >>"$log" 2>&1
lb="http://127.0.0.1:$MLDM_LB_PUBLISH_PORT"
"$PYTHON" -m deploy.image_check ready "$lb" --within 240
replicas=($("$ENGINE" ps --filter "name=${project}_api-replica" --format '{{.Names}}'))
say "replicas: ${replicas[*]}"
[[ ${#replicas[@]} -eq 3 ]] || { echo "FAIL: ${#replicas[@]} replicas, expected 3" >&2; exit 1; }
# Every replica ready before the spread is measured (nginx resolved all three at its start).
for replica in "${replicas[@]}"; do
    until "$ENGINE" exec "$replica" python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)" 2>/dev/null; do
        (( $(date +%s) - t1 < 240 )) || { echo "FAIL: $replica never ready" >&2; exit 1; }
        sleep 2
    done
done
# --idle 7: first a burst, then longer idle than the service's keep-alive (5 s), so nginx meets
# upstream connections the replicas have closed (a 502 when nginx's own idle timeout is longer).
"$PYTHON" -m deploy.image_check spread "$lb" --replicas 3 --total 300 --idle 7
victim="${replicas[1]}"
say "again, with $victim killed (SIGKILL) half-way through"
"$PYTHON" -m deploy.image_check spread "$lb" --replicas 2 --total 300 -- "$ENGINE" kill "$victim"
# Reported, not failed on: while every replica still loads, nginx answers 502 "no live upstreams"
# once it has tried them all (expected; `ready` polls on). After they are ready the spreads above
# must see none - `make nginx-test` checks that ordering deterministically.
lb_name=$("$ENGINE" ps --filter "name=${project}_lb" --format '{{.Names}}')
dead=$("$ENGINE" logs "$lb_name" 2>&1 | grep -c "no live upstreams" || true)
say "nginx 'no live upstreams' lines over the whole run (any during loading): $dead"
say "scaled profile passed in $(( $(date +%s) - t1 )) s"
