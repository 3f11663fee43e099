"""The energy task: ground-state energies of one electron in 1-D from a potential V(x)
(`energy_from_potential`) or a density n(x) (`energy_from_density`) on the grid
linspace(-15, 15, 64) bohr, in Hartree; the exact solution from the project's own solver; the
answer by the model, the solver or either (`mode`, `service.energy_domain`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from service import energy_domain
from service.api.deps import DataPlaneDep
from service.api.negotiation import JSON, NPY, NPZ, npy_response, npz_response
from service.api.responses import JSONBody
from service.arrays import as_batch, item_index
from service.contracts import InputContract, ModelSpec, ValueRange
from service.dataplane import DataPlane
from service.energy_domain import EnergyAnswer
from service.errors import InvalidInput, ModelNotReady, describe
from service.registry import ModelVersion
from service.schemas import EXAMPLE_POTENTIAL, ModelRef, RequestSchema, array_schema
from service.tasks import base

ENERGY_FROM_POTENTIAL = "energy_from_potential"
ENERGY_FROM_DENSITY = "energy_from_density"

#: The grid of every 64-point array: linspace(-15, 15, 64) bohr.
GRID_START, GRID_STOP, GRID_POINTS = -15.0, 15.0, 64
GRID = np.linspace(GRID_START, GRID_STOP, GRID_POINTS)
DX = float(GRID[1] - GRID[0])
GRID_JSON = {"start": GRID_START, "stop": GRID_STOP, "points": GRID_POINTS, "unit": "bohr"}
#: Potentials beyond this (Hartree) are outside any physics the models or the solver can handle.
MAX_ABS_POTENTIAL = 1.0e6
#: How far `sum(n) * dx` may stray from 1 (a density of one electron).
DENSITY_NORM_TOLERANCE = 1.0e-2
POTENTIAL_RANGE: ValueRange = (-MAX_ABS_POTENTIAL, MAX_ABS_POTENTIAL, "potential (Hartree)")
DENSITY_RANGE: ValueRange = (-1e-6, 1.0 / DX, "density (1/bohr)")


def check_density_norm(densities: np.ndarray, field: str, single: bool) -> None:
    """Each density holds one electron: `sum(n) * dx = 1` within the tolerance."""
    norms = densities.sum(axis=1) * DX
    off = np.abs(norms - 1.0) > DENSITY_NORM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise InvalidInput.for_field(
            item_index(field, (i,), single),
            f"a normalised density: sum(n) * dx = 1 +- {DENSITY_NORM_TOLERANCE:g} "
            f"(dx = {DX:.6f} bohr)",
            f"sum(n) * dx = {norms[i]:.6g}",
            what="density not normalised to one electron",
        )


MODELS = (
    ModelSpec(
        ENERGY_FROM_POTENTIAL,
        "ground-state energy from a potential V(x) on the grid",
        ("/api/v1/energy/from-potential",),
        "energy",
        (InputContract("potential", (GRID_POINTS,), POTENTIAL_RANGE),),
    ),
    ModelSpec(
        ENERGY_FROM_DENSITY,
        "ground-state energy from a density n(x) on the grid",
        ("/api/v1/energy/from-density",),
        "energy",
        (InputContract("density", (GRID_POINTS,), DENSITY_RANGE, check=check_density_norm),),
    ),
)


# Wire schemas ---------------------------------------------------------------------------------

GridArrays = Annotated[
    Any,
    array_schema(
        f"One array [{GRID_POINTS}] or a batch [N, {GRID_POINTS}] of values on the grid "
        f"linspace({GRID_START:g}, {GRID_STOP:g}, {GRID_POINTS}) bohr.",
        1,
    ),
]


class Grid(BaseModel):
    """The real-space grid of every 64-point array."""

    start: float = Field(default=GRID_START, description="First point, bohr.")
    stop: float = Field(default=GRID_STOP, description="Last point, bohr.")
    points: int = GRID_POINTS
    unit: Literal["bohr"] = "bohr"


EnergyMode = Annotated[
    Literal["model", "exact", "auto"],
    Field(
        description="Who answers. 'model' (the default): the model answers every item, and an "
        "item outside its training domain says so (`in_domain` false, `domain_score` > 1, "
        "`domain_reason_text`). 'exact': the exact solver answers every item (it needs the "
        "potentials). 'auto': the model inside its domain when its `energy_std` is at most "
        "MLDM_ENERGY_AUTO_MAX_STD (1.6 mHa by default), the exact solver for the rest; "
        "`answered_by` says which one answered each item.",
        examples=["auto"],
    ),
]


class PotentialEnergyRequest(RequestSchema):
    """Potentials V(x) in Hartree on the grid."""

    potentials: GridArrays
    include_exact: bool = Field(
        False, description="Also solve exactly and return the exact energy and the error."
    )
    mode: EnergyMode = "model"

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"potentials": EXAMPLE_POTENTIAL, "include_exact": True, "mode": "auto"}]
        }
    )


class DensityEnergyRequest(RequestSchema):
    """Densities n(x) in 1/bohr on the grid, each with sum(n) * dx = 1."""

    densities: GridArrays
    potentials: GridArrays | None = Field(
        None,
        description="Optional: the potential of each density (Hartree). A constant added to V "
        "changes E but not n, so without V only the kinetic energy T[n] is a function of n; with "
        "V the answer is E = T[n] + sum(n V) dx (mode 'model') or the exact solver's (modes "
        "'exact', 'auto'), and the exact energy and the error are returned too.",
    )
    mode: EnergyMode = "model"


_PER_ITEM = "One per item, in request order."


class EnergyResponse(BaseModel):
    """Energies in Hartree, in request order, each with who answered it and the model's domain
    verdict (whoever answered)."""

    model: ModelRef
    grid: Grid = Field(default_factory=Grid)
    unit: Literal["hartree"] = "hartree"
    mode: Literal["model", "exact", "auto"] = Field(
        "model", description="The mode of the request.", examples=["auto"]
    )
    energies: list[float] = Field(
        description="The ground-state energy of each item, Hartree, from whoever `answered_by` "
        "names. From a density without its potential (model v2): T[n] + the training mean of "
        "sum(n V) dx, uncertain by at least `offset_std`.",
        examples=[[0.1574]],
    )
    answered_by: list[Literal["model", "exact solver"]] = Field(
        description=f"Who answered each item. {_PER_ITEM}", examples=[["exact solver"]]
    )
    energy_std: list[float | None] = Field(
        description="Calibrated 1-sigma uncertainty of each energy, Hartree: 0 when the exact "
        "solver answered, null when the model version gives none (v1). The 95% interval is "
        "`energy_interval_95`.",
        examples=[[0.0]],
    )
    energy_interval_95: list[list[float] | None] = Field(
        description="[low, high] = energy -+ 1.96 energy_std, Hartree; null without energy_std.",
        examples=[[[0.1574, 0.1574]]],
    )
    in_domain: list[bool] = Field(
        description="Whether the input lies in the model's training domain (false also when "
        "this model version cannot tell: then `domain_score` is null).",
        examples=[[False]],
    )
    domain_score: list[float | None] = Field(
        description="Distance from the training domain: <= 1 inside, > 1 outside (1 = the "
        "calibrated edge); null when the model version has no check for this input.",
        examples=[[3.2]],
    )
    domain_reason: list[int] | None = Field(
        None,
        description="Reason code of the model version's card (`domain.reason_codes`): 0 = in "
        "the domain, k = criterion k. Only from model versions that output it (v2).",
        examples=[[1]],
    )
    domain_reason_text: list[str] = Field(
        description="The domain verdict in words, from the model card.",
        examples=[
            [
                "outside the training domain: its shape is far from the training inputs "
                "(PCA Mahalanobis distance) (score 3.2 > 1)"
            ]
        ],
    )
    exact_energies: list[float] | None = Field(None, description="Exact energies, Hartree.")
    errors: list[float] | None = Field(None, description="Answer - exact, Hartree.")
    kinetic_energy: list[float] | None = Field(
        None,
        description="Density models v2: T[n] = E - sum(n V) dx, Hartree, the part of the energy "
        "that is a function of the density alone (offset-free).",
        examples=[[0.079]],
    )
    kinetic_energy_std: list[float] | None = Field(
        None, description="Density models v2: calibrated 1-sigma of `kinetic_energy`, Hartree."
    )
    offset_std: list[float] | None = Field(
        None,
        description="Density models v2: the irreducible uncertainty of E from n alone, "
        "Hartree: the spread of sum(n V) dx over the training data (a constant added to V "
        "changes E, not n). Included in `energy_std` unless the potentials are given.",
        examples=[[0.2]],
    )


class ExactRequest(RequestSchema):
    """Potentials V(x) in Hartree on the grid."""

    potentials: GridArrays

    model_config = ConfigDict(json_schema_extra={"examples": [{"potentials": EXAMPLE_POTENTIAL}]})


class ExactResponse(BaseModel):
    """The exact ground state of each potential from the project's solver."""

    grid: Grid = Field(default_factory=Grid)
    unit: Literal["hartree"] = "hartree"
    energies: list[float] = Field(description="Ground-state energies, Hartree.")
    densities: list[list[float]] = Field(description="Ground-state densities n(x), 1/bohr.")


