#!/usr/bin/env bash
# Make sure an image named like a base image exists: pull it, or, when no image registry can be
# reached (this project's CI VM), build a STAND-IN from Debian bookworm's own packages and import
# it under that name. The stand-in is not the official image: its Python is Debian's python3
# (3.11.2 in bookworm) instead of python.org's build; it says so in its labels and here.
#
#   deploy/image/standin-base.sh python   # docker.io/library/python:3.11-slim-bookworm
#   deploy/image/standin-base.sh nginx    # docker.io/library/nginx:1.27-alpine (Debian's nginx)
#
# The debootstrapped root file system is cached as a tarball under $CACHE_DIR, so a second CI run
# on the same machine imports it in seconds instead of debootstrapping again.
set -euo pipefail
source "$(dirname "$0")/engine.sh"

kind="${1:-python}"
case "$kind" in
    python)
        name="$BASE_IMAGE"
        packages="python3,python3-venv,python3-pip,ca-certificates"
        # The official image's entry points: python and pip on PATH under those names.
        links='ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip'
        cmd='["python3"]'
        ;;
    nginx)
        name="${MLDM_NGINX_IMAGE:-docker.io/library/nginx:1.27-alpine}"
        # wget: the compose healthcheck of `lb` calls it, as it would in the alpine image.
        packages="nginx-light,wget,ca-certificates"
        links='mkdir -p /var/lib/nginx /var/log/nginx && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log'
        cmd='["nginx", "-g", "daemon off;"]'
        ;;
    *) echo "usage: $0 python|nginx" >&2; exit 2 ;;
esac

# The stand-in's recipe revision: bump it when the recipe changes (cache key and image label).
STANDIN_REVISION=2
if have_image "$name"; then
    labels=$("$ENGINE" image inspect --format '{{json .Config.Labels}}' "$name" 2>/dev/null || true)
    revision=$(sed -n 's/.*"mldm.standin-revision":"\([0-9]*\)".*/\1/p' <<< "$labels")
    [[ -z "$revision" && "$labels" == *STAND-IN* ]] && revision=1  # before the revision label
    if [[ -z "$revision" ]]; then
        say "base image $name is present"
        exit 0
    elif [[ "$revision" == "$STANDIN_REVISION" ]]; then
        say "base image $name is present: the STAND-IN built from Debian packages (revision $revision)"
        exit 0
    fi
    say "base image $name is an older stand-in (revision $revision): replacing it"
else
    say "pulling $name"
    if timeout "${MLDM_PULL_TIMEOUT_S:-60}" "$ENGINE" pull -q "$name" >/dev/null 2>&1; then
        say "pulled $name"
        exit 0
    fi
fi

say "*** $name cannot be pulled (no image registry reachable): using a STAND-IN built from"
say "*** Debian bookworm packages ($packages), imported under the name $name."
mkdir -p "$CACHE_DIR"
tarball="$CACHE_DIR/standin-$kind-$(echo "$STANDIN_REVISION $packages" | sha256sum | cut -c1-12).tar"
if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    mirror="${MLDM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    say "debootstrap --variant=minbase bookworm from $mirror (a few minutes)"
    debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
        > "$CACHE_DIR/debootstrap-$kind.log" 2>&1 || {
        tail -20 "$CACHE_DIR/debootstrap-$kind.log" >&2
        exit 1
    }
    # As the official slim images do: no documentation, manual pages or translations.
    chroot "$root" sh -c "$links && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
        /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    trap - EXIT
else
    say "reusing the cached stand-in root file system $tarball"
fi
"$ENGINE" import \
    --change "CMD $cmd" \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change "LABEL org.opencontainers.image.description=STAND-IN-for-$name-built-from-Debian-bookworm-packages" \
    --change "LABEL mldm.standin-revision=$STANDIN_REVISION" \
    "$tarball" "$name" >/dev/null
say "imported the stand-in as $name ($("$ENGINE" image inspect --format '{{.Size}}' "$name") bytes)"
