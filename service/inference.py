"""The service layer: the five tasks and the generic predict, independent of HTTP.

Routes (JSON, TF Serving, KServe V2) parse their wire format and call these methods; tests call
them directly. Each method validates its inputs against the loaded model's signature, runs the
model off the event loop through the `ModelRunner`, and returns plain numpy results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import numpy as np

from service import codec, imaging
from service.arrays import as_batch, item_index, shape_text
from service.errors import InvalidInput, ModelNotReady, ServiceError, describe
from service.registry import ModelRegistry, ModelVersion, TensorSpec
from service.runtime import ModelRunner
from service.settings import Settings

CLASSIFIER = "digit_classifier"
ENCODER = "digit_encoder"
DECODER = "digit_decoder"
ENERGY_FROM_POTENTIAL = "energy_from_potential"
ENERGY_FROM_DENSITY = "energy_from_density"

#: The grid of every 64-point array (docs/ARCHITECTURE.md): linspace(-15, 15, 64) bohr.
GRID_START, GRID_STOP, GRID_POINTS = -15.0, 15.0, 64
GRID = np.linspace(GRID_START, GRID_STOP, GRID_POINTS)
DX = float(GRID[1] - GRID[0])
#: Potentials beyond this (Hartree) are outside any physics the models or the solver can handle.
MAX_ABS_POTENTIAL = 1.0e6
#: How far `sum(n) * dx` may stray from 1 (a density of one electron).
DENSITY_NORM_TOLERANCE = 1.0e-2

PixelScale = Literal["unit", "byte"]

#: Nested-list inputs with more items than this are validated in a worker thread.
_OFFLOAD_ITEMS = 64


@dataclass(frozen=True)
class Classification:
    model: ModelVersion
    digits: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 10]


@dataclass(frozen=True)
class Compression:
    model: ModelVersion
    codes: list[bytes]
    bytes_per_image: int


@dataclass(frozen=True)
class Decompression:
    images: np.ndarray  # float32 [N, 28, 28]
    versions: list[int]  # decoder version used for each image


@dataclass(frozen=True)
class EnergyPrediction:
    model: ModelVersion
    energies: np.ndarray  # float32 [N], Hartree
    exact: np.ndarray | None = None  # float64 [N], Hartree
    errors: np.ndarray | None = None  # predicted - exact


@dataclass(frozen=True)
class ExactSolution:
    energies: np.ndarray  # float64 [N], Hartree
    densities: np.ndarray  # float64 [N, 64], 1/bohr


def fit_to_spec(array: np.ndarray, spec: TensorSpec, field: str) -> np.ndarray:
    """Reshape `[N, ...]` to the signature's input shape (same item size) and cast its dtype."""
    item = spec.item_shape
    if array.shape[1:] != item:
        known = all(d is not None for d in item)
        size = int(np.prod([d for d in item if d is not None]))
        if not known or size != int(np.prod(array.shape[1:])):
            raise InvalidInput.for_field(
                field,
                f"items of shape {shape_text(item, batch=False)}",
                f"shape {list(array.shape)}",
                what="wrong shape for the model",
            )
        array = array.reshape((array.shape[0], *(int(d) for d in item if d is not None)))
    return np.ascontiguousarray(array, dtype=spec.dtype)


