"""Is the service's memory growth under batched load a per-batch-shape cache or a leak?

``python -m bench memshapes`` calls a SavedModel's `serving_default` from a two-thread pool in
passes over the same list of batch sizes and records the resident memory after each pass, in a
fresh subprocess per variant: every call one size (batching off), every size 1..N once (batching
on), the same padded up to powers of two, and oneDNN and malloc settings. Growth that stops after
the first pass is a cache keyed by shape; growth that goes on pass after pass is a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import REPO

VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "constant": ("constant", {}),
    "distinct": ("distinct", {}),
    "distinct, padded to powers of two": ("padded", {}),
    "distinct, oneDNN off": ("distinct", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "distinct, oneDNN cache 16": ("distinct", {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16"}),
    "distinct, 2 malloc arenas": ("distinct", {"MALLOC_ARENA_MAX": "2"}),
}


def child(model: str, mode: str, sizes: int, passes: int) -> dict[str, Any]:
    """In the subprocess: load, warm up at batch 1, then `passes` passes; RSS after each."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import tensorflow as tf

    function = tf.saved_model.load(model).signatures["serving_default"]
    (name, spec), *_ = function.structured_input_signature[1].items()
    item, rng, pool = (
        [int(d) for d in spec.shape[1:]],
        np.random.default_rng(0),
        ThreadPoolExecutor(2),
    )

    def call(batch: int) -> None:
        array = rng.random([batch, *item], dtype=np.float32)
        for value in function(**{name: tf.constant(array)}).values():
            value.numpy()

    for _ in range(20):
        call(1)
    out: dict[str, Any] = {
        "after_warmup": harness.memory_kib(os.getpid()).get("rss", 0) / 1024,
        "passes": [],
    }
    schedule = list(range(1, sizes + 1))
    if mode == "constant":  # the same items per pass, in batches of one size
        mean = max(1, round(sum(schedule) / len(schedule)))
        schedule = [mean] * len(schedule)
    if mode == "padded":  # the fix idea: only 9 shapes, each batch padded up to a power of two
        schedule = [1 << (size - 1).bit_length() for size in schedule]
    for _ in range(passes):
        list(pool.map(call, schedule))
        out["passes"].append(harness.memory_kib(os.getpid()).get("rss", 0) / 1024)
    pool.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser("memshapes", __doc__, results=False)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digit_classifier" / "1")
    parser.add_argument("--sizes", type=int, default=256, help="batch sizes 1..N per pass")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--child", metavar="MODE", help=argparse.SUPPRESS)
    args = harness.parse(parser, argv)
    if args.child:
        print(json.dumps(child(str(args.model), args.child, args.sizes, args.passes)))
        return 0
    print(f"| variant | after warm-up MiB | after each pass over sizes 1..{args.sizes} MiB |")
    print("| --- | ---: | --- |")
    for label in args.variants:
        mode, extra = VARIANTS[label]
        command = [sys.executable, "-m", "bench.memshapes", "--model", str(args.model)]
        command += ["--sizes", str(args.sizes), "--passes", str(args.passes), "--child", mode]
        env = {**harness.base_env(), **extra}
        done = subprocess.run(command, env=env, check=True, timeout=1800, capture_output=True)
        result = json.loads(done.stdout.splitlines()[-1])
        passes = ", ".join(f"{v:.0f}" for v in result["passes"])
        print(f"| {label} | {result['after_warmup']:.0f} | {passes} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
