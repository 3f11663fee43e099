"""The broad one-electron training set of ``energy_from_potential`` v2 and ``energy_from_density``
v2: potentials of many shapes and depths on the notebook's grid, solved exactly.

Every system lies on ``data.schrodinger.GRID`` (``linspace(-15, 15, 64)`` bohr) and is solved by
``data.schrodinger.solve_ground_state``. A system is one *primary* potential from one of the
families below, plus with probability 1/2 a weaker second component from another family, plus a
random constant offset ``c ~ U(-OFFSET, OFFSET)`` Ha (E[V] does not care, E[n] cannot see it):

======== ==============================================================================
family   what
======== ==============================================================================
notebook the notebook's family (``data.schrodinger.sample_potentials``, base seed 10,000,001,
         far from the notebook's own seeds 1 .. 101,234)
fourier  random smooth: ``sum_k a_k cos(k pi x / 15) + b_k sin(k pi x / 15)``, 3 to 12 modes,
         amplitude log-uniform in [0.05, 3] Ha, spectral decay ``k**-p``, p in [0, 1.5], and a
         confining wall ``(|x| / L)**q`` half of the time
wells    1 to 4 Gaussian or super-Gaussian (``exp(-|x/w|**p / 2)``, p in [2, 6]) wells and
         barriers, centres in [-10, 10], widths log-uniform in [0.6, 5] bohr (40% with a
         different width on each side), depths up to 4 Ha
poly     polynomial single wells ``a2 u**2 + a3 u**3 + a4 u**4 + a1 u``, u = x - x0
steps    smoothed steps, boxes (wells and barriers of width 1.5 to 16 bohr, smoothing 0.25 to 2
         bohr), linear ramps, and soft exponential walls ``exp(+-(x - x0) / L)`` (L 1.1 to 5
         bohr, cut at 5 to 200 Ha), half of them with a Gaussian well beside
======== ==============================================================================

Resolution. The grid has dx = 0.476 bohr. A harmonic well ``w**2 x**2 / 2`` is solved on it to
3.4e-5 Ha at w = 2 (ground-state width 0.71 bohr, 1.5 dx) but 3.3e-4 Ha at w = 3, so every family
is bounded to curvatures ``V'' <= MAX_CURVATURE`` = 4.5 Ha/bohr**2 near its minimum (widths and
depths of wells are drawn so that ``depth / width**2`` stays below it). Sharper potentials are
outside what the grid resolves; the v2 models' domain check flags them.

Command line: ``python -m data.potentials --count 300000 --seed 1 [--out PATH]`` (progress bar,
output git-ignored under ``data/generated/``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data import schrodinger
from data.errors import DatasetError

__all__ = [
    "FAMILIES",
    "MAX_CURVATURE",
    "OFFSET",
    "BroadDataset",
    "default_path",
    "generate",
    "load",
    "load_or_generate",
    "sample",
    "save",
]

X = schrodinger.GRID
#: Half-width of the random constant offset added to every potential (Ha).
OFFSET = 2.0
#: The sharpest curvature (Ha/bohr^2) any family draws near its minimum: what the grid resolves.
MAX_CURVATURE = 4.5
_NOTEBOOK_SEED = 10_000_001
_CHUNK = 5000
_FORMAT_VERSION = 1
_GENERATED = Path(__file__).resolve().parent / "generated"


def _loguniform(rng: np.random.Generator, low: float, high: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _fourier(rng: np.random.Generator) -> np.ndarray:
    modes = int(rng.integers(3, 13))
    k = np.arange(1, modes + 1)
    decay = k ** -rng.uniform(0.0, 1.5)
    a, b = rng.normal(size=(2, modes)) * decay
    v = (a[:, None] * np.cos(np.outer(k, np.pi * X / 15))).sum(0)
    v += (b[:, None] * np.sin(np.outer(k, np.pi * X / 15))).sum(0)
    v *= _loguniform(rng, 0.05, 3.0) / max(np.abs(v).max(), 1e-12)
    # Fast modes of large amplitude would exceed the curvature the grid resolves: scale them down.
    v *= min(1.0, MAX_CURVATURE / max(_max_curvature(v), 1e-12))
    if rng.random() < 0.5:
        v += (np.abs(X) / rng.uniform(8, 16)) ** rng.choice([2, 4, 6, 8, 10])
    return v


def _max_curvature(v: np.ndarray) -> float:
    return float(np.abs(np.diff(v, 2)).max() / schrodinger.DX**2)


def _wells(rng: np.random.Generator) -> np.ndarray:
    v = np.zeros_like(X)
    for _ in range(int(rng.integers(1, 5))):
        width = _loguniform(rng, 0.6, 5.0)
        # depth / width**2 is the curvature scale of a Gaussian well: keep it resolvable.
        depth = min(_loguniform(rng, 0.03, 4.0), 0.9 * MAX_CURVATURE * width**2)
        sign = -1.0 if rng.random() < 0.7 else 1.0
        power = 2.0 if rng.random() < 0.6 else rng.uniform(2, 6)
        centre = rng.uniform(-10, 10)
        # 40%: asymmetric, a different width on the right of the centre.
        right = width * _loguniform(rng, 0.4, 2.5) if rng.random() < 0.4 else width
        u = np.abs((X - centre) / np.where(centre < X, right, width))
        v += sign * depth * np.exp(-(u**power) / 2)
    return v


def _poly(rng: np.random.Generator) -> np.ndarray:
    u = X - rng.uniform(-6, 6)
    a2 = _loguniform(rng, 0.002, MAX_CURVATURE / 2)
    a4 = _loguniform(rng, 1e-6, 0.05) if rng.random() < 0.5 else 0.0
    # |a3| < sqrt(a2 a4) keeps a single minimum (a3 = 0 without a quartic term).
    a3 = rng.uniform(-1, 1) * np.sqrt(a2 * a4)
    a1 = rng.uniform(-0.2, 0.2) if rng.random() < 0.3 else 0.0
    v = a2 * u**2 + a3 * u**3 + a4 * u**4 + a1 * u
    return np.asarray(np.minimum(v, _loguniform(rng, 5.0, 200.0)))


def _logistic(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1 + np.tanh(z / 2)))


def _steps(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(0, 4)
    smooth = _loguniform(rng, 0.25, 2.0)
    if kind == 0:  # a step
        height = rng.uniform(-3, 3)
        return np.asarray(height * _logistic((X - rng.uniform(-10, 10)) / smooth))
    if kind == 1:  # a box: well or barrier
        width = rng.uniform(1.5, 16)
        left = rng.uniform(-14, 14 - width)
        depth = _loguniform(rng, 0.03, 4.0) * (-1.0 if rng.random() < 0.75 else 1.0)
        # The edge of a box of smoothing s has curvature ~ depth / (10 s**2): keep it resolvable.
        smooth = max(smooth, np.sqrt(abs(depth) / (10 * MAX_CURVATURE)))
        box = _logistic((X - left) / smooth) - _logistic((X - left - width) / smooth)
        return np.asarray(depth * box)
    if kind == 2:
        return np.asarray(rng.uniform(-0.3, 0.3) * X)  # a ramp (constant field)
    # A soft exponential wall on one side (cut high up), with a well beside it half of the time.
    length = rng.uniform(1.1, 5.0)
    side = rng.choice([-1.0, 1.0])
    x0 = rng.uniform(-8, 8)
    wall = np.minimum(np.exp(np.clip(side * (X - x0) / length, -50, 50)), _loguniform(rng, 5, 200))
    if rng.random() < 0.5:
        width = _loguniform(rng, 0.8, 5.0)
        depth = min(_loguniform(rng, 0.1, 4.0), 0.9 * MAX_CURVATURE * width**2)
        wall = wall - depth * np.exp(-0.5 * ((X - x0 + side * 1.5 * width) / width) ** 2)
    return np.asarray(wall)


_SHAPES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "fourier": _fourier,
    "wells": _wells,
    "poly": _poly,
    "steps": _steps,
}
#: The families, in the order of their integer labels in a dataset's ``family`` array.
FAMILIES: tuple[str, ...] = ("notebook", *_SHAPES)
#: How often each family is the primary potential.
_WEIGHTS = np.array([0.15, 0.25, 0.25, 0.2, 0.15])


def sample(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` potentials (float64 (count, 64)) and their family labels (int64 (count,)).

    Deterministic in ``(count, seed)``; chunk k of :func:`generate` calls it with
    ``seed * 1000 + k``, so a dataset is the same whatever the number of workers.
    """
    rng = np.random.default_rng(seed)
    family = rng.choice(len(FAMILIES), size=count, p=_WEIGHTS)
    V = np.empty((count, schrodinger.GRID_POINTS))
    notebook = schrodinger.sample_potentials(int((family == 0).sum()), _NOTEBOOK_SEED + seed)
    shapes = list(_SHAPES.values())
    j = 0
    for i in range(count):
        if family[i] == 0:
            v = notebook[j].copy()
            j += 1
        else:
            v = shapes[family[i] - 1](rng)
        if rng.random() < 0.5:  # a weaker second component of any other shape
            v = v + rng.uniform(0.05, 0.5) * shapes[int(rng.integers(0, len(shapes)))](rng)
        V[i] = v + rng.uniform(-OFFSET, OFFSET)
    return V, family.astype(np.int64)


