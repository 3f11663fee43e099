"""The Python client against the real app: `AsyncClient` over ASGI, `Client` over TCP to uvicorn.

Retries are counted by the server itself (its request counter at /metrics), so nothing of ours
is mocked: a model that failed to load gives real 503s, bad values real 422s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from data.schrodinger import solve_ground_state
from service.app import create_app
from service.client import (
    AsyncClient,
    Client,
    InvalidRequest,
    NotFound,
    ServiceConnectionError,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
)
from service.settings import Settings
from tests.service.helpers import digit_image, encode, images, potentials
from tests.service.live_server import REPO, free_port, live_server
from tests.service.test_observability import value


def _async_client(app: FastAPI, **options: Any) -> AsyncClient:
    return AsyncClient("http://test", transport=httpx.ASGITransport(app=app), **options)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """JSON for every batch size."""
    async with app.router.lifespan_context(app), _async_client(app, binary=False) as client:
        yield client


@pytest.fixture
async def api_npy(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """.npy for every batch size."""
    async with app.router.lifespan_context(app), _async_client(app, binary=True) as client:
        yield client


@pytest.fixture
async def broken_app(broken_model_dir: Path) -> AsyncIterator[FastAPI]:
    """digit_classifier and energy_from_density failed to load (503), the others serve."""
    app = create_app(Settings(model_dir=broken_model_dir, warmup=False))
    async with app.router.lifespan_context(app):
        yield app


async def _count(app: FastAPI, method: str, route: str, model: str, status: int) -> float | None:
    """How many requests the app's /metrics counted with these labels."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        text = (await http.get("/metrics")).text
    labels = {"method": method, "route": route, "model": model, "status": str(status)}
    return value(text, "mldm_http_requests_total", **labels)


# Results match the server's own answers ---------------------------------------------------------


