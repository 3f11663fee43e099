"""The data plane: the one path of every inference, whatever protocol asked for it.

`DataPlane.infer(InferenceRequest)` resolves the model version once, validates every input once
against its signature and its declared contract (names, shape, dtype, value range, batch
size), runs it on the one execution path (`ModelRunner`: the adaptive batcher or the chunked
call, the inference threads) under the request timeout, counts it in the inference statistics
and returns every named output (`InferenceResponse`). Protocol routes decode -> `infer` ->
encode; task endpoints are a pre-step and a post-step around it (`service.tasks`), as in
MLServer's `handlers/dataplane.py` and KServe's `protocol/dataplane.py`. It knows no model by
name: the app gives it the `ModelSpec`s its tasks declare (`service.contracts`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from dataclasses import replace

import anyio
import numpy as np

from service.arrays import as_batch, shape_text
from service.batching import ComputeTime
from service.contracts import UINT8_RANGE, InputContract, ModelSpec
from service.errors import InvalidInput, ServiceError, describe
from service.metrics import Phases
from service.registry import ModelRegistry, ModelVersion, TensorSpec
from service.runtime import ModelRunner
from service.settings import Settings
from service.types import InferenceRequest, InferenceResponse

#: Nested-list inputs with more items than this are validated in a worker thread.
_OFFLOAD_ITEMS = 64


def fit_to_spec(
    array: np.ndarray, spec: TensorSpec, field: str, divide_by: float | None = None
) -> np.ndarray:
    """`[N, ...]` in the signature's input shape (one reshape, same item size) and dtype (one
    cast; `divide_by` then scales the values in that dtype)."""
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
    if divide_by is not None:
        # In the model's dtype: no float64 copy of a bulk batch
        return np.ascontiguousarray(array.astype(spec.dtype) / spec.dtype.type(divide_by))
    return np.ascontiguousarray(array, dtype=spec.dtype)


def contract_of(
    model: ModelVersion, spec: TensorSpec, known: InputContract | None
) -> InputContract:
    """The input's declared contract (`known`), or one derived from the signature."""
    item = spec.item_shape
    if known is not None and known.item_shape:
        return known
    if any(d is None for d in item):
        raise ServiceError(
            f"model {model.name!r} input {spec.name!r} has a free item dimension, which the "
            "REST APIs of this server do not support",
            status_code=501,
        )
    shape = tuple(int(d) for d in item if d is not None)
    if known is not None:  # the task leaves the item shape to the signature (codes)
        return replace(known, item_shape=shape)
    uint8 = spec.dtype == np.uint8
    return InputContract(
        spec.name,
        shape,
        UINT8_RANGE if uint8 else None,
        integers=spec.dtype.kind in "iu",
    )


class DataPlane:
    """Inference on the models of one registry, through one runner, under one settings object;
    `specs`: the declared models (by name) whose contracts the validation adds."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        runner: ModelRunner,
        specs: Mapping[str, ModelSpec] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.runner = runner
        self.stats = runner.stats
        self.specs: Mapping[str, ModelSpec] = specs or {}
        #: Each input's contract per model version object, derived on its first request. A weak
        #: reference tells a live object from a reloaded one that reused its id, and does not
        #: keep a removed version in memory.
        self._contracts: dict[tuple[int, str], tuple[weakref.ref[ModelVersion], InputContract]] = {}

    def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """The servable version (latest when None): 404 unknown, 503 not loaded."""
        return self.registry.get(name, version)

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Every output of the requested model version for the request's inputs."""
        return await self.infer_on(self.resolve(request.model, request.version), request)

    async def infer_on(self, model: ModelVersion, request: InferenceRequest) -> InferenceResponse:
        """`infer` on a version the caller already resolved (one lookup per request)."""
        requested = self._requested(model, request)
        started = time.perf_counter()
        try:
            outputs, arrays, single, times = await self.runner.limit(
                f"model {model.name!r}", self._validate_and_run(model, request)
            )
        except Exception:
            self.stats.record_request(
                model.name, model.version, 0, time.perf_counter() - started, ok=False
            )
            raise
        response = InferenceResponse(model, outputs, requested, request.id, single, arrays)
        items = next(iter(arrays.values())).shape[0]
        done = time.perf_counter()
        phases = Phases(times[1], times[0], times[2], done - times[3])
        self.stats.record_request(
            model.name, model.version, items, done - started, ok=True, phases=phases
        )
        return response

    @staticmethod
    def _requested(model: ModelVersion, request: InferenceRequest) -> tuple[str, ...]:
        if not request.outputs:
            return tuple(model.outputs)
        for i, name in enumerate(request.outputs):
            if name not in model.outputs:
                raise InvalidInput.for_field(
                    f"outputs[{i}].name",
                    f"one of {sorted(model.outputs)}",
                    describe(name),
                    what="unknown output name",
                )
        return tuple(request.outputs)

    async def _validate_and_run(
        self, model: ModelVersion, request: InferenceRequest
    ) -> tuple[
        dict[str, np.ndarray], dict[str, np.ndarray], bool, tuple[float, float, float, float]
    ]:
        """Outputs, the validated inputs, single, and (input, queue, infer seconds, when the run
        ended) for the statistics."""
        begin = time.perf_counter()
        big = any(isinstance(v, list) and len(v) > _OFFLOAD_ITEMS for v in request.inputs.values())
        if big:  # converting thousands of JSON arrays would stall the event loop
            arrays, single = await anyio.to_thread.run_sync(self.validate, model, request)
        else:
            arrays, single = self.validate(model, request)
        validated = time.perf_counter()
        compute = ComputeTime()
        outputs = await self.runner.execute(model, arrays, compute)
        ended = time.perf_counter()
        infer = min(compute.seconds, ended - validated)
        times = (validated - begin, ended - validated - infer, infer, ended)
        return outputs, arrays, single, times

    def _contract(self, model: ModelVersion, spec: TensorSpec) -> InputContract:
        key = (id(model), spec.name)
        known = self._contracts.get(key)
        if known is not None and known[0]() is model:
            return known[1]
        declared = self.specs.get(model.name)
        contract = contract_of(model, spec, declared.input(spec.name) if declared else None)
        self._contracts[key] = (weakref.ref(model), contract)
        return contract

    def validate(
        self, model: ModelVersion, request: InferenceRequest
    ) -> tuple[dict[str, np.ndarray], bool]:
        """The request's inputs as arrays of the signature's dtypes and shapes (or a 4xx), and
        whether the client sent one unbatched item."""
        inputs = request.inputs
        field = request.field
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
        single = False
        for key, spec in model.inputs.items():
            where = request.fields.get(key) or (
                f"{field}.{key}" if len(model.inputs) > 1 else field
            )
            contract = request.contracts.get(key) or self._contract(model, spec)
            batch, single = as_batch(
                inputs[key],
                where,
                contract.item_shape,
                self.settings.max_items_per_request,
                squeeze_channel=contract.squeeze_channel,
                value_range=contract.value_range,
                integers=contract.integers,
                flat_index=request.flat_index,
            )
            if contract.check is not None:
                contract.check(batch, where, single)
            arrays[key] = fit_to_spec(batch, spec, where, contract.divide_by)
        if len({a.shape[0] for a in arrays.values()}) > 1:
            raise InvalidInput.for_field(
                field, "the same batch size for every input", "different sizes"
            )
        return arrays, single
