"""Fixtures for the service tests: tiny real SavedModels that follow the model contract.

The models are exported once per session into a temporary `models/` folder with TensorFlow
Serving's layout and `serving_default` signatures exactly as docs/ARCHITECTURE.md specifies
(names, dtypes, shapes), with two versions of the encoder and decoder of different code lengths,
so version-pinned decoding is exercised. Fixtures chain: model dir -> registry -> settings -> app
-> client, as in MLServer's tests.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.dataplane import DataPlane
from service.registry import ModelRegistry
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import model_names, model_specs
from training.tiny_models import (  # noqa: F401 (re-exported for the tests)
    TINY_CODE_LENGTH,
    build_tiny_models,
    export_multi_output_energy,
)

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_registry(tiny_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(tiny_model_dir, model_names())
    registry.load(warm_up=True)
    return registry


@pytest.fixture(scope="session")
def broken_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models, energy_from_density's only version corrupt and the classifier missing."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    (root / "energy_from_density" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    shutil.rmtree(root / "digit_classifier")
    return root


@pytest.fixture
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(
        model_dir=tiny_model_dir,
        max_items_per_request=64,
        max_body_bytes=2 * 1024 * 1024,
        max_image_pixels=1_000_000,
        warmup=False,
    )


@pytest.fixture
async def service(tiny_registry: ModelRegistry, settings: Settings) -> AsyncIterator[DataPlane]:
    runner = ModelRunner(settings)
    yield DataPlane(tiny_registry, settings, runner, model_specs())
    await runner.aclose()


@pytest.fixture
def app(settings: Settings, tiny_registry: ModelRegistry) -> FastAPI:
    return create_app(settings, tiny_registry)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(scope="session")
def multi_output_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models plus energy_from_potential version 2 with extra outputs."""
    root = tmp_path_factory.mktemp("multi")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    export_multi_output_energy(root / "energy_from_potential" / "2")
    return root


@pytest.fixture
async def multi_client(
    multi_output_model_dir: Path, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"model_dir": multi_output_model_dir}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
