"""Calibration of the E[V] model's intervals and of `mode=auto`, per family (issue 20).

    python -m training.energy_calibration [--version 2] [--count 400] [--write]

The model's ``energy_std`` was calibrated on average; here it is checked and rescaled family by
family. Disjoint draws (seeds 1 and 3 to fit, 2 to report) of every held-out in-domain family
(``data.heldout``), three families the issue found uncovered (a cosine lattice, a Gaussian
barrier in a harmonic trap, deep square wells) and the demo page's four presets over their whole
slider ranges (``service/static/demo/demo.js``) go through the exported model and the exact
solver (``data.schrodinger``):

- ``std_scale``: split conformal, per family: on the calibration draws, the smallest factor ``s``
  with ``|E - E_exact| <= 1.96 s energy_std`` for 95% of the in-domain items of *every* family;
  the served ``energy_std`` is ``s`` times the model's.
- ``auto_max_std_ha``: the largest threshold on the rescaled ``energy_std`` for which, on every
  family and preset of the calibration draws, answering with the model where it is in its domain
  and below the threshold (the solver elsewhere) is never more than 1.6 mHa off: the model
  answers only where the calibration never saw it miss the promise. (A first rule allowed 4 mHa
  on one draw; the rescaled std spans only ~5.5-5.9 mHa there, so it hardly ranks the errors and
  a draw it never saw had a notebook-preset point 5.12 mHa off at std 5.72 mHa: the 5 mHa limit
  needs the margin of the promise itself, and two draws.)

Both are written (``--write``) into the version's ``metrics.json`` under ``calibration``, with
the coverage and the ``auto`` figures of every family on the draw the fit never saw (seed 2);
``training.energy_wild`` measures them through HTTP on a fourth (seed 4). The service reads them
from there (``service.energy_domain``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data import heldout, schrodinger

NAME = "energy_from_potential"
X = schrodinger.GRID
PROMISE_HA = 0.0016  # auto's promise: at most 1.6 mHa off ...
SHARE = 0.995  # ... for at least this share of every family's items ...
WORST_HA = 0.005  # ... and never more than 5 mHa
MAX_SCORES = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2)  # domain-score thresholds tried for auto
FIT_WORST_HA = PROMISE_HA  # on the fit draws, no model answer beyond the promise itself
FIT_SEEDS = (1, 3)
HELD_OUT_SEED = 2
COVERAGE = 0.95


def _cosine_lattice(rng: np.random.Generator) -> np.ndarray:
    depth, period = rng.uniform(0.1, 1.0), rng.uniform(3.0, 8.0)
    trap = rng.uniform(0.1, 0.4)
    return -depth * np.cos(2 * np.pi * X / period) + 0.5 * trap**2 * X**2


def _barrier_in_trap(rng: np.random.Generator) -> np.ndarray:
    w, height, width = rng.uniform(0.25, 1.0), rng.uniform(0.3, 3.0), rng.uniform(0.5, 2.0)
    return 0.5 * w**2 * X**2 + height * np.exp(-(X**2) / (2 * width**2))


def _deep_square(rng: np.random.Generator) -> np.ndarray:
    depth, half = rng.uniform(0.5, 2.0), rng.uniform(1.5, 5.0)
    return -depth / (1 + np.exp((np.abs(X) - half) / 0.1))


EXTRA: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "cosine_lattice": _cosine_lattice,
    "barrier_in_trap": _barrier_in_trap,
    "deep_square": _deep_square,
}


def demo_presets(steps: int = 101, notebook: int = 10000, seed: int = 0) -> dict[str, np.ndarray]:
    """The demo page's presets (demo.js PRESETS) over their slider ranges: every slider step of
    the one- and two-slider presets, ``notebook`` random points of the five-slider one."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-5, 5, (notebook, 5))
    basis = np.stack(
        [
            np.ones_like(X),
            np.cos(np.pi * X / 15),
            np.cos(2 * np.pi * X / 15),
            np.sin(np.pi * X / 15),
            np.sin(2 * np.pi * X / 15),
        ]
    )
    out = {"preset notebook": 1e-11 * X**10 + 0.0795 * a @ basis}
    k = np.linspace(0.005, 0.2, steps)
    out["preset harmonic"] = k[:, None] * X**2
    barrier, minima = (
        g.ravel() for g in np.meshgrid(np.linspace(0.05, 2, steps), np.linspace(1, 8, steps))
    )
    out["preset double"] = barrier[:, None] * ((X / minima[:, None]) ** 2 - 1) ** 2
    width, wall = (
        g.ravel() for g in np.meshgrid(np.linspace(2, 26, steps), np.linspace(0.1, 5, steps))
    )
    out["preset box"] = np.where(np.abs(X) < width[:, None] / 2, 0.0, wall[:, None])
    return out


