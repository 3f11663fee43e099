"""Run benchmarks by name: ``python -m bench`` runs all, ``python -m bench schrodinger`` one.

Each benchmark is a module ``bench.<name>`` with ``main(argv) -> int``; register it below.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "schrodinger": "bench.schrodinger",
}


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"usage: python -m bench [NAME ...]   (names: {', '.join(BENCHMARKS)})")
        return 0
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in argv or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        status |= importlib.import_module(BENCHMARKS[name]).main([])
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
