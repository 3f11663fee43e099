"""The data plane: one validation, one execution path, every output, the statistics."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.dataplane import DataPlane
from service.errors import InferenceTimeout, InvalidInput
from service.registry import ModelRegistry
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import model_specs
from service.types import InferenceRequest
from tests.service.helpers import potentials


@pytest.fixture
async def dataplane(tiny_registry: ModelRegistry, settings: Settings) -> AsyncIterator[DataPlane]:
    runner = ModelRunner(settings)
    yield DataPlane(tiny_registry, settings, runner, model_specs())
    await runner.aclose()


@pytest.fixture(scope="module")
def multi_registry(multi_output_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(multi_output_model_dir, ("energy_from_potential",))
    registry.load()
    return registry


async def test_infer_returns_every_output_of_a_multi_output_model(
    multi_registry: ModelRegistry, settings: Settings
) -> None:
    runner = ModelRunner(settings)
    plane = DataPlane(multi_registry, settings, runner, model_specs())
    V = potentials(3)
    response = await plane.infer(InferenceRequest("energy_from_potential", {"potential": V}))
    assert response.model.version == 2
    assert set(response.outputs) == {"energy", "energy_std", "in_domain"}
    expected = multi_registry.get("energy_from_potential").predict({"potential": V.astype("f4")})
    for name, values in expected.items():
        np.testing.assert_array_equal(response.outputs[name], values)
    assert response.outputs["in_domain"].dtype == np.bool_
    await runner.aclose()


async def test_infer_rejects_unknown_input_name(dataplane: DataPlane) -> None:
    request = InferenceRequest("energy_from_density", {"potential": potentials(1)})
    with pytest.raises(InvalidInput, match="unknown input name"):
        await dataplane.infer(request)


async def test_infer_rejects_unknown_output_name(dataplane: DataPlane) -> None:
    request = InferenceRequest(
        "energy_from_potential", {"potential": potentials(1)}, outputs=["energy", "nope"]
    )
    with pytest.raises(InvalidInput, match=r"outputs\[1\].name: unknown output name"):
        await dataplane.infer(request)


async def test_infer_checks_the_declared_range_for_every_protocol(dataplane: DataPlane) -> None:
    images = np.full((1, 28, 28, 1), 2.0, dtype=np.float32)
    request = InferenceRequest(
        "digit_classifier", {"images": images}, fields={"images": "inputs[0].data"}, flat_index=True
    )
    with pytest.raises(InvalidInput) as info:
        await dataplane.infer(request)
    assert info.value.field == "inputs[0].data[0]"
    assert info.value.expected == "pixels (scale 'unit') in [0, 1]"


async def test_infer_names_flat_index_of_the_bad_value(dataplane: DataPlane) -> None:
    V = potentials(2)
    V[1, 5] = np.nan
    request = InferenceRequest(
        "energy_from_potential", {"potential": V}, fields={"potential": "d"}, flat_index=True
    )
    with pytest.raises(InvalidInput) as info:
        await dataplane.infer(request)
    assert info.value.field == "d[69]"  # 64 + 5


async def test_infer_times_out_including_validation(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    tight = settings.model_copy(
        update={"request_timeout_s": 0.001, "max_items_per_request": 100_000}
    )
    runner = ModelRunner(tight)
    plane = DataPlane(tiny_registry, tight, runner, model_specs())
    # 20,000 nested lists take far longer than 1 ms to validate (in a worker thread): that
    # time counts against the request timeout too.
    slow = InferenceRequest("energy_from_potential", {"potential": potentials(20_000).tolist()})
    with pytest.raises(InferenceTimeout):
        await plane.infer(slow)
    assert plane.stats.of("energy_from_potential", 1).fail.count == 1
    await runner.aclose()


async def test_infer_counts_success_items_and_executions(dataplane: DataPlane) -> None:
    await asyncio.gather(
        *(
            dataplane.infer(InferenceRequest("energy_from_potential", {"potential": potentials(n)}))
            for n in (1, 2, 3)
        )
    )
    stats = dataplane.stats.of("energy_from_potential", 1)
    assert stats.success.count == 3 and stats.inference_count == 6
    assert 1 <= stats.execution_count <= 3
    assert sum(size * d.count for size, d in stats.batches.items()) == 6
    assert stats.last_inference > 0


async def test_task_answer_carries_extra_outputs(multi_client: httpx.AsyncClient) -> None:
    V = potentials(2)
    body = (
        await multi_client.post("/api/v1/energy/from-potential", json={"potentials": V.tolist()})
    ).json()
    assert body["model"] == {"name": "energy_from_potential", "version": 2}
    assert len(body["energies"]) == 2
    assert len(body["energy_std"]) == 2 and [type(x) for x in body["in_domain"]] == [bool, bool]
    v1 = await multi_client.post(
        "/v1/models/energy_from_potential/versions/1:predict", json={"instances": V.tolist()}
    )
    assert list(v1.json()) == ["predictions"] and len(v1.json()["predictions"]) == 2
    rows = (
        await multi_client.post(
            "/v1/models/energy_from_potential:predict", json={"instances": V.tolist()}
        )
    ).json()["predictions"]
    assert set(rows[0]) == {"energy", "energy_std", "in_domain"}


async def test_contract_is_derived_once_per_version_object(dataplane: DataPlane) -> None:
    model = dataplane.resolve("digit_classifier")
    spec = model.input
    first = dataplane._contract(model, spec)
    assert dataplane._contract(model, spec) is first  # kept: no per-request derivation
    images = np.full((1, 28, 28, 1), 2.0, dtype=np.float32)
    request = InferenceRequest("digit_classifier", {"images": images}, fields={"images": "x"})
    for _ in range(2):  # the kept contract checks as the first one did
        with pytest.raises(InvalidInput) as info:
            await dataplane.infer(request)
        assert info.value.expected == "pixels (scale 'unit') in [0, 1]"
    reloaded = dataclasses.replace(model)  # a version reloaded from disk: a new object
    assert dataplane._contract(reloaded, spec) == first
    assert dataplane._contracts[(id(reloaded), spec.name)][0]() is reloaded