def family(name: str, count: int, seed: int) -> np.ndarray:
    """Potentials [count, 64] of one held-out (``data.heldout``) or extra family, one draw."""
    if name in heldout.IN_DOMAIN:
        return heldout.potentials(name, count, seed)[0]
    rng = np.random.default_rng([7, list(EXTRA).index(name), seed])
    shift = rng.uniform(-1, 1, count)
    return np.stack([EXTRA[name](rng) for _ in range(count)]) + shift[:, None]


def sets(count: int, seed: int) -> dict[str, np.ndarray]:
    """Potentials [N, 64] of every family of one draw (``seed``), presets included."""
    out = {name: family(name, count, seed) for name in [*heldout.IN_DOMAIN, *EXTRA]}
    out.update(demo_presets(seed=seed))
    return out


def evaluate(signature: Any, V: np.ndarray) -> dict[str, np.ndarray]:
    """The model's energy, std and domain flag, and the exact energy, for potentials V."""
    import tensorflow as tf  # here: training.energy_wild uses the families without TensorFlow

    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(V), 4096):
        batch = tf.constant(V[start : start + 4096].astype(np.float32))
        for key, value in signature(potential=batch).items():
            outputs.setdefault(key, []).append(value.numpy())
    out = {key: np.concatenate(values).reshape(len(V)) for key, values in outputs.items()}
    out["exact"], _ = schrodinger.solve_ground_state(V)
    out["error"] = out["energy"].astype(np.float64) - out["exact"]
    return out


def std_scale(results: dict[str, dict[str, np.ndarray]]) -> float:
    """The smallest factor on energy_std that covers 95% of every family's in-domain items."""
    needed = [1.0]
    for r in results.values():
        inside = r["in_domain"].astype(bool)
        if inside.sum() < 20:
            continue
        ratio = np.abs(r["error"][inside]) / (1.96 * r["energy_std"][inside].astype(np.float64))
        # Split-conformal quantile: the ceil((n + 1) 0.95)-th smallest ratio.
        k = min(len(ratio), int(np.ceil((len(ratio) + 1) * COVERAGE)))
        needed.append(float(np.sort(ratio)[k - 1]))
    return max(needed)


def auto_figures(
    r: dict[str, np.ndarray], scale: float, threshold: float, max_score: float
) -> dict[str, float]:
    """What `auto` gives a family: share answered by the model, share within 1.6 mHa, worst."""
    model = (
        r["in_domain"].astype(bool)
        & (scale * r["energy_std"] <= threshold)
        & (r["domain_score"] <= max_score)
    )
    error = np.where(model, np.abs(r["error"]), 0.0)
    return {
        "model_share": float(model.mean()),
        "within_1_6_mha": float((error <= PROMISE_HA).mean()),
        "worst_mha": float(error.max() * 1000),
    }


