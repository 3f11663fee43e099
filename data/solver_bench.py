"""Benchmark of the one-electron generator against the straightforward dense solver.

``python -m data.solver_bench`` times ``data.schrodinger.generate`` on the full dataset (100,000
systems by default, all CPU cores) and, in the same run, the per-sample dense
``numpy.linalg.eigh`` loop on the first ``--dense-subset`` systems, extrapolated linearly to the
full count (it would take minutes). It prints both times, their ratio, the largest difference in
E and n between the two solvers on the subset, and the peak memory.
"""

from __future__ import annotations

import os

# One BLAS thread per process, unless told otherwise: with 64 x 64 matrices, OpenBLAS threads only
# fight each other (and any other load) and make the dense loop erratically slow (up to 50x),
# which would flatter the ratio. Must be set before NumPy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from data import schrodinger


def dense_reference(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward solver: build each 64 x 64 Hamiltonian, full numpy.linalg.eigh."""
    T = schrodinger.kinetic_matrix()
    E = np.empty(len(V))
    n = np.empty_like(V)
    for k in range(len(V)):
        w, v = np.linalg.eigh(T + np.diag(V[k]))
        E[k] = w[0]
        n[k] = v[:, 0] ** 2 / (np.sum(v[:, 0] ** 2) * schrodinger.DX)
    return E, n


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest worker process, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.solver_bench", description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="systems to generate")
    parser.add_argument("--seed", type=int, default=1, help="base seed (default: 1)")
    parser.add_argument(
        "--dense-subset",
        type=int,
        default=2_000,
        help="systems the dense eigh loop runs on; its time is extrapolated to --count",
    )
    parser.add_argument("--workers", type=int, default=None, help="generate()'s worker processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    start = time.perf_counter()
    ds = schrodinger.generate(args.count, args.seed, workers=args.workers)
    fast_s = time.perf_counter() - start
    own_mib, worker_mib = peak_rss_mib()

    subset = min(args.dense_subset, args.count)
    start = time.perf_counter()
    E_dense, n_dense = dense_reference(ds.V[:subset])
    dense_subset_s = time.perf_counter() - start
    dense_full_s = dense_subset_s * args.count / subset

    # The banded solver alone, one process, on the same subset: the per-core speed-up.
    start = time.perf_counter()
    schrodinger.solve_ground_state(ds.V[:subset], workers=1)
    banded_subset_s = time.perf_counter() - start

    dE = float(np.abs(ds.E[:subset] - E_dense).max())
    dn = float(np.abs(ds.n[:subset] - n_dense).max())
    results = {
        "count": args.count,
        "load_average_before": load_before,
        "seed": args.seed,
        "generate_s": round(fast_s, 3),
        "dense_subset": subset,
        "dense_subset_s": round(dense_subset_s, 3),
        "dense_extrapolated_s": round(dense_full_s, 1),
        "speedup": round(dense_full_s / fast_s, 1),
        "banded_vs_dense_per_core": round(dense_subset_s / banded_subset_s, 2),
        "max_abs_dE_Ha": dE,
        "max_abs_dn_per_bohr": dn,
        "peak_rss_main_mib": round(own_mib, 1),
        "peak_rss_largest_worker_mib": round(worker_mib, 1),
    }
    print(
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
        f"load average before: {load_before}"
    )
    print(f"generate({args.count}, seed={args.seed}):        {fast_s:8.2f} s  (all cores)")
    print(
        f"dense eigh loop on {subset} systems:     {dense_subset_s:8.2f} s  "
        f"-> extrapolated to {args.count}: {dense_full_s:.1f} s"
    )
    print(f"speed-up (dense extrapolated / generate): {dense_full_s / fast_s:8.1f} x")
    print(
        f"banded solver alone, 1 process, {subset} systems: {banded_subset_s:.2f} s "
        f"({dense_subset_s / banded_subset_s:.2f} x the dense loop per core)"
    )
    print(f"largest |E - E_dense| on the subset:      {dE:.2e} Ha")
    print(f"largest |n - n_dense| on the subset:      {dn:.2e} 1/bohr")
    print(
        f"peak memory: main process {own_mib:.0f} MiB, largest worker {worker_mib:.0f} MiB "
        "(ru_maxrss)"
    )
    if args.count >= 2 and args.seed == 1:
        print(f"self-check: E[0] = {ds.E[0]!r}, E[1] = {ds.E[1]!r}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
