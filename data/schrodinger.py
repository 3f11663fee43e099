"""The one-electron dataset of the notebook (parts 3 and 4), reproduced value for value.

Each sample is a random 1-D external potential V(x) on 64 grid points, the ground-state energy E of
one electron in it and its density n(x), in Hartree atomic units. The specification (issue 2):

* grid ``x = linspace(-15, 15, 64)`` bohr, ``dx = 30/63``;
* sample k with base seed s0 uses ``s = s0 + k``: ``np.random.seed(s)`` then
  ``a = (np.random.random(3) - 0.5) * 2 * 15 / 3``; ``np.random.seed(s + 1234)`` then ``b`` the
  same way; ``V = 1e-11 x**10 + sum_i 0.0795 (a_i cos(i pi x / 15) + b_i sin(i pi x / 15))``;
* ``H = -1/2 D2 + diag(V)`` with the 13-point central second derivative, truncated at the grid ends;
* E is the lowest eigenvalue, ``n = phi_0**2`` normalised so that ``sum(n) * dx = 1``.

The solver is LAPACK's banded ``dsbevx`` (via SciPy) asked for the lowest eigenpair only; the
100,000-sample dataset is generated in chunks spread over the CPU cores.

Command line: ``python -m data.schrodinger --count 100000 --seed 1 --out PATH [--pickles DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import secrets
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import lapack

from data.errors import DatasetError

__all__ = [
    "DEFAULT_DATASET_PATH",
    "DX",
    "GRID",
    "GRID_POINTS",
    "SPLITS",
    "STENCIL",
    "OneElectronDataset",
    "default_dataset_path",
    "export_pickles",
    "generate",
    "kinetic_matrix",
    "load_npz",
    "load_or_generate",
    "load_pickles_trusted",
    "sample_potentials",
    "save_npz",
    "solve_ground_state",
    "splits",
]

log = logging.getLogger(__name__)

GRID_POINTS = 64
GRID: np.ndarray = np.linspace(-15, 15, GRID_POINTS)
DX: float = 30 / 63

#: The 13-point central second-derivative coefficients (times 831600), offsets -6 .. +6.
STENCIL = np.array(
    [-50, 864, -7425, 44000, -222750, 1425600, -2480478, 1425600, -222750, 44000, -7425, 864, -50],
    dtype=np.float64,
)
_HALF_BANDWIDTH = (len(STENCIL) - 1) // 2  # 6

#: Potential model constants.
_AMPLITUDE = 0.0795
_CONFINEMENT = 1e-11  # coefficient of x**10, keeps the electron away from the grid ends
_SEED_OFFSET_B = 1234
_MAX_LEGACY_SEED = 2**32 - 1

#: The notebook's split as fractions of the dataset: [0, 1/2), [1/2, 3/4), [3/4, 1).
SPLITS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.5),
    "validation": (0.5, 0.75),
    "test": (0.75, 1.0),
}

_REPO_ROOT = Path(__file__).resolve().parent.parent
_GENERATED_DIR = _REPO_ROOT / "data" / "generated"

_NPZ_FORMAT_VERSION = 1
_PICKLE_NAMES = {"V": "V.db", "n": "density.db", "E": "E.db"}

# Samples per unit of work: big enough to amortise the process hop, small enough for a smooth
# progress bar and bounded memory per worker.
_CHUNK = 2500
# Below this many samples a process pool costs more than it saves.
_MIN_PARALLEL = 10_000


def default_dataset_path(count: int = 100_000, seed: int = 1) -> Path:
    """Where :func:`load_or_generate` caches the dataset of these parameters (git-ignored)."""
    return _GENERATED_DIR / f"one_electron_seed{seed}_n{count}.npz"


DEFAULT_DATASET_PATH: Path = default_dataset_path(100_000, 1)


# --------------------------------------------------------------------------------------------
# Potentials
# --------------------------------------------------------------------------------------------


def _check_count_seed(count: int, seed: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    # np.random.seed accepts 0 .. 2**32 - 1, and the last sample also seeds with s + 1234.
    if seed < 0 or (count > 0 and seed + count - 1 + _SEED_OFFSET_B > _MAX_LEGACY_SEED):
        raise ValueError(
            f"seed must satisfy 0 <= seed and seed + count - 1 + {_SEED_OFFSET_B} <= 2**32 - 1 "
            f"(NumPy's legacy seeding range), got seed={seed}, count={count}"
        )


def _coefficients(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (count, 3) Fourier coefficients a and b of samples seed .. seed + count - 1."""
    # A private RandomState is the same generator as np.random's global one (which *is* a
    # RandomState), so the values are the notebook's, without touching the caller's global state.
    rs = np.random.RandomState()
    raw = np.empty((count, 2, 3), dtype=np.float64)
    for k in range(count):
        s = seed + k
        rs.seed(s)
        raw[k, 0] = rs.random_sample(3)
        rs.seed(s + _SEED_OFFSET_B)
        raw[k, 1] = rs.random_sample(3)
    scaled = (raw - 0.5) * 2 * 15 / 3
    return scaled[:, 0], scaled[:, 1]


