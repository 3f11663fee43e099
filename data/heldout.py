"""Held-out evaluation families of the v2 energy models: analytic potentials that appear in no
training set, drawn by this module only (its own code path and seeds, independent of
``data.potentials``), plus the notebook's own test split.

In-domain families (what the models are evaluated on; parameters bounded to what the 64-point
grid resolves, see ``data.potentials``):

=================== ==========================================================================
harmonic            ``w**2 (x - x0)**2 / 2``, w in [0.25, 2], x0 in [-2, 2]
double_symmetric    ``h ((x/b)**2 - 1)**2``, h in [0.05, 1.5] Ha, b in [2, 5] bohr
double_asymmetric   the same plus a tilt ``t h x / b``, t in [0.05, 0.5]
morse               ``D (1 - exp(-a (x - x0)))**2 - D``, D in [0.5, 5], 2 D a**2 <= 4, the wall
                    cut at 100 Ha
soft_coulomb        ``-Z / sqrt((x - x0)**2 + a**2)``, Z in [0.5, 2], Z / a**3 <= 4, a <= 2.5
poschl_teller       ``-l (l + 1) / (2 a**2) sech((x - x0) / a)**2``, l in [0.5, 3], a in [1, 3],
                    curvature l (l + 1) / a**4 <= 4
square              smoothed square wells, widths 1.5 to 12 bohr, depths 0.1 to 3 Ha
random_gp           Gaussian random fields (squared-exponential covariance, length 1.5 to 4 bohr,
                    amplitude 0.1 to 1.5 Ha) in a harmonic trap of w in [0.1, 0.3]: a kind of
                    random smooth potential not used in training (those are Fourier series)
notebook_test       the notebook's test split (samples 75,000-99,999 of seed 1)
=================== ==========================================================================

Out-of-domain families (what the domain check must flag; mostly what the grid cannot resolve):
``noise`` (white noise of 0.3 to 2 Ha per grid point), ``narrow_deep`` (Gaussian wells 10 to 60 Ha
deep, 0.25 to 0.5 bohr wide), ``coulomb_sharp`` (soft-Coulomb with a in [0.05, 0.3]),
``harmonic_steep`` (w in [4, 8]).

Every family adds a constant ``c ~ U(-1, 1)`` Ha. :func:`resolution_error` compares the 64-point
solver with the continuum limit (fine grids, Richardson) on the analytic potentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from data import schrodinger

X = schrodinger.GRID
#: Base seed of this module's draws; family i uses ``default_rng([SEED, i, seed])``.
SEED = 20_261_201

#: Where the Morse wall is cut (Ha).
MORSE_WALL = 100.0

Potential = Callable[[np.ndarray], np.ndarray]


def _logistic(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1 + np.tanh(z / 2)))


def _harmonic(rng: np.random.Generator) -> Potential:
    w, x0 = rng.uniform(0.25, 2.0), rng.uniform(-2, 2)
    return lambda x: 0.5 * w**2 * (x - x0) ** 2


def _double(tilted: bool) -> Callable[[np.random.Generator], Potential]:
    def draw(rng: np.random.Generator) -> Potential:
        h, b = rng.uniform(0.05, 1.5), rng.uniform(2, 5)
        t = rng.uniform(0.05, 0.5) * rng.choice([-1, 1]) if tilted else 0.0
        return lambda x: h * ((x / b) ** 2 - 1) ** 2 + t * h * x / b

    return draw


def _morse(rng: np.random.Generator) -> Potential:
    D = rng.uniform(0.5, 5)
    a = rng.uniform(0.25, np.sqrt(2 / D))
    x0 = rng.uniform(-3, 3)
    # The repulsive wall grows like exp(2 a (15 + x0)), up to 1e17 Ha at x = -15: cut it at
    # MORSE_WALL (the electron never gets there; unbounded values cost the solver its precision).
    return lambda x: np.minimum(D * (1 - np.exp(-a * (x - x0))) ** 2 - D, MORSE_WALL)


def _soft_coulomb(rng: np.random.Generator) -> Potential:
    Z = rng.uniform(0.5, 2)
    a = rng.uniform(max(0.7, (Z / 4) ** (1 / 3)), 2.5)
    x0 = rng.uniform(-3, 3)
    return lambda x: -Z / np.sqrt((x - x0) ** 2 + a**2)


def _poschl_teller(rng: np.random.Generator) -> Potential:
    while True:
        lam, a = rng.uniform(0.5, 3), rng.uniform(1, 3)
        if lam * (lam + 1) / a**4 <= 4:
            break
    x0 = rng.uniform(-3, 3)
    return lambda x: -lam * (lam + 1) / (2 * a**2) / np.cosh((x - x0) / a) ** 2


def _square(rng: np.random.Generator) -> Potential:
    L, D = rng.uniform(1.5, 12), rng.uniform(0.1, 3)
    s = max(rng.uniform(0.3, 0.6), np.sqrt(D / 40))
    x0 = rng.uniform(-2, 2)
    return lambda x: -D * (_logistic((x - x0 + L / 2) / s) - _logistic((x - x0 - L / 2) / s))


def _random_gp(rng: np.random.Generator) -> Potential:
    length, amplitude, w = rng.uniform(1.5, 4), rng.uniform(0.1, 1.5), rng.uniform(0.1, 0.3)
    # Knots every 0.25 bohr, interpolated: a smooth field defined on any grid.
    knots = np.linspace(-15, 15, 121)
    cov = np.exp(-0.5 * ((knots[:, None] - knots[None, :]) / length) ** 2)
    values = (
        amplitude
        * np.linalg.cholesky(cov + 1e-8 * np.eye(len(knots)))
        @ rng.normal(size=len(knots))
    )
    return lambda x: np.interp(x, knots, values) + 0.5 * w**2 * x**2


def _noise(rng: np.random.Generator) -> Potential:
    values, trap = rng.uniform(0.3, 2) * rng.normal(size=X.size), rng.uniform(0.05, 0.3)
    return lambda x: np.interp(x, X, values) + 0.5 * trap**2 * x**2


def _narrow_deep(rng: np.random.Generator) -> Potential:
    D, w, x0 = rng.uniform(10, 60), rng.uniform(0.25, 0.5), rng.uniform(-5, 5)
    return lambda x: -D * np.exp(-0.5 * ((x - x0) / w) ** 2)


def _coulomb_sharp(rng: np.random.Generator) -> Potential:
    Z, a, x0 = rng.uniform(0.5, 2), rng.uniform(0.05, 0.3), rng.uniform(-3, 3)
    return lambda x: -Z / np.sqrt((x - x0) ** 2 + a**2)


def _harmonic_steep(rng: np.random.Generator) -> Potential:
    w = rng.uniform(4, 8)
    return lambda x: 0.5 * w**2 * x**2


IN_DOMAIN: dict[str, Callable[[np.random.Generator], Potential]] = {
    "harmonic": _harmonic,
    "double_symmetric": _double(False),
    "double_asymmetric": _double(True),
    "morse": _morse,
    "soft_coulomb": _soft_coulomb,
    "poschl_teller": _poschl_teller,
    "square": _square,
    "random_gp": _random_gp,
}
OUT_OF_DOMAIN: dict[str, Callable[[np.random.Generator], Potential]] = {
    "noise": _noise,
    "narrow_deep": _narrow_deep,
    "coulomb_sharp": _coulomb_sharp,
    "harmonic_steep": _harmonic_steep,
}
_ALL = {**IN_DOMAIN, **OUT_OF_DOMAIN}
NOTEBOOK_TEST = "notebook_test"
#: Every family name, in-domain first (the notebook's test split last of those).
FAMILIES: tuple[str, ...] = (*IN_DOMAIN, NOTEBOOK_TEST, *OUT_OF_DOMAIN)


@dataclass(frozen=True, eq=False)
class Family:
    """``count`` systems of one family: ``V`` (N, 64), exact ``E`` (N,) and ``n`` (N, 64)."""

    name: str
    V: np.ndarray
    E: np.ndarray
    n: np.ndarray
    in_domain: bool


def potentials(name: str, count: int, seed: int = 0) -> tuple[np.ndarray, list[Potential]]:
    """``count`` potentials of family ``name`` on the grid, and the functions they sample."""
    if name not in _ALL:
        raise ValueError(f"unknown family {name!r}; choose from {sorted(_ALL)}")
    rng = np.random.default_rng([SEED, list(_ALL).index(name), seed])
    functions: list[Potential] = []
    V = np.empty((count, X.size))
    for i in range(count):
        functions.append(_shifted(_ALL[name](rng), float(rng.uniform(-1, 1))))
        V[i] = functions[-1](X)
    return V, functions


def _shifted(f: Potential, c: float) -> Potential:
    return lambda x: f(x) + c


def family(name: str, count: int, seed: int = 0) -> Family:
    """``count`` systems of family ``name`` (the notebook's test split: its first ``count``)."""
    if name == NOTEBOOK_TEST:
        ds = schrodinger.load_or_generate() if count > 2000 else None
        if ds is not None:
            test = ds.split("test").subset(0, count)
            return Family(name, test.V, test.E, test.n, True)
        V = schrodinger.sample_potentials(count, 1 + 75_000)
    else:
        V, _ = potentials(name, count, seed)
    E, n = schrodinger.solve_ground_state(V)
    return Family(name, V, E, n, name not in OUT_OF_DOMAIN)


def families(count: int, seed: int = 0, *, notebook_count: int = 25_000) -> dict[str, Family]:
    """Every family, ``count`` systems each (``notebook_count`` of the notebook's test split)."""
    return {
        name: family(name, notebook_count if name == NOTEBOOK_TEST else count, seed)
        for name in FAMILIES
    }


def _continuum_energy(f: Potential, points: int) -> float:
    """Lowest eigenvalue of -1/2 d2/dx2 + f on [-15, 15], Dirichlet ends, 3-point stencil."""
    x = np.linspace(-15, 15, points + 2)[1:-1]
    h = x[1] - x[0]
    diagonal = 1 / h**2 + f(x)
    off = np.full(points - 1, -0.5 / h**2)
    return float(eigh_tridiagonal(diagonal, off, select="i", select_range=(0, 0))[0][0])


def resolution_error(name: str, count: int = 50, seed: int = 0) -> np.ndarray:
    """E(64-point solver) - E(continuum) (Ha) for ``count`` systems of family ``name``.

    The continuum limit is Richardson's extrapolation of 3-point solutions on 2,048 and 4,096
    interior points (error ~ 1e-8 Ha here).
    """
    V, functions = potentials(name, count, seed)
    E, _ = schrodinger.solve_ground_state(V)
    fine = np.array(
        [(4 * _continuum_energy(f, 4096) - _continuum_energy(f, 2048)) / 3 for f in functions]
    )
    return np.asarray(E - fine)