async def test_classify_json_and_npy_give_the_same_result(
    api: AsyncClient, api_npy: AsyncClient
) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    as_json = await api.classify(pixels)  # uint8 -> scale "byte"
    as_npy = await api_npy.classify(pixels)
    assert as_json.probabilities.shape == (5, 10) and as_json.probabilities.dtype == np.float32
    np.testing.assert_array_equal(as_json.probabilities, as_npy.probabilities)
    np.testing.assert_array_equal(as_json.digits, as_json.probabilities.argmax(axis=1))
    np.testing.assert_array_equal(as_json.digits, as_npy.digits)
    assert as_json.model == as_npy.model
    assert as_json.model is not None and as_json.model.name == "digit_classifier"
    np.testing.assert_allclose(as_json.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    unit = await api.classify(pixels / 255.0, scale="unit")
    np.testing.assert_allclose(unit.probabilities, as_json.probabilities, rtol=1e-5, atol=1e-6)


async def test_single_items_come_back_as_a_batch_of_one(api: AsyncClient) -> None:
    one = await api.classify(images(1)[0])
    assert one.probabilities.shape == (1, 10) and one.digits.shape == (1,)
    energy = await api.energy_from_potential(potentials(1)[0])
    assert energy.energies.shape == (1,)


async def test_compress_decompress_round_trip_in_both_formats(
    api: AsyncClient, api_npy: AsyncClient
) -> None:
    batch = images(4, seed=5).astype(np.float32)
    codes = await api.compress(batch)
    assert codes == await api_npy.compress(batch)
    assert len(codes) == 4 and {len(code) for code in codes} == {3 + 49}  # newest encoder: v2
    assert all(code[:3] == b"\x01\x00\x02" for code in codes)
    restored = await api.decompress(codes)
    assert restored.shape == (4, 28, 28) and restored.dtype == np.float32
    np.testing.assert_array_equal(restored, await api_npy.decompress(codes))
    # The tiny codec averages 4x4 blocks: the mean of each image survives the round trip.
    np.testing.assert_allclose(restored.mean(axis=(1, 2)), batch.mean(axis=(1, 2)), atol=0.02)


async def test_energy_from_potential_with_exact_matches_the_solver(
    api: AsyncClient, api_npy: AsyncClient
) -> None:
    V = potentials(3)
    exact, _ = solve_ground_state(V)
    for client in (api, api_npy):
        result = await client.energy_from_potential(V, include_exact=True)
        assert result.exact is not None and result.errors is not None
        np.testing.assert_allclose(result.exact, exact, rtol=1e-9)
        np.testing.assert_allclose(result.errors, result.energies - result.exact, atol=1e-6)
        assert result.model is not None and result.model.name == "energy_from_potential"
    plain = await api_npy.energy_from_potential(V)
    assert plain.exact is None and plain.energies.shape == (3,)


async def test_exact_and_energy_from_density_chain(api: AsyncClient, api_npy: AsyncClient) -> None:
    V = potentials(2, seed=4)
    solution = await api.exact(V)
    expected_energies, expected_densities = solve_ground_state(V)
    np.testing.assert_allclose(solution.energies, expected_energies, rtol=1e-9)
    np.testing.assert_allclose(solution.densities, expected_densities, rtol=1e-9, atol=1e-12)
    binary = await api_npy.exact(V)
    np.testing.assert_allclose(binary.densities, solution.densities, rtol=1e-12)
    from_json = await api.energy_from_density(solution.densities)
    from_npy = await api_npy.energy_from_density(solution.densities)
    np.testing.assert_allclose(from_json.energies, from_npy.energies, rtol=1e-6)
    with_exact = await api_npy.energy_from_density(solution.densities, potentials=V)
    assert with_exact.exact is not None  # potentials force JSON, which carries the exact part
    np.testing.assert_allclose(with_exact.exact, expected_energies, rtol=1e-9)


async def test_classify_image_uploads_a_png(api: AsyncClient) -> None:
    result = await api.classify_image(encode(digit_image()))
    assert result.probabilities.shape == (1, 10) and 0 <= int(result.digits[0]) <= 9


async def test_server_calls(api: AsyncClient) -> None:
    assert await api.health() is True
    assert await api.ready() is True
    models = {model.name: model for model in await api.models()}
    assert models["digit_encoder"].versions == [1, 2] and models["digit_encoder"].ready
    metadata = await api.metadata("digit_decoder", version=1)
    assert metadata["model_spec"]["version"] == "1"
    assert (await api.metadata("digit_decoder"))["model_spec"]["version"] == "2"


# Errors and retries ---------------------------------------------------------------------------


async def test_invalid_values_raise_the_server_message_without_retry(app: FastAPI) -> None:
    bad = images(2)
    bad[1, 3, 4] = 2.0
    async with app.router.lifespan_context(app), _async_client(app, backoff_s=0.001) as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.classify(bad, scale="unit")
    error = caught.value
    assert error.status_code == 422
    assert error.field == "images[1][3][4]"
    assert error.message.startswith("images[1][3][4]: value out of range")
    assert error.body["received"] == "2"
    assert error.request_id and error.request_id in str(error)
    assert await _count(app, "POST", "/api/v1/digits/classify", "digit_classifier", 422) == 1


async def test_not_found_is_raised_at_once(app: FastAPI) -> None:
    async with app.router.lifespan_context(app), _async_client(app, backoff_s=0.001) as client:
        with pytest.raises(NotFound, match="has no version 7"):
            await client.metadata("digit_decoder", version=7)
    route = "/v1/models/{name}/versions/{version}/metadata"
    assert await _count(app, "GET", route, "digit_decoder", 404) == 1


async def test_503_is_retried_with_backoff_then_raised(broken_app: FastAPI) -> None:
    async with _async_client(broken_app, retries=2, backoff_s=0.001) as client:
        with pytest.raises(ServiceUnavailable) as caught:
            await client.classify(images(1))
        assert caught.value.status_code == 503
        assert "model 'digit_classifier' is not available" in caught.value.message
        # Other models keep serving through the same client.
        assert (await client.energy_from_potential(potentials(1))).energies.shape == (1,)
    assert await _count(broken_app, "POST", "/api/v1/digits/classify", "digit_classifier", 503) == 3


async def test_ready_answers_false_without_retrying(broken_app: FastAPI) -> None:
    async with _async_client(broken_app, retries=3, backoff_s=0.001) as client:
        assert await client.ready() is False
    assert await _count(broken_app, "GET", "/v2/health/ready", "", 503) == 1


async def test_api_key_is_sent_when_configured(tiny_model_dir: Path) -> None:
    key = "c" * 24
    app = create_app(Settings(model_dir=tiny_model_dir, warmup=False, api_key=key))
    async with app.router.lifespan_context(app):
        async with _async_client(app, api_key=key) as client:
            assert len(await client.models()) == 5
        async with _async_client(app) as client:
            with pytest.raises(Unauthorized) as caught:
                await client.models()
    assert caught.value.field == "X-API-Key"


def test_refused_connection_is_a_service_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, retries=1, backoff_s=0.001) as client,
        pytest.raises(ServiceConnectionError) as caught,
    ):
        client.health()
    assert caught.value.status_code is None and "ConnectError" in str(caught.value)