# Pre-steps and post-steps -------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyPrediction:
    model: ModelVersion
    energies: np.ndarray  # float32 [N], Hartree
    exact: np.ndarray | None = None  # float64 [N], Hartree
    errors: np.ndarray | None = None  # predicted - exact
    #: The energy model version's other outputs, by name, each [N, ...].
    extras: base.Extras = field(default_factory=dict)
    #: Who answered each item and the model's domain verdict (`mode`); `energies` are then
    #: the answers (the model's or the exact solver's).
    answer: energy_domain.EnergyAnswer | None = None
    mode: str = "model"


@dataclass(frozen=True)
class ExactSolution:
    energies: np.ndarray  # float64 [N], Hartree
    densities: np.ndarray  # float64 [N, 64], 1/bohr


def potentials_from(value: Any, max_items: int, field: str = "potentials") -> np.ndarray:
    """Validated potentials `[N, 64]` (float64) on the grid, for the exact solver."""
    return as_batch(value, field, (GRID_POINTS,), max_items, value_range=POTENTIAL_RANGE)[0]


async def _potentials(dataplane: DataPlane, value: Any) -> np.ndarray:
    """`potentials_from`, off the event loop for a big nested list."""
    return await base.offload(potentials_from, value, dataplane.settings.max_items_per_request)