# cos(i pi x / 15) and sin(i pi x / 15) for i = 0, 1, 2: rows of the basis, shape (3, 64).
_COS = np.stack([np.cos(i * np.pi * GRID / 15) for i in range(3)])
_SIN = np.stack([np.sin(i * np.pi * GRID / 15) for i in range(3)])


def sample_potentials(count: int, seed: int = 1) -> np.ndarray:
    """The potentials of samples ``seed .. seed + count - 1``: float64 array of shape (count, 64).

    Sample k draws its coefficients from NumPy's legacy Mersenne Twister seeded with ``seed + k``
    and ``seed + k + 1234`` (see the module docstring), so sample k of any run with the same base
    seed is the same, whatever ``count`` is.
    """
    _check_count_seed(count, seed)
    a, b = _coefficients(int(count), int(seed))
    # Term by term in the order i = 0, 1, 2: every element sees the same floating-point
    # operations as a per-sample loop would.
    V = np.broadcast_to(_CONFINEMENT * GRID**10, (count, GRID_POINTS)).copy()
    for i in range(3):
        V += _AMPLITUDE * (a[:, i : i + 1] * _COS[i] + b[:, i : i + 1] * _SIN[i])
    return V


# --------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------


def kinetic_matrix() -> np.ndarray:
    """The dense kinetic-energy matrix ``-1/2 D2`` (64 x 64), stencil truncated at the grid ends.

    ``H = kinetic_matrix() + np.diag(V)``. Used by the tests and the benchmark; the solver itself
    works on the banded form.
    """
    coefficients = STENCIL / 831600 / DX**2
    T = np.zeros((GRID_POINTS, GRID_POINTS))
    for offset in range(-_HALF_BANDWIDTH, _HALF_BANDWIDTH + 1):
        T += -0.5 * coefficients[offset + _HALF_BANDWIDTH] * np.eye(GRID_POINTS, k=offset)
    return T


def _kinetic_band() -> np.ndarray:
    """``-1/2 D2`` in LAPACK's upper band storage: ``ab[6 + i - j, j] = T[i, j]`` for i <= j."""
    coefficients = STENCIL / 831600 / DX**2
    ab = np.zeros((_HALF_BANDWIDTH + 1, GRID_POINTS))
    for offset in range(_HALF_BANDWIDTH + 1):
        ab[_HALF_BANDWIDTH - offset, offset:] = -0.5 * coefficients[_HALF_BANDWIDTH + offset]
    return ab


_KINETIC_BAND = _kinetic_band()


