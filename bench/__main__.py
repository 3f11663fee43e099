"""Run benchmarks by name: ``python -m bench`` runs all, ``python -m bench schrodinger`` one.

Each benchmark is a module ``bench.<name>`` with ``main(argv) -> int``; register it below.
Options after a single name go to that benchmark: ``python -m bench serving --workers 2``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "ab": "bench.ab",
    "digits_wild": "bench.digits_wild",
    "energy_http": "bench.energy_http",
    "energy_modes": "bench.energy_modes",
    "memshapes": "bench.memshapes",
    "metrics": "bench.metrics",
    "overhead": "bench.overhead",
    "overload": "bench.overload",
    "peers": "bench.peers",
    "protocols": "bench.protocols",
    "schrodinger": "bench.schrodinger",
    "serving": "bench.serving",
    "soak": "bench.soak",
}


def main(argv: list[str]) -> int:
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:split], argv[split:]
    if options and len(names) != 1:
        print(
            f"usage: python -m bench [NAME ...] | python -m bench NAME [OPTIONS]   "
            f"(names: {', '.join(BENCHMARKS)})"
        )
        return 0 if any(arg in ("-h", "--help") for arg in options) else 2
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        status |= importlib.import_module(BENCHMARKS[name]).main(options)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