class InferenceService:
    """The tasks of the API over one registry, one runner and one settings object."""

    def __init__(self, registry: ModelRegistry, settings: Settings, runner: ModelRunner) -> None:
        self.registry = registry
        self.settings = settings
        self.runner = runner

    async def _offload(
        self, check: Callable[..., np.ndarray], value: Any, *args: Any
    ) -> np.ndarray:
        """Run a validation inline for small inputs, in a worker thread for big nested lists
        (converting thousands of JSON arrays takes long enough to stall the event loop)."""
        if isinstance(value, list) and len(value) > _OFFLOAD_ITEMS:
            return await anyio.to_thread.run_sync(check, value, *args)
        return check(value, *args)

    # Digits ----------------------------------------------------------------------------------

    def images_from(self, value: Any, scale: PixelScale, field: str = "images") -> np.ndarray:
        """Validated images `[N, 28, 28]` in [0, 1] from unit floats or 0-255 integers."""
        limit = self.settings.max_batch_size
        if scale == "unit":
            images, _ = as_batch(
                value,
                field,
                (28, 28),
                limit,
                squeeze_channel=True,
                value_range=(0.0, 1.0, "pixels (scale 'unit')"),
            )
            return images
        if scale == "byte":
            images, _ = as_batch(
                value,
                field,
                (28, 28),
                limit,
                squeeze_channel=True,
                value_range=(0.0, 255.0, "pixels (scale 'byte')"),
                integers=True,
            )
            # float32 arithmetic: the model's dtype, and no float64 copy of a bulk batch
            return images.astype(np.float32) / np.float32(255.0)
        raise InvalidInput.for_field("scale", "'unit' or 'byte'", describe(scale))

    async def classify(self, images: Any, scale: PixelScale = "unit") -> Classification:
        """Digit and the ten probabilities for each image."""
        model = self.registry.get(CLASSIFIER)
        batch = await self._offload(self.images_from, images, scale)
        return await self.classify_batch(model, batch)

    async def classify_upload(self, data: bytes, field: str = "file") -> Classification:
        """Classify one uploaded PNG/JPEG after MNIST-style preprocessing."""
        model = self.registry.get(CLASSIFIER)
        image = await self.runner.call(
            "image preprocessing",
            imaging.preprocess_upload,
            data,
            self.settings.max_image_pixels,
            field,
        )
        return await self.classify_batch(model, image[np.newaxis])

    async def classify_batch(self, model: ModelVersion, images: np.ndarray) -> Classification:
        probabilities = await self.runner.run(model, fit_to_spec(images, model.input, "images"))
        probabilities = probabilities.reshape(probabilities.shape[0], -1)
        return Classification(model, probabilities.argmax(axis=1), probabilities)

    def encoder_for_compression(self) -> ModelVersion:
        """The newest encoder version whose decoder of the same version is loaded too."""
        encoders = self.registry.entry(ENCODER)
        decoders = self.registry.entry(DECODER)
        usable = sorted(set(encoders.versions) & set(decoders.versions))
        if not usable:
            if not encoders.ready:
                raise ModelNotReady(encoders.status_message())
            if not decoders.ready:
                raise ModelNotReady(decoders.status_message())
            raise ModelNotReady(
                f"no encoder version has a loaded decoder of the same version "
                f"(encoders {sorted(encoders.versions)}, decoders {sorted(decoders.versions)})"
            )
        return encoders.versions[usable[-1]]

    async def compress(self, images: Any, scale: PixelScale = "unit") -> Compression:
        """Each image as a self-describing code: header + the encoder's latent bytes."""
        model = self.encoder_for_compression()
        batch = await self._offload(self.images_from, images, scale)
        latent = await self.runner.run(model, fit_to_spec(batch, model.input, "images"))
        latent = np.asarray(latent, dtype=np.uint8).reshape(latent.shape[0], -1)
        codes = [codec.pack(model.version, row) for row in latent]
        return Compression(model, codes, codec.HEADER_BYTES + latent.shape[1])

    async def decompress(self, codes: Sequence[bytes | str], field: str = "codes") -> Decompression:
        """28x28 images in [0, 1] from codes, each decoded by the version that made it."""
        if not isinstance(codes, Sequence) or isinstance(codes, str | bytes):
            raise InvalidInput.for_field(field, "a list of base64 codes", describe(codes))
        if not codes:
            raise InvalidInput.for_field(field, "at least one code", "an empty list", "empty batch")
        if len(codes) > self.settings.max_batch_size:
            limit = self.settings.max_batch_size
            raise InvalidInput.for_field(
                field,
                f"at most {limit} items",
                f"{len(codes)} items",
                what=f"batch too large: at most {limit} items per request",
            )
        entry = self.registry.entry(DECODER)
        groups: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, code in enumerate(codes):
            where = f"{field}[{i}]"
            raw = code if isinstance(code, bytes) else codec.b64decode(code, where)
            version, latent = codec.unpack(raw, where)
            if version not in entry.versions:
                if version in entry.failed:
                    raise ModelNotReady(
                        f"{where}: decoder version {version} failed to load: "
                        f"{entry.failed[version]}"
                    )
                loaded = ", ".join(map(str, sorted(entry.versions))) or "none"
                raise InvalidInput.for_field(
                    where,
                    f"a code from a loaded encoder version ({loaded})",
                    f"a code from version {version}",
                    what=f"unknown model version {version}",
                )
            expected = entry.versions[version].input.item_shape
            size = int(np.prod([d for d in expected if d is not None]))
            if latent.size != size:
                raise InvalidInput.for_field(
                    where,
                    f"{codec.HEADER_BYTES + size} bytes for version {version}",
                    f"{codec.HEADER_BYTES + latent.size} bytes",
                    what="corrupt code: wrong length",
                )
            groups.setdefault(version, []).append((i, latent))
        images = np.zeros((len(codes), 28, 28), dtype=np.float32)
        versions = [0] * len(codes)
        for version, items in sorted(groups.items()):
            model = entry.versions[version]
            batch = np.stack([latent for _, latent in items])
            out = await self.runner.run(model, fit_to_spec(batch, model.input, field))
            out = np.asarray(out, dtype=np.float32).reshape(len(items), 28, 28)
            for (i, _), image in zip(items, out, strict=True):
                images[i] = image
                versions[i] = version
        return Decompression(images, versions)

    # Energies --------------------------------------------------------------------------------

    def grid_arrays(
        self, value: Any, field: str, value_range: tuple[float, float, str]
    ) -> tuple[np.ndarray, bool]:
        """Validated `[N, 64]` float64 arrays on the grid, one or many (and whether one)."""
        return as_batch(
            value, field, (GRID_POINTS,), self.settings.max_batch_size, value_range=value_range
        )

    def potentials_from(self, value: Any, field: str = "potentials") -> np.ndarray:
        limits = (-MAX_ABS_POTENTIAL, MAX_ABS_POTENTIAL, "potential (Hartree)")
        return self.grid_arrays(value, field, limits)[0]

    def densities_from(self, value: Any, field: str = "densities") -> np.ndarray:
        densities, single = self.grid_arrays(value, field, (-1e-6, 1.0 / DX, "density (1/bohr)"))
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
        return densities

    async def _energy(self, name: str, arrays: np.ndarray, field: str) -> EnergyPrediction:
        model = self.registry.get(name)
        energies = await self.runner.run(model, fit_to_spec(arrays, model.input, field))
        return EnergyPrediction(model, np.asarray(energies).reshape(arrays.shape[0]))

    async def energy_from_potential(
        self, potentials: Any, include_exact: bool = False
    ) -> EnergyPrediction:
        """Ground-state energies (Hartree) predicted from potentials; optionally with the exact."""
        self.registry.get(ENERGY_FROM_POTENTIAL)  # 503 before any validation work
        arrays = await self._offload(self.potentials_from, potentials)
        prediction = await self._energy(ENERGY_FROM_POTENTIAL, arrays, "potentials")
        if not include_exact:
            return prediction
        exact = await self._solve(arrays)
        return EnergyPrediction(
            prediction.model,
            prediction.energies,
            exact.energies,
            prediction.energies.astype(np.float64) - exact.energies,
        )

    async def energy_from_density(self, densities: Any, potentials: Any = None) -> EnergyPrediction:
        """Energies (Hartree) predicted from densities; with `potentials`, also the exact ones."""
        self.registry.get(ENERGY_FROM_DENSITY)
        arrays = await self._offload(self.densities_from, densities)
        exact_for = None
        if potentials is not None:
            exact_for = await self._offload(self.potentials_from, potentials)
            if exact_for.shape[0] != arrays.shape[0]:
                raise InvalidInput.for_field(
                    "potentials",
                    f"one potential per density ({arrays.shape[0]})",
                    f"{exact_for.shape[0]} potentials",
                )
        prediction = await self._energy(ENERGY_FROM_DENSITY, arrays, "densities")
        if exact_for is None:
            return prediction
        exact = await self._solve(exact_for)
        return EnergyPrediction(
            prediction.model,
            prediction.energies,
            exact.energies,
            prediction.energies.astype(np.float64) - exact.energies,
        )

    async def exact_solution(self, potentials: Any) -> ExactSolution:
        """The exact ground state of each potential from the project's own solver."""
        return await self._solve(await self._offload(self.potentials_from, potentials))

    async def _solve(self, potentials: np.ndarray) -> ExactSolution:
        try:
            from data.schrodinger import solve_ground_state
        except ImportError as exc:  # the data package is optional at run time
            raise ModelNotReady(f"the exact solver is not available: {exc}") from None
        try:
            energies, densities = await self.runner.call(
                "the exact solver", solve_ground_state, np.asarray(potentials, dtype=np.float64)
            )
        except ValueError as exc:  # the solver's own input checks
            raise InvalidInput.for_field(
                "potentials", "potentials the solver accepts", describe(str(exc))
            ) from None
        return ExactSolution(
            np.asarray(energies, dtype=np.float64).reshape(potentials.shape[0]),
            np.asarray(densities, dtype=np.float64).reshape(potentials.shape[0], GRID_POINTS),
        )

    # Generic (TF Serving, V2) ----------------------------------------------------------------

    async def predict(
        self, name: str, version: int | None, inputs: Mapping[str, Any], field: str
    ) -> tuple[ModelVersion, dict[str, np.ndarray]]:
        """Run any loaded model on named inputs (nested lists or arrays), all outputs back."""
        model = self.registry.get(name, version)
        unknown = set(inputs) - set(model.inputs)
        if unknown:
            raise InvalidInput.for_field(
                field,
                f"inputs named {sorted(model.inputs)}",
                f"{sorted(unknown)}",
                what="unknown input name",
            )
        missing = set(model.inputs) - set(inputs)
        if missing:
            raise InvalidInput.for_field(
                field,
                f"inputs named {sorted(model.inputs)}",
                f"no {sorted(missing)}",
                what="missing input",
            )
        arrays: dict[str, np.ndarray] = {}
        for key, spec in model.inputs.items():
            where = f"{field}.{key}" if len(model.inputs) > 1 else field
            item = spec.item_shape
            if any(d is None for d in item):
                raise ServiceError(
                    f"model {name!r} input {key!r} has a free item dimension, which the REST "
                    "APIs of this server do not support",
                    status_code=501,
                )
            limits = (0.0, 255.0, "uint8 values") if spec.dtype == np.uint8 else None
            batch, _ = as_batch(
                inputs[key],
                where,
                item,  # type: ignore[arg-type]
                self.settings.max_batch_size,
                value_range=limits,
                integers=spec.dtype.kind in "iu",
            )
            arrays[key] = fit_to_spec(batch, spec, where)
        if len({a.shape[0] for a in arrays.values()}) > 1:
            raise InvalidInput.for_field(
                field, "the same batch size for every input", "different sizes"
            )
        return model, await self.runner.predict(model, arrays)
