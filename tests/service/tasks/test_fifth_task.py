"""A fifth task, added by its own module (`norm_task.py`) and its model folder only, is served
on its task route, V2, TF Serving, the metadata routes, the model list, readiness, the OpenAPI
document and `/docs`, the metrics and the Python client, and its contract is checked on every
protocol."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.client import AsyncClient
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks import TASKS, model_names
from tests.service.tasks import norm_task

VECTORS = np.array([[3.0, 4.0, 0.0], [1.0, 2.0, 2.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def five_task_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four tasks' tiny models and the fifth task's own folder."""
    root = tmp_path_factory.mktemp("five-tasks")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    norm_task.export_model(root)
    return root


@pytest.fixture(scope="module")
def five_task_registry(five_task_model_dir: Path) -> ModelRegistry:
    """Loaded once for the module: what the app's lifespan would load from its model dir."""
    registry = ModelRegistry(five_task_model_dir, (*model_names(), norm_task.NAME))
    registry.load(warm_up=False)
    return registry


@pytest.fixture
async def app(
    five_task_model_dir: Path, five_task_registry: ModelRegistry
) -> AsyncIterator[FastAPI]:
    settings = Settings(model_dir=five_task_model_dir, warmup=False)
    app = create_app(settings, five_task_registry, tasks=(*TASKS, norm_task.TASK))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_fifth_task_is_served_on_its_route(client: httpx.AsyncClient) -> None:
    response = await client.post(norm_task.ROUTE, json={"vectors": VECTORS.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "vector_norm", "version": 1}
    np.testing.assert_allclose(body["norms"], [5.0, 3.0], rtol=1e-6)


async def test_fifth_task_contract_is_checked_on_every_protocol(client: httpx.AsyncClient) -> None:
    bad = VECTORS.copy()
    bad[1, 2] = 5000.0
    task = await client.post(norm_task.ROUTE, json={"vectors": bad.tolist()})
    assert task.status_code == 422
    assert task.json()["field"] == "vectors[1][2]"
    tensor = {"name": "vectors", "datatype": "FP32", "shape": [2, 3], "data": bad.ravel().tolist()}
    v2 = await client.post("/v2/models/vector_norm/infer", json={"inputs": [tensor]})
    assert v2.status_code == 422
    assert v2.json()["field"] == "inputs[0].data[5]"
    assert "vector components in [-1000, 1000]" in v2.json()["expected"]
    tf = await client.post("/v1/models/vector_norm:predict", json={"instances": bad.tolist()})
    assert tf.status_code == 400  # TF Serving's INVALID_ARGUMENT
    assert tf.json()["field"] == "instances[1][2]"


async def test_fifth_task_is_served_on_v2_and_tf_serving(client: httpx.AsyncClient) -> None:
    tensor = {"name": "vectors", "datatype": "FP32", "shape": [2, 3], "data": VECTORS.tolist()}
    v2 = await client.post("/v2/models/vector_norm/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert (output["name"], output["shape"]) == ("norm", [2])
    np.testing.assert_allclose(output["data"], [5.0, 3.0], rtol=1e-6)
    tf = await client.post("/v1/models/vector_norm:predict", json={"instances": VECTORS.tolist()})
    assert tf.status_code == 200, tf.text
    np.testing.assert_allclose(tf.json()["predictions"], [5.0, 3.0], rtol=1e-6)


async def test_fifth_task_has_metadata_readiness_and_a_place_in_the_list(
    client: httpx.AsyncClient,
) -> None:
    v2 = (await client.get("/v2/models/vector_norm")).json()
    assert v2["inputs"] == [{"name": "vectors", "datatype": "FP32", "shape": [-1, 3]}]
    tf = (await client.get("/v1/models/vector_norm/metadata")).json()
    assert tf["model_spec"]["name"] == "vector_norm"
    status = (await client.get("/v1/models/vector_norm")).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    listed = (await client.get("/api/v1/models")).json()["models"]
    assert [m["name"] for m in listed if m["ready"]] == [*model_names(), "vector_norm"]
    assert (await client.get("/v2/models/vector_norm/ready")).json()["ready"] is True
    assert (await client.get("/v2/health/ready")).status_code == 200


async def test_fifth_task_is_in_the_openapi_document_and_docs(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"][norm_task.ROUTE]["post"]
    assert operation["tags"] == ["vectors"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NormRequest"
    }
    assert "NormRequest" in schema["components"]["schemas"]
    assert "NormResponse" in schema["components"]["schemas"]
    assert "422" in operation["responses"]  # the task routes' documented errors
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


async def test_fifth_task_route_is_labelled_with_its_model_in_metrics(
    client: httpx.AsyncClient,
) -> None:
    await client.post(norm_task.ROUTE, json={"vectors": VECTORS.tolist()})
    metrics = (await client.get("/metrics")).text
    assert f'route="{norm_task.ROUTE}"' in metrics
    line = next(m for m in metrics.splitlines() if f'route="{norm_task.ROUTE}"' in m)
    assert 'model="vector_norm"' in line


async def test_fifth_task_through_the_python_client(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://test", transport=transport) as api:
        inference = await api.infer("vector_norm", {"vectors": VECTORS})
        np.testing.assert_allclose(inference.outputs["norm"], [5.0, 3.0], rtol=1e-6)
        metadata = await api.metadata("vector_norm")
        assert metadata["model_spec"]["name"] == "vector_norm"
        assert "vector_norm" in [m.name for m in await api.models()]


def test_readiness_waits_for_the_fifth_task_model_by_default(five_task_model_dir: Path) -> None:
    app = create_app(Settings(model_dir=five_task_model_dir), tasks=(*TASKS, norm_task.TASK))
    assert app.state.registry.expected == (*model_names(), "vector_norm")
    only = create_app(Settings(model_dir=five_task_model_dir, expected_models=("vector_norm",)))
    assert only.state.registry.expected == ("vector_norm",)
