"""`python -m bench NAME [OPTIONS]` runs the scenario `bench/NAME.py`, `python -m bench` all."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

LIBRARY = frozenset({"harness", "driver", "matrix", "bodies", "asgi"})  # not scenarios


def scenarios() -> list[str]:
    found = pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
    return sorted(m.name for m in found if not m.ispkg and m.name not in LIBRARY | {"__main__"})


def main(argv: list[str]) -> int:
    known = scenarios()
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:split], argv[split:]
    if options and len(names) != 1:
        print(f"usage: python -m bench [NAME ...] | python -m bench NAME [OPTIONS]   ({known})")
        return 0 if any(arg in ("-h", "--help") for arg in options) else 2
    if unknown := [name for name in names if name not in known]:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or known:
        print(f"== {name}", flush=True)
        status |= importlib.import_module(f"bench.{name}").main(options)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
