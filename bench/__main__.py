"""Run benchmark scenarios by name: ``python -m bench NAME [OPTIONS]``, ``python -m bench`` all.

A scenario is any module ``bench/<NAME>.py`` with ``main(argv) -> int`` that is not part of the
harness (``LIBRARY``); adding the file is all it takes (see ``bench.harness`` for the API).
Options after a single name go to that scenario: ``python -m bench serving --workers 2``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

#: Modules of the harness itself, not scenarios.
LIBRARY = frozenset({"harness", "driver", "matrix", "bodies", "profile", "naive_server"})


def scenarios() -> list[str]:
    """The scenario names, from the files in bench/."""
    found = pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
    return sorted(
        m.name
        for m in found
        if not m.ispkg and not m.name.startswith("_") and m.name not in LIBRARY
    )


def main(argv: list[str]) -> int:
    known = scenarios()
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:split], argv[split:]
    if options and len(names) != 1:
        print(
            "usage: python -m bench [NAME ...] | python -m bench NAME [OPTIONS]   "
            f"(names: {', '.join(known)})"
        )
        return 0 if any(arg in ("-h", "--help") for arg in options) else 2
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or known:
        print(f"== {name}", flush=True)
        status |= importlib.import_module(f"bench.{name}").main(options)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