def auto_rule(results: dict[str, dict[str, np.ndarray]], scale: float) -> tuple[float, float]:
    """The thresholds (rescaled std, domain score) under which the model answers in `auto`:
    of the pairs that keep auto's promise (with the margin) on every family, the one where
    the model answers most items."""
    stds = np.unique(
        np.concatenate([scale * r["energy_std"].astype(np.float64) for r in results.values()])
    )
    best = (0.0, 0.0, -1.0)
    for max_score in MAX_SCORES:
        threshold = 0.0
        for t in stds:  # ascending: stop at the first that breaks the promise
            figures = [auto_figures(r, scale, float(t), max_score) for r in results.values()]
            if not all(
                f["within_1_6_mha"] >= SHARE and f["worst_mha"] <= FIT_WORST_HA * 1000
                for f in figures
            ):
                break
            threshold = float(t)
        shares = [
            auto_figures(r, scale, threshold, max_score)["model_share"] for r in results.values()
        ]
        if float(np.mean(shares)) > best[2]:
            best = (threshold, max_score, float(np.mean(shares)))
    return best[0], best[1]


def coverage(r: dict[str, np.ndarray], scale: float) -> dict[str, float]:
    inside = r["in_domain"].astype(bool)
    std = scale * r["energy_std"].astype(np.float64)
    covered = np.abs(r["error"]) <= 1.96 * std
    return {
        "n": float(len(inside)),
        "in_domain": float(inside.mean()),
        "coverage95_in_domain": float(covered[inside].mean()) if inside.any() else float("nan"),
        "coverage95_before": float((np.abs(r["error"]) <= 1.96 * r["energy_std"])[inside].mean())
        if inside.any()
        else float("nan"),
        "mae_mha": float(np.abs(r["error"][inside]).mean() * 1000)
        if inside.any()
        else float("nan"),
    }


def calibrate(model_dir: Path, count: int) -> dict[str, Any]:
    from training.common import load_signature

    signature = load_signature(model_dir)
    draws = [sets(count, seed) for seed in FIT_SEEDS]
    fit = {name: evaluate(signature, np.concatenate([d[name] for d in draws])) for name in draws[0]}
    scale = std_scale(fit)
    threshold, max_score = auto_rule(fit, scale)
    held = {name: evaluate(signature, V) for name, V in sets(count, HELD_OUT_SEED).items()}
    return {
        "method": "split conformal per family: std_scale = max over families of the 95% "
        "quantile of |error| / (1.96 energy_std) on in-domain items; auto_max_std_ha = the "
        "largest threshold on the rescaled std keeping every model answer of every family and "
        "demo preset within 1.6 mHa (so at most 1.6 mHa for 99.5% and never 5 mHa)",
        "command": f"python -m training.energy_calibration --count {count} --write",
        "calibrated_on": f"seeds {FIT_SEEDS}, {count} each per data.heldout in-domain family "
        "and extra family; the demo presets over their slider ranges (10,000 random points of "
        f"the five-slider one per seed); held out: seed {HELD_OUT_SEED}",
        "std_scale": scale,
        "auto_max_std_ha": threshold,
        "auto_max_domain_score": max_score,
        "held_out": {
            name: {
                **coverage(r, scale),
                **{f"auto_{k}": v for k, v in auto_figures(r, scale, threshold, max_score).items()},
            }
            for name, r in held.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.energy_calibration", description=__doc__
    )
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument(
        "--write", action="store_true", help="store it in the version's metrics.json"
    )
    args = parser.parse_args(argv)
    from training.common import DEFAULT_MODELS_DIR

    model_dir = (args.models_dir or DEFAULT_MODELS_DIR) / NAME / str(args.version)
    result = calibrate(model_dir, args.count)
    print(
        f"std_scale {result['std_scale']:.4f}, auto_max_std_ha {result['auto_max_std_ha']:.6f},"
        f" auto_max_domain_score {result['auto_max_domain_score']}"
    )
    for name, row in result["held_out"].items():
        print(f"{name:20s} " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()))
    if args.write:
        path = model_dir / "metrics.json"
        card = json.loads(path.read_text())
        card["calibration"] = result
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