def _as_potentials(V: Any) -> np.ndarray:
    """Validate the solver's input and return it as a float64 (N, 64) array."""
    expected = f"a real array of shape (N, {GRID_POINTS}) or ({GRID_POINTS},)"
    try:
        raw = np.asarray(V)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"V must be {expected}, got a ragged sequence ({exc})") from None
    # Strings and complex numbers would convert to float64 silently (or lossily): refuse them.
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"V must be {expected}, got an array of dtype {raw.dtype}")
    arr = raw.astype(np.float64, copy=False)
    if arr.ndim not in (1, 2) or arr.shape[-1] != GRID_POINTS:
        raise ValueError(
            f"V must have shape (N, {GRID_POINTS}) or ({GRID_POINTS},) "
            f"(the potential on linspace(-15, 15, {GRID_POINTS})), got shape {arr.shape}"
        )
    arr = arr.reshape(-1, GRID_POINTS)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"V must contain only finite values, got {arr[tuple(bad)]} at sample {bad[0]}, "
            f"grid point {bad[1]}"
        )
    return arr


def _solve_chunk(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest eigenpair of ``-1/2 D2 + diag(V[k])`` for each row: LAPACK dsbevx, one at a time."""
    count = V.shape[0]
    E = np.empty(count)
    n = np.empty((count, GRID_POINTS))
    dsbevx = lapack.dsbevx
    for k in range(count):
        ab = _KINETIC_BAND.copy()
        ab[_HALF_BANDWIDTH] += V[k]
        # range=2: eigenvalues il..iu (1-based), i.e. only the lowest one and its vector.
        w, z, m, _ifail, info = dsbevx(
            ab, 0.0, 0.0, 1, 1, compute_v=1, range=2, lower=0, overwrite_ab=1
        )
        if info != 0 or m != 1:
            raise np.linalg.LinAlgError(
                f"LAPACK dsbevx failed on sample {k} (info={info}, eigenvalues found={m})"
            )
        E[k] = w[0]
        density = z[:, 0] ** 2
        n[k] = density / (density.sum() * DX)
    return E, n


def _workers(requested: int | None) -> int:
    """``requested``, or by default one per available core when forking is safe, else 1."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be >= 1, got {requested}")
        return requested
    if not _fork_is_safe():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _fork_is_safe() -> bool:
    # Forking a process that runs other threads (TensorFlow's, a server's) can deadlock the child
    # on a lock held by a thread that was not copied; spawn/forkserver would instead need the
    # caller's `if __name__ == "__main__"` guard. So by default we only fork a single-threaded
    # process and otherwise stay in-process (about twice slower; the dataset is cached anyway).
    import multiprocessing
    import threading

    return (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
    )


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    # fork: no re-import of numpy/scipy and no main-module guard needed in the caller.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def solve_ground_state(V: Any, *, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact ground state of one electron in the potential(s) ``V`` on :data:`GRID`.

    ``V``: array-like of shape (N, 64), or (64,) which is treated as a batch of one.
    Returns ``(E, n)``: float64 arrays of shape (N,) (Hartree) and (N, 64) (1/bohr), with
    ``n >= 0`` and ``sum(n) * DX == 1``. Raises ``ValueError`` on a wrong shape or a non-finite
    value. ``workers > 1`` spreads large batches over that many processes.
    """
    arr = _as_potentials(V)
    workers = _workers(workers)
    if workers == 1 or arr.shape[0] < _MIN_PARALLEL:
        return _solve_chunk(arr)
    chunks = [arr[i : i + _CHUNK] for i in range(0, arr.shape[0], _CHUNK)]
    with _pool(workers) as pool:
        results = list(pool.map(_solve_chunk, chunks))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OneElectronDataset:
    """Samples ``seed .. seed + count - 1``: grid ``x`` (64,), ``V`` and ``n`` (count, 64), ``E``.

    All arrays are float64. ``seed`` is the base seed the potentials were drawn with.
    """

    x: np.ndarray
    V: np.ndarray
    n: np.ndarray
    E: np.ndarray
    seed: int
    count: int

    def __post_init__(self) -> None:
        expected = {
            "x": (GRID_POINTS,),
            "V": (self.count, GRID_POINTS),
            "n": (self.count, GRID_POINTS),
            "E": (self.count,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != np.float64:
                raise ValueError(f"{name} must be a float64 numpy array, got {_describe(value)}")
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")

    def __len__(self) -> int:
        return self.count

    def subset(self, start: int, stop: int) -> OneElectronDataset:
        """Samples ``start .. stop - 1`` (views, no copy); ``seed`` becomes that of sample start."""
        start, stop, _ = slice(start, stop).indices(self.count)
        stop = max(start, stop)
        return OneElectronDataset(
            x=self.x,
            V=self.V[start:stop],
            n=self.n[start:stop],
            E=self.E[start:stop],
            seed=self.seed + start,
            count=stop - start,
        )

    def split(self, name: str) -> OneElectronDataset:
        """The notebook's ``"train"``, ``"validation"`` or ``"test"`` part (see :data:`SPLITS`)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {name!r}")
        low, high = SPLITS[name]
        return self.subset(round(low * self.count), round(high * self.count))