def test_client_import_does_not_load_tensorflow() -> None:
    script = (
        "import sys\nimport service.client\n"
        "heavy = [m for m in ('tensorflow', 'fastapi', 'service.app') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


# The blocking client over TCP, against `python -m service` -------------------------------------


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The real server on a loopback port; yields its URL and the file its output goes to."""
    log = tmp_path_factory.mktemp("server") / "stderr.log"
    env = {"MLDM_WARMUP": "false", "MLDM_LOG_FORMAT": "json", "MLDM_LOG_LEVEL": "info"}
    with live_server(tiny_model_dir, log, env, ready_within_s=180) as running:
        yield running.url, log


def test_blocking_client_over_tcp(server: tuple[str, Path]) -> None:
    url, _ = server
    with Client(url, timeout=30) as client:
        assert client.ready() is True
        pixels = (images(3, seed=8) * 255).astype(np.uint8)
        result = client.classify(pixels)
        assert result.probabilities.shape == (3, 10)
        big = client.classify(np.repeat(pixels, 30, axis=0))  # 90 images: sent as .npy
        np.testing.assert_array_equal(big.digits[::30], result.digits)
        codes = client.compress(pixels)
        assert client.decompress(codes).shape == (3, 28, 28)
        V = potentials(2)
        assert client.energy_from_potential(V, include_exact=True).exact is not None
        assert client.exact(V).densities.shape == (2, 64)
        assert {m.name for m in client.models()} >= {"digit_classifier", "digit_decoder"}


#: What TensorFlow's native (C++) runtime prints itself, outside Python's logging, at import.
_TF_NATIVE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} ")


def _python_log_lines(text: str) -> list[str]:
    """The lines of Python's logging: every line but TensorFlow's native ones, which must be all
    that is not JSON."""
    lines = [line for line in text.splitlines() if line.strip()]
    foreign = [line for line in lines if not line.startswith("{")]
    assert all(_TF_NATIVE.match(line) for line in foreign), foreign
    return [line for line in lines if line.startswith("{")]


def test_server_logs_json_lines_with_the_request_id_of_the_error(
    server: tuple[str, Path],
) -> None:
    url, log = server
    with Client(url) as client, pytest.raises(ServiceError) as caught:
        client.energy_from_potential(np.zeros((2, 63)))
    request_id = caught.value.request_id
    assert caught.value.status_code == 422 and request_id
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in _python_log_lines(log.read_text())]
        mine = [line for line in lines if line.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(line["route"], line["status"]) for line in mine] == [
        ("/api/v1/energy/from-potential", 422)
    ]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)


@pytest.mark.parametrize("mode", ["exact", "auto", "model"])
async def test_energy_answers_carry_mode_uncertainty_and_domain(
    api: AsyncClient, mode: Literal["model", "exact", "auto"]
) -> None:
    V = potentials(3, seed=7)

    result = await api.energy_from_potential(V, mode=mode)

    assert result.mode == mode and result.answered_by is not None
    assert len(result.answered_by) == 3 and set(result.answered_by) <= {"model", "exact solver"}
    if mode == "exact":
        assert result.answered_by == ["exact solver"] * 3
        np.testing.assert_allclose(result.energies, solve_ground_state(V)[0], rtol=1e-9)
    assert result.energy_std is not None and result.energy_std.shape == (3,)
    assert result.energy_interval_95 is not None and result.energy_interval_95.shape == (3, 2)
    assert result.in_domain is not None and result.in_domain.dtype == bool
    assert result.domain_reason_text is not None and len(result.domain_reason_text) == 3
    solver = np.array([who == "exact solver" for who in result.answered_by])
    np.testing.assert_array_equal(result.energy_std[solver], 0.0)


async def test_classification_carries_the_digit_flag_where_the_version_has_one(
    api: AsyncClient,
) -> None:
    result = await api.classify(np.zeros((2, 28, 28), np.uint8))

    if result.is_digit is None:  # a version without the flag says nothing rather than guess
        assert result.ood_score is None
    else:
        assert result.is_digit.shape == (2,) and result.is_digit.dtype == bool
        assert result.ood_score is not None and result.ood_score.shape == (2,)


async def test_bulk_answers_keep_every_field(api: AsyncClient, api_npy: AsyncClient) -> None:
    V = potentials(3, seed=8)

    as_json = await api.energy_from_potential(V, include_exact=True, mode="auto")
    bulk = await api_npy.energy_from_potential(V, include_exact=True, mode="auto")

    assert bulk.answered_by == as_json.answered_by and bulk.mode == "auto"
    for name in ("energies", "exact", "errors", "energy_std", "energy_interval_95", "in_domain"):
        np.testing.assert_allclose(getattr(bulk, name), getattr(as_json, name), rtol=1e-6)
    assert bulk.domain_reason_text == as_json.domain_reason_text
    images = np.zeros((2, 28, 28), np.uint8)
    json_digits, bulk_digits = await api.classify(images), await api_npy.classify(images)
    np.testing.assert_array_equal(bulk_digits.digits, json_digits.digits)
    assert (bulk_digits.is_digit is None) == (json_digits.is_digit is None)
