#!/usr/bin/env bash
# `make image`: build mldm-serving:latest with docker or podman (deploy/image/engine.sh).
#
# With podman, the host's pip configuration (every `pip config list` setting, environment
# included), its CA bundle and the local paths that configuration points at (package mirrors,
# wheel folders, constraint files) are mounted read-only into the RUN steps, so the image
# installs from the same sources the host does; nothing of it stays in the image. With docker no
# mount is made (a docker host is expected to reach PyPI itself).
# `--format docker`: the OCI format has no HEALTHCHECK, podman would drop it.
set -euo pipefail
source "$(dirname "$0")/engine.sh"

"$DEPLOY_DIR/image/standin-base.sh" python

args=(build -t "$IMAGE" -f "$REPO_ROOT/Dockerfile")
if [[ "$ENGINE" == podman ]]; then
    args+=(--format docker --layers)
    mkdir -p "$CACHE_DIR"
    conf="$CACHE_DIR/pip-build.conf"
    # `pip config list` prints scope.key='value' (env vars as :env:.key); all become [global].
    {
        echo "[global]"
        # First occurrence wins: pip lists the environment (highest precedence) first.
        pip config list 2>/dev/null | sed -E "s/^[^.]*\\.([a-z-]+)='(.*)'$/\\1 = \\2/" \
            | awk '!seen[$1]++'
    } > "$conf"
    args+=(-v "$conf:/etc/pip.conf:ro")
    # A file:// index's pages link to files beside it (…/simple -> …/files): mount its parent.
    for path in $(sed -n 's/^[a-z-]* = //p' "$conf" | tr ' ' '\n' \
        | sed -E 's#^file://(.*)/simple/?$#\1#; s#^file://##'); do
        if [[ "$path" == /* && -e "$path" ]]; then
            args+=(-v "$path:$path:ro")
        fi
    done
    # (`cert` is among those paths: the host's CA bundle, which a TLS-inspecting proxy needs.)
    say "pip configuration for the build ($conf):"
    sed 's/^/    /' "$conf" >&2
fi
say "$ENGINE ${args[*]} $REPO_ROOT"
start=$(date +%s)
"$ENGINE" "${args[@]}" "$REPO_ROOT"
say "built $IMAGE in $(( $(date +%s) - start )) s; size $("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE") bytes"