@dataclass(frozen=True, eq=False)
class BroadDataset:
    """Potentials ``V`` (N, 64), densities ``n`` (N, 64), energies ``E`` (N,), ``family`` (N,)."""

    V: np.ndarray
    n: np.ndarray
    E: np.ndarray
    family: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.E)

    def subset(self, index: Any) -> BroadDataset:
        return BroadDataset(
            V=self.V[index], n=self.n[index], E=self.E[index], family=self.family[index],
            seed=self.seed,
        )  # fmt: skip


def _chunk(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count, seed = args
    V, family = sample(count, seed)
    E, n = schrodinger.solve_ground_state(V)
    return V, n, E, family


def generate(
    count: int, seed: int, *, progress: bool = False, workers: int | None = None
) -> BroadDataset:
    """``count`` systems of base seed ``seed``, solved exactly (chunks spread over ``workers``)."""
    if count < 0 or seed < 0:
        raise ValueError(f"count and seed must be >= 0, got count={count}, seed={seed}")
    jobs = [
        (min(_CHUNK, count - s), seed * 1000 + k) for k, s in enumerate(range(0, count, _CHUNK))
    ]
    n_workers = schrodinger._workers(workers)
    pool = schrodinger._pool(n_workers) if n_workers > 1 and len(jobs) > 1 else None
    parts = []
    try:
        results = map(_chunk, jobs) if pool is None else pool.map(_chunk, jobs)
        bar = schrodinger._progress_bar(count, progress)
        for part in results:
            parts.append(part)
            if bar is not None:
                bar.update(len(part[2]))
        if bar is not None:
            bar.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not parts:
        empty = np.empty((0, schrodinger.GRID_POINTS))
        return BroadDataset(empty, empty.copy(), np.empty(0), np.empty(0, np.int64), seed)
    V, n, E, family = (np.concatenate(p) for p in zip(*parts, strict=True))
    return BroadDataset(V=V, n=n, E=E, family=family, seed=seed)


def default_path(count: int, seed: int) -> Path:
    return _GENERATED / f"broad_seed{seed}_n{count}.npz"


def save(ds: BroadDataset, path: Path) -> Path:
    def write(f: Any) -> None:
        np.savez_compressed(
            f, V=ds.V, n=ds.n, E=ds.E, family=ds.family,
            seed=np.array(ds.seed), format_version=np.array(_FORMAT_VERSION),
        )  # fmt: skip

    schrodinger._atomic_write(path, write)
    return path


def load(path: Path) -> BroadDataset:
    """Read a dataset written by :func:`save`; :class:`DatasetError` if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # missing file, zip and format errors alike
        raise DatasetError(
            f"{path}: not a readable broad dataset ({type(exc).__name__}: {exc}); "
            "regenerate it with `python -m data.potentials`"
        ) from None
    if int(arrays.get("format_version", -1)) != _FORMAT_VERSION:
        raise DatasetError(f"{path}: expected format_version {_FORMAT_VERSION}; regenerate it")
    count = len(arrays["E"])
    if arrays["V"].shape != (count, schrodinger.GRID_POINTS) or arrays["n"].shape != (
        count,
        schrodinger.GRID_POINTS,
    ):
        raise DatasetError(f"{path}: V and n must be ({count}, 64); regenerate it")
    return BroadDataset(
        V=arrays["V"], n=arrays["n"], E=arrays["E"], family=arrays["family"],
        seed=int(arrays["seed"]),
    )  # fmt: skip


def load_or_generate(count: int, seed: int, *, progress: bool = True) -> BroadDataset:
    """The cached dataset under ``data/generated/`` if valid, else generate and cache it."""
    path = default_path(count, seed)
    if path.is_file():
        try:
            ds = load(path)
        except DatasetError:
            pass
        else:
            if len(ds) == count and ds.seed == seed:
                return ds
    ds = generate(count, seed, progress=progress)
    save(ds, path)
    return ds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.potentials",
        description="Generate the broad one-electron training set (many potential shapes).",
    )
    parser.add_argument("--count", type=int, default=300_000, help="systems (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="base seed (default %(default)s)")
    parser.add_argument("--out", type=Path, help="the .npz to write (default: data/generated/)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.count < 0 or args.seed < 0:
        parser.error(f"--count and --seed must be >= 0, got {args.count} and {args.seed}")
    ds = generate(args.count, args.seed, progress=not args.no_progress, workers=args.workers)
    out = args.out or default_path(args.count, args.seed)
    save(ds, out)
    counts = {f: int((ds.family == i).sum()) for i, f in enumerate(FAMILIES)}
    print(f"wrote {len(ds)} systems (seed {args.seed}) to {out}: {counts}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