def splits(ds: OneElectronDataset) -> dict[str, OneElectronDataset]:
    """``{"train", "validation", "test"}``: samples [0, 50%), [50%, 75%), [75%, 100%)."""
    return {name: ds.split(name) for name in SPLITS}


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _generate_chunk(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count, seed = args
    V = sample_potentials(count, seed)
    E, n = _solve_chunk(V)
    return V, E, n


def _chunks(count: int, seed: int) -> list[tuple[int, int]]:
    return [(min(_CHUNK, count - start), seed + start) for start in range(0, count, _CHUNK)]


def generate(
    count: int = 100_000, seed: int = 1, *, progress: bool = False, workers: int | None = None
) -> OneElectronDataset:
    """Generate samples ``seed .. seed + count - 1`` (the published dataset: 100,000 from seed 1).

    ``workers`` processes share the work (default: one per available CPU core, or 1 in a process
    that runs other threads, e.g. with TensorFlow imported, where forking is unsafe); the result
    does not depend on it. ``progress`` shows a tqdm bar on stderr.
    """
    _check_count_seed(count, seed)
    count, seed = int(count), int(seed)
    n_workers = _workers(workers)
    jobs = _chunks(count, seed)
    V = np.empty((count, GRID_POINTS))
    n = np.empty((count, GRID_POINTS))
    E = np.empty(count)

    pool = _pool(n_workers) if n_workers > 1 and count >= _MIN_PARALLEL else None
    try:
        # Submitting starts the workers, before tqdm starts its monitor thread.
        results = map(_generate_chunk, jobs) if pool is None else pool.map(_generate_chunk, jobs)
        bar = _progress_bar(count, progress)
        try:
            start = 0
            for V_chunk, E_chunk, n_chunk in results:
                stop = start + len(E_chunk)
                V[start:stop], E[start:stop], n[start:stop] = V_chunk, E_chunk, n_chunk
                start = stop
                if bar is not None:
                    bar.update(len(E_chunk))
        finally:
            if bar is not None:
                bar.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return OneElectronDataset(x=GRID.copy(), V=V, n=n, E=E, seed=seed, count=count)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="system", desc="one-electron systems", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask (mkstemp would leave the file private, 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(ds: OneElectronDataset, path: str | Path) -> Path:
    """Write ``ds`` as a compressed .npz: ``x``, ``V``, ``n``, ``E`` (float64) and parameters.

    The parameters are 0-d int64 arrays ``seed``, ``count``, ``grid_points`` and
    ``format_version``, so the file loads with ``allow_pickle=False``. Returns the path.
    """
    path = Path(path)

    def write(f: Any) -> None:
        np.savez_compressed(
            f,
            x=ds.x,
            V=ds.V,
            n=ds.n,
            E=ds.E,
            seed=np.array(ds.seed, dtype=np.int64),
            count=np.array(ds.count, dtype=np.int64),
            grid_points=np.array(GRID_POINTS, dtype=np.int64),
            format_version=np.array(_NPZ_FORMAT_VERSION, dtype=np.int64),
        )

    _atomic_write(path, write)
    return path


def load_npz(path: str | Path) -> OneElectronDataset:
    """Read a dataset written by :func:`save_npz`, checking every array.

    Raises :class:`DatasetError` naming the file and the problem when it is missing, unreadable,
    or its contents are not a consistent one-electron dataset on :data:`GRID`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such file; expected a one-electron dataset (.npz). Create it with "
            f"`python -m data.schrodinger --out {path}` or data.schrodinger.load_or_generate()"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile, zlib and format errors alike
        raise DatasetError(
            f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); "
            "delete it and regenerate it with `python -m data.schrodinger`"
        ) from None
    return _dataset_from_arrays(contents, str(path))


def _dataset_from_arrays(contents: dict[str, np.ndarray], source: str) -> OneElectronDataset:
    def fail(what: str) -> DatasetError:
        return DatasetError(
            f"{source}: {what}; regenerate it with `python -m data.schrodinger` "
            "(or data.schrodinger.load_or_generate())"
        )

    required = ["x", "V", "n", "E", "seed", "count", "format_version"]
    missing = [key for key in required if key not in contents]
    if missing:
        raise fail(f"expected arrays {required}, missing {missing} (found {sorted(contents)})")
    version = int(contents["format_version"])
    if version != _NPZ_FORMAT_VERSION:
        raise fail(f"expected format_version {_NPZ_FORMAT_VERSION}, found {version}")
    seed, count = int(contents["seed"]), int(contents["count"])
    expected_shapes = {
        "x": (GRID_POINTS,),
        "V": (count, GRID_POINTS),
        "n": (count, GRID_POINTS),
        "E": (count,),
    }
    for key, shape in expected_shapes.items():
        value = contents[key]
        if value.dtype != np.float64 or value.shape != shape:
            raise fail(f"expected {key} as float64 {shape}, found {_describe(value)}")
        if not np.isfinite(value).all():
            raise fail(f"expected finite values in {key}, found NaN or infinity")
    if not np.array_equal(contents["x"], GRID):
        raise fail("expected x == linspace(-15, 15, 64), found a different grid")
    n = contents["n"]
    if count and (n.min() < 0 or np.abs(n.sum(axis=1) * DX - 1).max() > 1e-8):
        raise fail("expected non-negative densities with sum(n) * dx == 1, found otherwise")
    return OneElectronDataset(
        x=contents["x"], V=contents["V"], n=n, E=contents["E"], seed=seed, count=count
    )


def export_pickles(ds: OneElectronDataset, directory: str | Path) -> list[Path]:
    """Write the notebook's ``V.db``, ``density.db`` and ``E.db`` into ``directory``.

    Each file is one pickled float64 array, shapes (N, 64), (N, 64) and (N,), exactly what the
    notebook's ``pickle.load(open('V.db', 'rb'))`` expects. Returns the three paths.
    """
    directory = Path(directory)
    written = []
    for field, name in _PICKLE_NAMES.items():
        array = np.ascontiguousarray(getattr(ds, field))
        path = directory / name
        _atomic_write(path, lambda f, a=array: pickle.dump(a, f, protocol=4))
        written.append(path)
    return written


def load_pickles_trusted(directory: str | Path, *, seed: int = 1) -> OneElectronDataset:
    """Read the notebook's ``V.db``, ``density.db`` and ``E.db`` from ``directory``.

    **For trusted local files only**: unpickling runs whatever code the file asks for, so never
    call this on files from elsewhere. It is the only place in the project that unpickles. The
    pickles do not record the base seed; pass the one they were generated with (default 1).
    """
    directory = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    for field, name in _PICKLE_NAMES.items():
        path = directory / name
        if not path.is_file():
            raise DatasetError(
                f"{path}: no such file; expected the notebook's {name}. Write the three files "
                f"with `python -m data.schrodinger --pickles {directory}`"
            )
        with path.open("rb") as f:
            value = pickle.load(f)  # trusted local file, see the docstring
        per_sample = 1 if field == "E" else GRID_POINTS
        if not isinstance(value, np.ndarray) or value.ndim == 0 or value[0].size != per_sample:
            raise DatasetError(
                f"{path}: expected a pickled numpy array of shape "
                f"{'(N,)' if field == 'E' else f'(N, {GRID_POINTS})'}, found {_describe(value)}"
            )
        # The notebook reshapes to (N, 64, 1) and (N, 1); accept those too.
        arrays[field] = value.reshape(len(value), GRID_POINTS) if per_sample > 1 else value
    arrays["E"] = arrays["E"].reshape(-1)
    count = arrays["E"].shape[0]
    contents: dict[str, np.ndarray] = {
        "x": GRID.copy(),
        **{key: np.asarray(value) for key, value in arrays.items()},
        "seed": np.array(seed, dtype=np.int64),
        "count": np.array(count, dtype=np.int64),
        "format_version": np.array(_NPZ_FORMAT_VERSION, dtype=np.int64),
    }
    return _dataset_from_arrays(contents, str(directory))


def load_or_generate(
    count: int = 100_000,
    seed: int = 1,
    path: str | Path | None = None,
    *,
    progress: bool = False,
) -> OneElectronDataset:
    """The cached dataset at ``path`` (default :func:`default_dataset_path`) if it is valid for
    ``count`` and ``seed``; otherwise generate it (a few seconds) and save it there."""
    path = Path(path) if path is not None else default_dataset_path(count, seed)
    if path.is_file():
        try:
            ds = load_npz(path)
        except DatasetError as exc:
            log.warning("regenerating the dataset: %s", exc)
        else:
            if ds.count == count and ds.seed == seed:
                return ds
            log.warning(
                "regenerating %s: it holds count=%d seed=%d, wanted count=%d seed=%d",
                path,
                ds.count,
                ds.seed,
                count,
                seed,
            )
    ds = generate(count, seed, progress=progress)
    save_npz(ds, path)
    return ds


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.schrodinger",
        description=(
            "Generate the notebook's one-electron dataset: random 1-D potentials on "
            "linspace(-15, 15, 64) bohr with the exact ground-state energy and density of one "
            "electron in each. 100,000 systems from seed 1 reproduce the published dataset."
        ),
    )
    parser.add_argument(
        "--count",
        type=int,
        default=100_000,
        help="number of systems to generate (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="base seed: system k uses np.random.seed(seed + k) (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "the compressed .npz to write (default: data/generated/"
            "one_electron_seed<SEED>_n<COUNT>.npz, git-ignored)"
        ),
    )
    parser.add_argument(
        "--pickles",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the notebook's V.db, density.db and E.db pickle files into DIR",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per available CPU core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_count_seed(args.count, args.seed)
        if args.workers is not None:
            _workers(args.workers)
    except ValueError as exc:
        _parser().error(str(exc))
    out = args.out if args.out is not None else default_dataset_path(args.count, args.seed)
    ds = generate(args.count, args.seed, progress=not args.no_progress, workers=args.workers)
    save_npz(ds, out)
    print(f"wrote {ds.count} systems (seed {ds.seed}) to {out}")
    if args.pickles is not None:
        for path in export_pickles(ds, args.pickles):
            print(f"wrote {path}")
    if ds.count:
        print(f"E: min {ds.E.min():.6f}, max {ds.E.max():.6f}, mean {ds.E.mean():.6f} Ha")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
