"""Per-item cost of the energy modes (issue 11): the model (a SavedModel version, through its
``serving_default`` signature, in-process) against the exact solver
(``data.schrodinger.solve_ground_state``, one process), on held-out harmonic wells.

``python -m bench.energy_modes [--version 2] [--items 2000] [--repeats 3]`` prints, for batches of
1 and of ``--items``, the best of ``--repeats`` times per item. The HTTP overhead of the service is
not included (see ``python -m bench`` for that); the figures are for a choice of mode.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np


def _best_per_item(fn: Callable[[], object], items: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.energy_modes", description=__doc__)
    parser.add_argument("--model", default="energy_from_potential")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--auto-families", action="store_true", help="also the auto mode's answers per family"
    )
    parser.add_argument("--max-std", type=float, default=0.0016, help="auto: Ha (default 1.6 mHa)")
    parser.add_argument("--auto-count", type=int, default=1000, help="systems per family")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from data import heldout, schrodinger
    from training.common import DEFAULT_MODELS_DIR, latest_version, load_signature

    version = args.version or latest_version(DEFAULT_MODELS_DIR, args.model)
    signature = load_signature(DEFAULT_MODELS_DIR / args.model / str(version))
    V = heldout.family("harmonic", args.items).V
    one = tf.constant(V[:1].astype(np.float32))
    many = tf.constant(V.astype(np.float32))
    signature(potential=one)  # trace and warm up
    rows = [
        ("model, batch 1", _best_per_item(lambda: signature(potential=one), 1, 50)),
        (
            f"model, batch {args.items}",
            _best_per_item(lambda: signature(potential=many), args.items, args.repeats),
        ),
        ("exact, batch 1", _best_per_item(lambda: schrodinger.solve_ground_state(V[:1]), 1, 50)),
        (
            f"exact, batch {args.items}",
            _best_per_item(lambda: schrodinger.solve_ground_state(V), args.items, args.repeats),
        ),
    ]
    print(f"{args.model} v{version}: per-item time (best of repeats)")
    for name, seconds in rows:
        print(f"  {name:24s} {1e6 * seconds:10.1f} us")
    if args.auto_families:
        _auto_table(signature, args.max_std, args.auto_count)
    return 0


def _auto_table(signature: object, max_std: float, count: int) -> None:
    """Per held-out family: what `auto` answers (model inside its domain with energy_std <=
    max_std, exact solver otherwise): the fraction the model answers and the MAE of the answers."""
    from data import heldout

    print(f"\nauto mode, max_std = {1000 * max_std:g} mHa, {count} systems per family")
    print(f"  {'family':28s} {'model answers':>14s} {'MAE model part':>15s} {'MAE auto':>10s}")
    for name in heldout.FAMILIES:
        fam = heldout.family(name, count)
        out = signature(potential=tf_constant(fam.V))  # type: ignore[operator]
        energy = out["energy"].numpy().astype(np.float64)
        use_model = out["in_domain"].numpy() & (out["energy_std"].numpy() <= max_std)
        error = np.where(use_model, np.abs(energy - fam.E), 0.0)
        part = 1000 * error[use_model].mean() if use_model.any() else float("nan")
        print(
            f"  {name:28s} {use_model.mean():14.1%} {part:12.3f} mHa {1000 * error.mean():7.3f} mHa"
        )


def tf_constant(V: np.ndarray) -> object:
    import tensorflow as tf

    return tf.constant(V.astype(np.float32))


if __name__ == "__main__":
    raise SystemExit(main())