async def _energy(dataplane: DataPlane, name: str, value: Any, field: str) -> EnergyPrediction:
    model = dataplane.resolve(name)
    energies, extras = base.primary(
        dataplane, await base.infer_one(dataplane, model, model.input.name, value, field)
    )
    return EnergyPrediction(model, energies.reshape(energies.shape[0]), extras=extras)


async def from_potential(
    dataplane: DataPlane, potentials: Any, include_exact: bool = False, mode: str = "model"
) -> EnergyPrediction:
    """Energies (Hartree) of potentials, answered as `mode` says (model | exact | auto),
    each with the model's domain verdict; optionally the exact ones too."""
    _check_mode(mode)
    dataplane.resolve(ENERGY_FROM_POTENTIAL)  # 503 before any validation work
    if not include_exact and mode == "model":
        prediction = await _energy(dataplane, ENERGY_FROM_POTENTIAL, potentials, "potentials")
        arrays = None
        if "in_domain" not in prediction.extras:  # v1: its card's check needs the array
            arrays = np.asarray(potentials, np.float64).reshape(-1, GRID_POINTS)
        return await _answer(dataplane, prediction, mode, arrays)
    arrays = await _potentials(dataplane, potentials)
    prediction = await _energy(dataplane, ENERGY_FROM_POTENTIAL, arrays, "potentials")
    exact = await _solve(dataplane, arrays) if include_exact else None
    return await _answer(dataplane, prediction, mode, arrays, exact)


async def from_density(
    dataplane: DataPlane, densities: Any, potentials: Any = None, mode: str = "model"
) -> EnergyPrediction:
    """Energies (Hartree) of densities. A density fixes E only up to a constant added to V:
    without `potentials` the model's answer (T[n] + the training mean of the potential
    energy, see `offset_std`); with them E = T[n] + sum(n V) dx, or the exact solver's
    (`mode`), and the exact ones too."""
    _check_mode(mode)
    if mode == "exact" and potentials is None:
        raise InvalidInput.for_field(
            "potentials",
            "the potential of each density (mode 'exact' solves them)",
            "no potentials",
            what="mode 'exact' needs the potentials",
        )
    prediction = await _energy(dataplane, ENERGY_FROM_DENSITY, densities, "densities")
    if potentials is None:
        return await _answer(dataplane, prediction, mode, None)
    exact_for = await _potentials(dataplane, potentials)
    count = prediction.energies.shape[0]
    if exact_for.shape[0] != count:
        raise InvalidInput.for_field(
            "potentials",
            f"one potential per density ({count})",
            f"{exact_for.shape[0]} potentials",
        )
    n = np.asarray(densities, np.float64).reshape(count, GRID_POINTS)
    outputs = energy_domain.with_potentials(_named(prediction), n, exact_for)
    return await _answer(
        dataplane, prediction, mode, exact_for, await _solve(dataplane, exact_for), outputs
    )


