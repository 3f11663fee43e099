"""The task layer: the five tasks of the API as pre-steps and post-steps around the data plane.

Task routes parse their JSON or `.npy` bodies and call these methods; tests call them directly.
Each task turns its request into an `InferenceRequest` (pre-step: pixel scale, which encoder,
which decoder version per code), runs it through the one `DataPlane` (validation, batching,
timeout, statistics) and shapes the answer (post-step: digits, codes, energies). Every output a
model version has beyond the task's primary one comes back in `extras`, by output name, so a new
model version with extra outputs reaches the task answers without a code change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import anyio
import numpy as np

from service import codec, energy_domain, imaging, reading
from service.arrays import as_batch
from service.catalogue import (
    BY_NAME,
    DX,
    GRID,
    GRID_POINTS,
    GRID_START,
    GRID_STOP,
    POTENTIAL_RANGE,
)
from service.dataplane import DataPlane, extra_outputs
from service.errors import InvalidInput, ModelNotReady, describe
from service.registry import ModelRegistry, ModelVersion
from service.runtime import ModelRunner
from service.settings import Settings
from service.types import InferenceRequest, InferenceResponse

__all__ = ["DX", "GRID", "GRID_POINTS", "GRID_START", "GRID_STOP", "InferenceService"]

CLASSIFIER = "digit_classifier"
ENCODER = "digit_encoder"
DECODER = "digit_decoder"
ENERGY_FROM_POTENTIAL = "energy_from_potential"
ENERGY_FROM_DENSITY = "energy_from_density"

PixelScale = Literal["unit", "byte"]

#: Nested-list inputs with more items than this are validated in a worker thread.
_OFFLOAD_ITEMS = 64

Extras = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Classification:
    model: ModelVersion
    digits: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 10]
    #: The classifier version's other outputs, by name, each [N, ...].
    extras: Extras = field(default_factory=dict)
    #: For uploads and readings: the 28x28 images in [0, 1] the model was given, [N, 28, 28].
    inputs: np.ndarray | None = None


@dataclass(frozen=True)
class Reading:
    """A row of digits read from a picture: one classification per segment, left to right."""

    classification: Classification
    #: Each digit's box in the uploaded picture: (top, left, bottom, right), bottom/right
    #: exclusive.
    boxes: list[tuple[int, int, int, int]]


def _segment_upload(data: bytes, max_pixels: int, field: str) -> list[reading.Segment]:
    """Limits first (from the header), then decoding and segmentation: one blocking job."""
    image = imaging.open_image(data, max_pixels, field)
    return reading.segment_row(imaging.to_grayscale(image, field), field)


@dataclass(frozen=True)
class Compression:
    model: ModelVersion
    codes: list[bytes]
    bytes_per_image: int
    extras: Extras = field(default_factory=dict)


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
    #: The energy model version's other outputs, by name, each [N, ...].
    extras: Extras = field(default_factory=dict)
    #: Who answered each item and the model's domain verdict (issue 11's `mode`); `energies`
    #: are then the answers (the model's or the exact solver's).
    answer: energy_domain.EnergyAnswer | None = None
    mode: str = "model"


@dataclass(frozen=True)
class ExactSolution:
    energies: np.ndarray  # float64 [N], Hartree
    densities: np.ndarray  # float64 [N, 64], 1/bohr


def _primary(response: InferenceResponse) -> tuple[np.ndarray, Extras]:
    """The task's primary output (the catalogue's) and the others."""
    name = BY_NAME[response.model.name].primary_output
    if name not in response.outputs:  # a version that renamed it: its first output
        name = next(iter(response.outputs))
    return response.outputs[name], extra_outputs(response, name)


class InferenceService:
    """The tasks of the API over one data plane (built here from registry, settings, runner)."""

    def __init__(self, registry: ModelRegistry, settings: Settings, runner: ModelRunner) -> None:
        self.registry = registry
        self.settings = settings
        self.runner = runner
        self.dataplane = DataPlane(registry, settings, runner)

    async def _offload(
        self, check: Callable[..., np.ndarray], value: Any, *args: Any
    ) -> np.ndarray:
        """Run a pre-step inline for small inputs, in a worker thread for big nested lists."""
        if isinstance(value, list) and len(value) > _OFFLOAD_ITEMS:
            return await anyio.to_thread.run_sync(check, value, *args)
        return check(value, *args)

    async def _infer(
        self, model: ModelVersion, name: str, value: Any, field: str
    ) -> InferenceResponse:
        """One input under the task's field name through the data plane."""
        request = InferenceRequest(model.name, {name: value}, model.version, fields={name: field})
        return await self.dataplane.infer_on(model, request)

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

    async def _unit_images(self, images: Any, scale: PixelScale) -> Any:
        """Pre-step: the images on the model's unit scale (unit images go as they came: the
        data plane validates them, once)."""
        if scale == "unit":
            return images
        return await self._offload(self.images_from, images, scale)

    async def classify(self, images: Any, scale: PixelScale = "unit") -> Classification:
        """Digit and the ten probabilities for each image."""
        model = self.dataplane.resolve(CLASSIFIER)
        return await self._classify(model, await self._unit_images(images, scale))

    async def classify_upload(self, data: bytes, field: str = "file") -> Classification:
        """Classify one uploaded PNG/JPEG after MNIST-style preprocessing."""
        model = self.dataplane.resolve(CLASSIFIER)
        image = await self.runner.call(
            "image preprocessing",
            imaging.preprocess_upload,
            data,
            self.settings.max_image_pixels,
            field,
        )
        return await self._classify(model, image[np.newaxis], inputs=image[np.newaxis])

    async def read_upload(self, data: bytes, field: str = "file") -> Reading:
        """Read the digits of an uploaded picture of a row of digits, left to right."""
        model = self.dataplane.resolve(CLASSIFIER)
        # Inside the runner: the time limit covers decoding and segmentation too.
        segments = await self.runner.call(
            "reading a number", _segment_upload, data, self.settings.max_image_pixels, field
        )
        if not segments:
            raise InvalidInput.for_field(
                field, "a picture of a row of digits", "no digit-sized ink", what="no digit found"
            )
        cap = self.settings.max_read_digits
        if len(segments) > cap:
            raise InvalidInput.for_field(
                field,
                f"at most {cap} digits (the server's max_read_digits)",
                f"{len(segments)} digits",
                what="too many digits",
            )
        images = np.stack([segment.image for segment in segments])
        result = await self._classify(model, images, inputs=images)
        return Reading(result, [segment.box for segment in segments])

    async def classify_batch(self, model: ModelVersion, images: np.ndarray) -> Classification:
        return await self._classify(model, images)

    async def _classify(
        self, model: ModelVersion, images: Any, inputs: np.ndarray | None = None
    ) -> Classification:
        probabilities, extras = _primary(await self._infer(model, "images", images, "images"))
        probabilities = probabilities.reshape(probabilities.shape[0], -1)
        return Classification(model, probabilities.argmax(axis=1), probabilities, extras, inputs)

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
        response = await self._infer(
            model, "images", await self._unit_images(images, scale), "images"
        )
        latent, extras = _primary(response)
        latent = np.asarray(latent, dtype=np.uint8).reshape(latent.shape[0], -1)
        codes = [codec.pack(model.version, row) for row in latent]
        return Compression(model, codes, codec.HEADER_BYTES + latent.shape[1], extras)

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
            out, _ = _primary(await self._infer(model, model.input.name, batch, field))
            out = np.asarray(out, dtype=np.float32).reshape(len(items), 28, 28)
            for (i, _), image in zip(items, out, strict=True):
                images[i] = image
                versions[i] = version
        return Decompression(images, versions)

    # Energies --------------------------------------------------------------------------------

    def potentials_from(self, value: Any, field: str = "potentials") -> np.ndarray:
        """Validated potentials `[N, 64]` (float64) on the grid, for the exact solver."""
        return as_batch(
            value, field, (GRID_POINTS,), self.settings.max_batch_size, value_range=POTENTIAL_RANGE
        )[0]

    async def _energy(self, name: str, value: Any, field: str) -> EnergyPrediction:
        model = self.dataplane.resolve(name)
        energies, extras = _primary(await self._infer(model, model.input.name, value, field))
        return EnergyPrediction(model, energies.reshape(energies.shape[0]), extras=extras)

    async def energy_from_potential(
        self, potentials: Any, include_exact: bool = False, mode: str = "model"
    ) -> EnergyPrediction:
        """Energies (Hartree) of potentials, answered as `mode` says (model | exact | auto),
        each with the model's domain verdict; optionally the exact ones too."""
        _check_mode(mode)
        self.dataplane.resolve(ENERGY_FROM_POTENTIAL)  # 503 before any validation work
        if not include_exact and mode == "model":
            prediction = await self._energy(ENERGY_FROM_POTENTIAL, potentials, "potentials")
            arrays = None
            if "in_domain" not in prediction.extras:  # v1: its card's check needs the array
                arrays = np.asarray(potentials, np.float64).reshape(-1, GRID_POINTS)
            return await self._answer(prediction, mode, arrays)
        arrays = await self._offload(self.potentials_from, potentials)
        prediction = await self._energy(ENERGY_FROM_POTENTIAL, arrays, "potentials")
        exact = await self._solve(arrays) if include_exact else None
        return await self._answer(prediction, mode, arrays, exact)

    async def energy_from_density(
        self, densities: Any, potentials: Any = None, mode: str = "model"
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
        prediction = await self._energy(ENERGY_FROM_DENSITY, densities, "densities")
        if potentials is None:
            return await self._answer(prediction, mode, None)
        exact_for = await self._offload(self.potentials_from, potentials)
        count = prediction.energies.shape[0]
        if exact_for.shape[0] != count:
            raise InvalidInput.for_field(
                "potentials",
                f"one potential per density ({count})",
                f"{exact_for.shape[0]} potentials",
            )
        n = np.asarray(densities, np.float64).reshape(count, GRID_POINTS)
        outputs = energy_domain.with_potentials(_named(prediction), n, exact_for)
        return await self._answer(
            prediction, mode, exact_for, await self._solve(exact_for), outputs
        )

    async def _answer(
        self,
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
            max_std=self.settings.energy_auto_max_std,
            exact=None if exact is None else exact.energies,
        )
        try:
            if mode == "model" or exact is not None:  # no solver call: cheap, inline
                answer = run()
            else:
                answer = await self.runner.call("the exact solver", run, lane="solver")
        except ValueError as exc:  # the solver's own input checks
            raise InvalidInput.for_field(
                "potentials", "potentials the solver accepts", describe(str(exc))
            ) from None
        # The model's own outputs as they came (float32 .npy answers stay so); float64 once the
        # solver or sum(n V) dx is part of the answer
        raw = mode == "model" and outputs is None
        energies = answer.energy.astype(prediction.energies.dtype) if raw else answer.energy
        result = replace(prediction, energies=energies, answer=answer, mode=mode)
        return result if exact is None else self._with_exact(result, exact)

    @staticmethod
    def _with_exact(prediction: EnergyPrediction, exact: ExactSolution) -> EnergyPrediction:
        return replace(
            prediction,
            exact=exact.energies,
            errors=prediction.energies.astype(np.float64) - exact.energies,
        )

    async def exact_solution(self, potentials: Any) -> ExactSolution:
        """The exact ground state of each potential from the project's own solver."""
        return await self._solve(await self._offload(self.potentials_from, potentials))

    async def _solve(self, potentials: np.ndarray) -> ExactSolution:
        solve_ground_state = _solver()
        try:
            energies, densities = await self.runner.call(
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
    """The energy model's outputs by name: the primary one as `energy`, then the others."""
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
