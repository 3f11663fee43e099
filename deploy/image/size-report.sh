#!/usr/bin/env bash
# Where the image's bytes go: by layer (the engine's history) and by installed Python
# distribution (sizes of the files each one's RECORD lists, as they are in the image, after the
# Dockerfile's diet), largest first, plus the biggest single files.
#   deploy/image/size-report.sh [IMAGE]
set -euo pipefail
source "$(dirname "$0")/engine.sh"
image="${1:-$IMAGE}"
have_image "$image" || { echo "no image $image: run make image first" >&2; exit 1; }

echo "== $image: $("$ENGINE" image inspect --format '{{.Size}}' "$image") bytes in all"
echo "== by layer"
"$ENGINE" history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | cut -c1-120
echo "== by Python distribution (MB, files present in the image)"
"$ENGINE" run --rm --entrypoint python "$image" -c '
import importlib.metadata as md, os, sys
rows, total = [], 0
for dist in md.distributions():
    size = 0
    for f in dist.files or []:
        p = dist.locate_file(f)
        if os.path.isfile(p):
            size += os.path.getsize(p)
    rows.append((size, dist.metadata["Name"], dist.version))
    total += size
for size, name, version in sorted(rows, reverse=True)[:25]:
    print(f"{size / 1e6:9.1f}  {name}=={version}")
print(f"{total / 1e6:9.1f}  all {len(rows)} distributions")
big = []
for root, _, files in os.walk(sys.prefix):
    for name in files:
        p = os.path.join(root, name)
        if not os.path.islink(p):
            big.append((os.path.getsize(p), p))
print("== largest files (MB)")
for size, p in sorted(big, reverse=True)[:12]:
    print(f"{size / 1e6:9.1f}  {p}")
'
echo "== outside the virtualenv (MB)"
"$ENGINE" run --rm --entrypoint sh "$image" -c 'du -sm /usr/lib /usr/share /usr/bin /app /opt/venv 2>/dev/null'