async def _answer(
    dataplane: DataPlane,
    prediction: EnergyPrediction,
    mode: str,
    potentials: np.ndarray | None,
    exact: ExactSolution | None = None,
    outputs: Mapping[str, np.ndarray] | None = None,
) -> EnergyPrediction:
    """Post-step: who answers each item (`energy_domain.answer`), the solver off the event
    loop under the request timeout; `errors` are then answer - exact."""
    run = partial(
        energy_domain.answer,
        mode,
        prediction.model.card,
        _named(prediction) if outputs is None else outputs,
        potentials=potentials,
        solve=_solve_exactly,
        max_std=dataplane.settings.energy_auto_max_std,
        exact=None if exact is None else exact.energies,
    )
    try:
        if mode == "model" or exact is not None:  # no solver call: cheap, inline
            answer = run()
        else:
            answer = await dataplane.runner.call("the exact solver", run, lane="solver")
    except ValueError as exc:  # the solver's own input checks
        raise InvalidInput.for_field(
            "potentials", "potentials the solver accepts", describe(str(exc))
        ) from None
    # The model's own outputs as they came in JSON; float64 once the solver or sum(n V) dx is
    # part of the answer (the .npy answer is float64 whatever the mode)
    raw = mode == "model" and outputs is None
    energies = answer.energy.astype(prediction.energies.dtype) if raw else answer.energy
    result = replace(prediction, energies=energies, answer=answer, mode=mode)
    return result if exact is None else _with_exact(result, exact)


def _with_exact(prediction: EnergyPrediction, exact: ExactSolution) -> EnergyPrediction:
    return replace(
        prediction,
        exact=exact.energies,
        errors=prediction.energies.astype(np.float64) - exact.energies,
    )


async def exact(dataplane: DataPlane, potentials: Any) -> ExactSolution:
    """The exact ground state of each potential from the project's own solver."""
    return await _solve(
        dataplane,
        await _potentials(dataplane, potentials),
    )


async def _solve(dataplane: DataPlane, potentials: np.ndarray) -> ExactSolution:
    solve_ground_state = _solver()
    try:
        energies, densities = await dataplane.runner.call(
            "the exact solver",
            solve_ground_state,
            np.asarray(potentials, dtype=np.float64),
            lane="solver",
        )
    except ValueError as exc:  # the solver's own input checks
        raise InvalidInput.for_field(
            "potentials", "potentials the solver accepts", describe(str(exc))
        ) from None
    return ExactSolution(
        np.asarray(energies, dtype=np.float64).reshape(potentials.shape[0]),
        np.asarray(densities, dtype=np.float64).reshape(potentials.shape[0], GRID_POINTS),
    )


def _check_mode(mode: str) -> None:
    if mode not in energy_domain.MODES:
        raise InvalidInput.for_field(
            "mode", " | ".join(repr(m) for m in energy_domain.MODES), describe(mode)
        )


def _named(prediction: EnergyPrediction) -> dict[str, np.ndarray]:
    """The energy model's outputs by name: the base.primary one as `energy`, then the others."""
    return {"energy": prediction.energies, **prediction.extras}


def _solver() -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    try:
        from data.schrodinger import solve_ground_state
    except ImportError as exc:  # the data package is optional at run time
        raise ModelNotReady(f"the exact solver is not available: {exc}") from None
    return solve_ground_state


def _solve_exactly(potentials: np.ndarray) -> np.ndarray:
    """The exact energies of some potentials (run in the runner's threads)."""
    energies, _ = _solver()(np.asarray(potentials, dtype=np.float64))
    return np.asarray(energies, dtype=np.float64).reshape(len(potentials))


# Routes ---------------------------------------------------------------------------------------

router = base.task_router()


def _energies(result: EnergyPrediction, answer: str) -> Response:
    if answer == NPY:
        # One answer type per route (issue 20): the answers, float64 [N], whatever the mode
        # and include_exact; the exact energies, errors and flags are in the JSON and .npz ones.
        return npy_response(result.energies.astype(np.float64), base.model_headers(result.model))
    if answer == NPZ:
        return npz_response(_energy_arrays(result), base.model_headers(result.model))
    body: dict[str, Any] = {
        "model": base.model_ref(result.model),
        "grid": GRID_JSON,
        "unit": "hartree",
        "energies": result.energies,
    }
    if result.answer is not None:
        body.update(_answer_fields(result.answer, result.mode))
    if result.exact is not None:
        body["exact_energies"] = result.exact
        body["errors"] = result.errors
    # Every other output of the model version, by output name, one value per item like
    # `energies` (`energy_std`, `domain_score`, `in_domain`).
    for name, values in result.extras.items():
        body.setdefault(name, values)
    return JSONBody(body)


