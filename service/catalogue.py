"""What the service knows about each model of the contract, in one place (docs/ARCHITECTURE.md).

One `ModelSpec` per model: its name, task, the task routes that use it, its primary output and
the contract of each input (the item shape a client sends, the value range). Everything else
derives from this table: the models readiness waits for (`settings.EXPECTED_MODELS`), the model
label of the task routes' metrics, the data plane's range checks, the wire schemas' grid. A new
model is one entry here plus its task code (`service.inference`).

A model found on disk but not listed here is still served by the generic protocols, validated
against its signature only (shape, dtype, finite values; uint8 inputs integers in 0-255).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.arrays import item_index
from service.errors import InvalidInput

#: The grid of every 64-point array: linspace(-15, 15, 64) bohr.
GRID_START, GRID_STOP, GRID_POINTS = -15.0, 15.0, 64
GRID = np.linspace(GRID_START, GRID_STOP, GRID_POINTS)
DX = float(GRID[1] - GRID[0])
#: Potentials beyond this (Hartree) are outside any physics the models or the solver can handle.
MAX_ABS_POTENTIAL = 1.0e6
#: How far `sum(n) * dx` may stray from 1 (a density of one electron).
DENSITY_NORM_TOLERANCE = 1.0e-2

#: (low, high, what the values are): the range check of one input, worded for the error message.
ValueRange = tuple[float, float, str]


@dataclass(frozen=True)
class InputContract:
    """One input as a client sends it (the signature may add a channel dimension of 1)."""

    name: str
    #: The shape of one item as clients send it (`(28, 28)` for the `[N, 28, 28, 1]` images).
    item_shape: tuple[int, ...]
    value_range: ValueRange | None = None
    #: Values must be whole numbers (uint8 codes).
    integers: bool = False
    #: A trailing channel dimension of 1 is accepted too (`[N, 28, 28, 1]`).
    squeeze_channel: bool = False
    #: A check of the whole batch beyond the range: (batch, error field, single item) -> None.
    check: Callable[[np.ndarray, str, bool], None] | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    #: The task routes served by this model (their metrics carry its name as the model label).
    routes: tuple[str, ...]
    #: The output a task endpoint answers with; the model's other outputs are extras.
    primary_output: str
    inputs: tuple[InputContract, ...]

    def input(self, name: str) -> InputContract | None:
        return next((i for i in self.inputs if i.name == name), None)


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


PIXELS_UNIT: ValueRange = (0.0, 1.0, "pixels (scale 'unit')")
POTENTIAL_RANGE: ValueRange = (-MAX_ABS_POTENTIAL, MAX_ABS_POTENTIAL, "potential (Hartree)")
DENSITY_RANGE: ValueRange = (-1e-6, 1.0 / DX, "density (1/bohr)")
UINT8_RANGE: ValueRange = (0.0, 255.0, "uint8 values")

_IMAGES = InputContract("images", (28, 28), PIXELS_UNIT, squeeze_channel=True)

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "digit_classifier",
        "classify 28x28 digit images",
        ("/api/v1/digits/classify", "/api/v1/digits/classify/image", "/api/v1/digits/read"),
        "probabilities",
        (_IMAGES,),
    ),
    ModelSpec(
        "digit_encoder",
        "compress digit images into latent codes",
        ("/api/v1/digits/compress",),
        "code",
        (_IMAGES,),
    ),
    ModelSpec(
        "digit_decoder",
        "decode latent codes back into images",
        ("/api/v1/digits/decompress",),
        "images",
        # The code length differs per version: the signature gives it (item shape None here).
        (InputContract("code", (), UINT8_RANGE, integers=True),),
    ),
    ModelSpec(
        "energy_from_potential",
        "ground-state energy from a potential V(x) on the grid",
        ("/api/v1/energy/from-potential",),
        "energy",
        (InputContract("potential", (GRID_POINTS,), POTENTIAL_RANGE),),
    ),
    ModelSpec(
        "energy_from_density",
        "ground-state energy from a density n(x) on the grid",
        ("/api/v1/energy/from-density",),
        "energy",
        (InputContract("density", (GRID_POINTS,), DENSITY_RANGE, check=check_density_norm),),
    ),
)

BY_NAME: dict[str, ModelSpec] = {spec.name: spec for spec in MODELS}
#: The models readiness waits for (the default of `Settings.expected_models`).
EXPECTED_MODELS: tuple[str, ...] = tuple(spec.name for spec in MODELS)
#: The model behind each task route (routes with a `{name}` path parameter name it themselves).
TASK_ROUTE_MODELS: dict[str, str] = {route: spec.name for spec in MODELS for route in spec.routes}


def spec_of(name: str) -> ModelSpec | None:
    """The catalogue entry of a model, None for a model outside the contract."""
    return BY_NAME.get(name)
