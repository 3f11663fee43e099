"""perf_analyzer's `--input-data` files (deploy/perf_analyzer/*.json) are valid requests: every
item, sent as perf_analyzer sends it (one item, the model's dims), is answered 200 by the
committed models over V2, and the files are what deploy/perf_analyzer/input_data.py writes."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.codecs import dtypes
from service.registry import ModelRegistry
from service.settings import REPO_ROOT, Settings
from service.tasks import model_names

FOLDER = REPO_ROOT / "deploy" / "perf_analyzer"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("input_data", FOLDER / "input_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    found = ModelRegistry(REPO_ROOT / "models", model_names())
    found.load()
    return found


@pytest.fixture
async def client(registry: ModelRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=REPO_ROOT / "models", warmup=False), registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("name", model_names())
async def test_every_item_is_a_valid_request(
    name: str, registry: ModelRegistry, client: httpx.AsyncClient
) -> None:
    model = registry.get(name)
    document = json.loads((FOLDER / f"{name}.json").read_text())
    assert document == _script().document(_script().inputs(registry)[name])
    assert len(document["data"]) >= 2
    for item in document["data"]:
        assert set(item) == set(model.inputs)
        tensors = []
        for key, values in item.items():
            spec = model.inputs[key]
            dims = [int(d) for d in spec.shape[1:]]
            tensors.append(
                {
                    "name": key,
                    "shape": [1, *dims],
                    "datatype": dtypes.v2_name(spec.dtype),
                    "data": values,
                }
            )
        answer = await client.post(f"/v2/models/{name}/infer", json={"inputs": tensors})
        assert answer.status_code == 200, answer.text