def _energy_arrays(result: EnergyPrediction) -> dict[str, Any]:
    """The JSON answer's per-item fields as arrays, for the .npz answer: always `energies`
    (float64), `mode` (a 0-d str), `answered_by` (str), `energy_std`, `energy_interval_95`
    [N, 2] (NaN where unknown), `in_domain`, `domain_score`, `domain_reason_text`;
    `exact_energies` and `errors` when asked for; the model's other outputs by name."""
    arrays: dict[str, Any] = {**result.extras, "energies": result.energies.astype(np.float64)}
    if result.answer is not None:
        fields = _answer_fields(result.answer, result.mode)
        intervals = [[np.nan, np.nan] if i is None else i for i in fields["energy_interval_95"]]
        arrays.update(
            mode=np.asarray(result.mode, dtype=str),
            answered_by=np.array(fields["answered_by"], dtype=str),
            energy_std=fields["energy_std"].astype(np.float64),
            energy_interval_95=np.array(intervals, dtype=np.float64).reshape(-1, 2),
            in_domain=np.asarray(fields["in_domain"], bool),
            domain_score=np.asarray(fields["domain_score"], np.float64),
            domain_reason_text=np.array(fields["domain_reason_text"], dtype=str),
        )
    if result.exact is not None:
        arrays.update(exact_energies=result.exact, errors=result.errors)
    return arrays


def _answer_fields(answer: EnergyAnswer, mode: str) -> dict[str, Any]:
    """Who answered each item and the model's domain verdict, one value per item."""
    std = answer.energy_std
    known = np.isfinite(std)
    return {
        "mode": mode,
        "answered_by": answer.answered_by,
        "energy_std": np.where(known, std, np.nan),  # NaN is written as null
        "energy_interval_95": [
            [e - 1.96 * s, e + 1.96 * s] if k else None
            for e, s, k in zip(answer.energy.tolist(), std.tolist(), known.tolist(), strict=True)
        ],
        "in_domain": answer.domain.inside,
        "domain_score": answer.domain.score,
        "domain_reason_text": answer.domain.reason,
    }


_MODE = "'model' (default), 'exact' or 'auto': who answers (see the JSON body's `mode`)"


@base.array_route(
    router,
    "/energy/from-potential",
    "energy",
    PotentialEnergyRequest,
    EnergyResponse,
    {"include_exact": "true to add the exact energies", "mode": _MODE},
    exclude_none=True,
)
async def energy_from_potential(request: Request, dataplane: DataPlaneDep) -> Response:
    """Predict ground-state energies (Hartree) from potentials V(x) (Hartree) on the grid.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns the answers,
    float64 `[N]`, whatever `mode` and `include_exact`; `Accept: application/x-npz` every field.
    """
    answer, body = await base.read_request(
        request, PotentialEnergyRequest, "potentials", (JSON, NPY, NPZ)
    )
    result = await from_potential(dataplane, body.potentials, body.include_exact, body.mode)
    return _energies(result, answer)


@base.array_route(
    router,
    "/energy/from-density",
    "energy",
    DensityEnergyRequest,
    EnergyResponse,
    {"mode": _MODE},
    exclude_none=True,
)
async def energy_from_density(request: Request, dataplane: DataPlaneDep) -> Response:
    """Predict ground-state energies (Hartree) from densities n(x) (1/bohr) on the grid.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns the answers,
    float64 `[N]`, whatever `mode`; `Accept: application/x-npz` every field.
    """
    answer, body = await base.read_request(
        request, DensityEnergyRequest, "densities", (JSON, NPY, NPZ)
    )
    result = await from_density(dataplane, body.densities, body.potentials, body.mode)
    return _energies(result, answer)


@base.array_route(router, "/energy/exact", "energy", ExactRequest, ExactResponse, {})
async def exact_solution(request: Request, dataplane: DataPlaneDep) -> Response:
    """Solve the Schrodinger equation exactly: ground-state energy and density of each potential.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns float64 `[N, 65]`:
    column 0 the energy, columns 1-64 the density.
    """
    answer, body = await base.read_request(request, ExactRequest, "potentials")
    result = await exact(dataplane, body.potentials)
    if answer == NPY:
        return npy_response(np.column_stack([result.energies, result.densities]))
    return JSONBody(
        {
            "grid": GRID_JSON,
            "unit": "hartree",
            "energies": result.energies,
            "densities": result.densities,
        }
    )


TASK = base.Task("energy", MODELS, router)
