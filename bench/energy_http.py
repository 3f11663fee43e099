"""The energy modes measured through the HTTP API of a running server (issue 11).

``python -m bench.energy_http [--url http://127.0.0.1:8000] [--count 300] [--route potential]``
posts every held-out family of ``data.heldout`` (its own code path and seeds) to
``/api/v1/energy/from-potential`` (or, with ``--route density``, its ground-state densities with
their potentials to ``/api/v1/energy/from-density``) once with ``mode=model`` and once with
``mode=auto``, and prints per family: the share the domain check flags, the share ``auto`` leaves
to the model (``answered_by``), the MAE of the model's answers and of ``auto``'s answers against
the exact energies, and the wall time per item of each mode, HTTP included. The server's
``MLDM_ENERGY_AUTO_MAX_STD`` sets the uncertainty threshold of ``auto``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np


def _post(
    client: httpx.Client, url: str, body: dict[str, Any], chunk: int
) -> tuple[dict[str, list[Any]], float]:
    """The per-item fields of the answers to ``body``, sent ``chunk`` items at a time, and the
    wall time in seconds."""
    arrays = {k: v for k, v in body.items() if isinstance(v, np.ndarray)}
    count = len(next(iter(arrays.values())))
    merged: dict[str, list[Any]] = {}
    start = time.perf_counter()
    for lo in range(0, count, chunk):
        part = {k: (v[lo : lo + chunk].tolist() if k in arrays else v) for k, v in body.items()}
        response = client.post(url, json=part)
        response.raise_for_status()
        for key in ("energies", "answered_by", "in_domain"):
            merged.setdefault(key, []).extend(response.json()[key])
    return merged, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.energy_http", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=300, help="systems per family")
    parser.add_argument("--chunk", type=int, default=100, help="items per request")
    parser.add_argument("--route", choices=("potential", "density"), default="potential")
    parser.add_argument("--api-key", default=None, help="X-API-Key, when the server needs one")
    args = parser.parse_args(argv)

    from data import heldout

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = f"{args.url.rstrip('/')}/api/v1/energy/from-{args.route}"
    with httpx.Client(headers=headers, timeout=120.0) as client:
        model_info = None
        print(f"POST {url}, {args.count} systems per family, {args.chunk} per request")
        print(
            f"  {'family':20s} {'flagged':>8s} {'auto: model':>12s} {'MAE model':>11s} "
            f"{'MAE auto':>10s} {'us/item model':>14s} {'us/item auto':>13s}"
        )
        for name in heldout.FAMILIES:
            fam = heldout.family(name, args.count)
            body: dict[str, Any] = (
                {"potentials": fam.V}
                if args.route == "potential"
                else {"densities": fam.n, "potentials": fam.V}
            )
            model, t_model = _post(client, url, {**body, "mode": "model"}, args.chunk)
            auto, t_auto = _post(client, url, {**body, "mode": "auto"}, args.chunk)
            if model_info is None:
                info = client.post(url, json={k: v[:1].tolist() for k, v in body.items()})
                model_info = info.json()["model"]
            flagged = 1 - np.mean(model["in_domain"])
            by_model = np.mean(np.array(auto["answered_by"]) == "model")
            mae_model = 1000 * np.abs(np.array(model["energies"]) - fam.E).mean()
            mae_auto = 1000 * np.abs(np.array(auto["energies"]) - fam.E).mean()
            tag = "" if fam.in_domain else " (ood)"
            print(
                f"  {name + tag:20s} {flagged:8.1%} {by_model:12.1%} {mae_model:7.3g} mHa "
                f"{mae_auto:6.3g} mHa {1e6 * t_model / args.count:14.0f} "
                f"{1e6 * t_auto / args.count:13.0f}"
            )
        print(f"model: {model_info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
