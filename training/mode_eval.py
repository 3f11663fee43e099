"""The energy modes judged on the held-out families: cost per item and accuracy of `auto`.

    python -m training.mode_eval cost [--version 2] [--items 2000] [--auto-families]
    python -m training.mode_eval http [--url http://127.0.0.1:8000] [--count 300]

``cost`` (was ``python -m bench.energy_modes``): per-item time of the model (a SavedModel
version through its ``serving_default`` signature, in-process) against the exact solver
(``data.schrodinger.solve_ground_state``, one process) on held-out harmonic wells, for batches of
1 and of ``--items`` (best of ``--repeats``); with ``--auto-families``, per held-out family what
the ``auto`` mode answers (the model inside its domain with ``energy_std <= --max-std``, the
exact solver otherwise): the share the model answers and the MAE of the answers.

``http`` (was ``python -m bench.energy_http``): posts every held-out family of ``data.heldout``
to a running server's ``/api/v1/energy/from-potential`` (``--route density``: the densities
with their potentials to ``/from-density``) with ``mode=model`` and with ``mode=auto``, and
prints per family the share the domain check flags, the share ``auto`` leaves to the model, the
MAE of both against the exact energies and the wall time per item, HTTP included. The server's
``MLDM_ENERGY_AUTO_MAX_STD`` sets the threshold of ``auto``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _best_per_item(fn: Callable[[], object], items: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / items


def cost(args: argparse.Namespace) -> None:
    import tensorflow as tf

    from data import heldout, schrodinger
    from training.common import DEFAULT_MODELS_DIR, latest_version, load_signature

    version = args.version or latest_version(DEFAULT_MODELS_DIR, args.model)
    signature = load_signature(DEFAULT_MODELS_DIR / args.model / str(version))
    V = heldout.family("harmonic", args.items).V
    one, many = tf.constant(V[:1].astype(np.float32)), tf.constant(V.astype(np.float32))
    signature(potential=one)  # trace and warm up
    exact = schrodinger.solve_ground_state
    rows = [
        ("model, batch 1", _best_per_item(lambda: signature(potential=one), 1, 50)),
        (
            f"model, batch {args.items}",
            _best_per_item(lambda: signature(potential=many), args.items, args.repeats),
        ),
        ("exact, batch 1", _best_per_item(lambda: exact(V[:1]), 1, 50)),
        (f"exact, batch {args.items}", _best_per_item(lambda: exact(V), args.items, args.repeats)),
    ]
    print(f"{args.model} v{version}: per-item time (best of repeats)")
    for name, seconds in rows:
        print(f"  {name:24s} {1e6 * seconds:10.1f} us")
    if not args.auto_families:
        return
    print(f"\nauto mode, max_std = {1000 * args.max_std:g} mHa, {args.auto_count} per family")
    print(f"  {'family':28s} {'model answers':>14s} {'MAE model part':>15s} {'MAE auto':>10s}")
    for name in heldout.FAMILIES:
        fam = heldout.family(name, args.auto_count)
        out = signature(potential=tf.constant(fam.V.astype(np.float32)))
        energy = out["energy"].numpy().astype(np.float64)
        use_model = out["in_domain"].numpy() & (out["energy_std"].numpy() <= args.max_std)
        error = np.where(use_model, np.abs(energy - fam.E), 0.0)
        part = 1000 * error[use_model].mean() if use_model.any() else float("nan")
        print(
            f"  {name:28s} {use_model.mean():14.1%} {part:12.3f} mHa {1000 * error.mean():7.3f} mHa"
        )


def _post(client: Any, url: str, body: dict[str, Any], chunk: int) -> tuple[dict[str, list], float]:
    """The per-item fields of the answers to `body`, sent `chunk` items at a time, and the
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


def http(args: argparse.Namespace) -> None:
    import httpx

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
            body: dict[str, Any] = {"potentials": fam.V}
            if args.route == "density":
                body = {"densities": fam.n, "potentials": fam.V}
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.mode_eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("cost", help="model against exact solver, per item; auto's accuracy")
    c.add_argument("--model", default="energy_from_potential")
    c.add_argument("--version", type=int, default=None, help="default: the latest")
    c.add_argument("--items", type=int, default=2000)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--auto-families", action="store_true", help="auto's answers per family")
    c.add_argument("--max-std", type=float, default=0.0016, help="auto: Ha (default 1.6 mHa)")
    c.add_argument("--auto-count", type=int, default=1000, help="systems per family")
    h = commands.add_parser("http", help="the modes through a running server's HTTP API")
    h.add_argument("--url", default="http://127.0.0.1:8000")
    h.add_argument("--count", type=int, default=300, help="systems per family")
    h.add_argument("--chunk", type=int, default=100, help="items per request")
    h.add_argument("--route", choices=("potential", "density"), default="potential")
    h.add_argument("--api-key", default=None, help="X-API-Key, when the server needs one")
    args = parser.parse_args(argv)
    (cost if args.command == "cost" else http)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
