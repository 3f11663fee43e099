"""Metrics at /metrics, request ids, JSON-lines logs and gzip, through the real app."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.logs import JsonFormatter, logging_config
from service.registry import ModelRegistry
from service.settings import Settings
from tests.service.helpers import images, potentials, value

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def broken_client(broken_model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=broken_model_dir, warmup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the service's loggers write, formatted as the server's JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_metrics_count_requests_by_route_template_model_and_status(
    client: httpx.AsyncClient,
) -> None:
    body = {"images": images(2).tolist(), "scale": "unit"}
    for _ in range(2):
        assert (await client.post("/api/v1/digits/classify", json=body)).status_code == 200
    bad = await client.post("/api/v1/digits/classify", json={"images": [[2.0] * 28] * 28})
    assert bad.status_code == 422
    predict = await client.post(
        "/v1/models/energy_from_potential:predict", json={"instances": potentials(1).tolist()}
    )
    assert predict.status_code == 200
    assert (await client.get("/no/such/route/12345")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    classify = {"method": "POST", "route": "/api/v1/digits/classify", "model": "digit_classifier"}
    assert value(text, "mldm_http_requests_total", **classify, status="200") == 2
    assert value(text, "mldm_http_requests_total", **classify, status="422") == 1
    assert value(text, "mldm_http_request_duration_seconds_count", **classify, status="200") == 2
    predict_labels = {
        "method": "POST",
        "route": "/v1/models/{name}:predict",
        "model": "energy_from_potential",
        "status": "200",
    }
    assert value(text, "mldm_http_requests_total", **predict_labels) == 1
    unmatched = {"method": "GET", "route": "<unmatched>", "model": "", "status": "404"}
    assert value(text, "mldm_http_requests_total", **unmatched) == 1
    assert "12345" not in text  # raw paths never become label values


async def test_metrics_do_not_label_unknown_model_names(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models/made_up_model_77")).status_code == 404
    text = (await client.get("/metrics")).text
    labels = {"method": "GET", "route": "/v1/models/{name}", "model": "", "status": "404"}
    assert value(text, "mldm_http_requests_total", **labels) == 1
    assert "made_up_model_77" not in text


async def test_metrics_report_model_state_and_versions(broken_client: httpx.AsyncClient) -> None:
    text = (await broken_client.get("/metrics")).text
    assert value(text, "mldm_model_ready", model="energy_from_potential") == 1
    assert value(text, "mldm_model_ready", model="digit_classifier") == 0
    assert value(text, "mldm_model_state", model="energy_from_density", state="END") == 1
    assert value(text, "mldm_model_state", model="energy_from_density", state="AVAILABLE") == 0
    assert value(text, "mldm_model_state", model="digit_encoder", state="AVAILABLE") == 1
    for version in ("1", "2"):
        assert value(text, "mldm_model_version_loaded", model="digit_encoder", version=version)
    assert value(text, "mldm_model_latest_version", model="digit_decoder") == 2
    assert value(text, "mldm_model_version_failed", model="energy_from_density", version="1") == 1


async def test_metrics_record_batch_sizes_and_queue_wait(client: httpx.AsyncClient) -> None:
    sizes = [1, 2, 3, 4, 5, 6]
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/energy/from-potential", json={"potentials": potentials(n).tolist()}
            )
            for n in sizes
        )
    )
    assert [r.status_code for r in responses] == [200] * len(sizes)
    text = (await client.get("/metrics")).text
    model = "energy_from_potential"
    batches = value(text, "mldm_batch_size_items_count", model=model)
    assert batches is not None and 1 <= batches <= len(sizes)
    assert value(text, "mldm_batch_size_items_sum", model=model) == sum(sizes)
    assert value(text, "mldm_batch_queue_wait_seconds_count", model=model) == batches


async def test_metrics_of_two_apps_are_separate(
    settings: Settings, tiny_registry: ModelRegistry
) -> None:
    first, second = create_app(settings, tiny_registry), create_app(settings, tiny_registry)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b") as b,
    ):
        assert (await a.get("/v2/health/live")).status_code == 200
        labels = {"method": "GET", "route": "/v2/health/live", "model": "", "status": "200"}
        assert value((await a.get("/metrics")).text, "mldm_http_requests_total", **labels) == 1
        assert value((await b.get("/metrics")).text, "mldm_http_requests_total", **labels) is None


async def test_metrics_can_be_switched_off_or_put_behind_the_api_key(
    tiny_model_dir: Path,
) -> None:
    key = "m" * 20
    off = create_app(Settings(model_dir=tiny_model_dir, warmup=False, metrics_enabled=False))
    guarded = create_app(
        Settings(model_dir=tiny_model_dir, warmup=False, api_key=key, metrics_require_api_key=True)
    )
    open_ = create_app(Settings(model_dir=tiny_model_dir, warmup=False, api_key=key))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://b") as b,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=open_), base_url="http://c") as c,
    ):
        assert (await a.get("/metrics")).status_code == 404
        refused = await b.get("/metrics")
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        assert (await b.get("/metrics", headers={"X-API-Key": key})).status_code == 200
        assert (await c.get("/metrics")).status_code == 200


def test_settings_refuse_metrics_key_without_api_key() -> None:
    with pytest.raises(ValueError, match="metrics_require_api_key needs api_key"):
        Settings(metrics_require_api_key=True)


async def test_request_id_is_echoed_when_sane_and_replaced_otherwise(
    client: httpx.AsyncClient,
) -> None:
    given = await client.get("/v2/health/live", headers={"X-Request-ID": "trace-42.abc_DEF"})
    assert given.headers["x-request-id"] == "trace-42.abc_DEF"
    for bad in ("has space", "x" * 129, "tab\there", "caf\u00e9".encode()):
        response = await client.get("/v2/health/live", headers={"X-Request-ID": bad})
        generated = response.headers["x-request-id"]
        assert generated != bad and len(generated) == 32 and int(generated, 16) >= 0
    fresh = [(await client.get("/v2/health/live")).headers["x-request-id"] for _ in range(2)]
    assert fresh[0] != fresh[1]


async def test_request_id_is_on_error_responses_too(client: httpx.AsyncClient) -> None:
    too_big = await client.post(
        "/api/v1/energy/exact",
        content=b"0" * (3 * 1024 * 1024),
        headers={"Content-Type": "application/json", "X-Request-ID": "big-body-1"},
    )
    assert too_big.status_code == 413
    assert too_big.headers["x-request-id"] == "big-body-1"
    missing = await client.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "lost-1")


async def test_log_lines_are_json_with_the_request_id_and_no_body(
    client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    marker = 0.123456789
    response = await client.post(
        "/api/v1/energy/from-potential",
        json={"potentials": [[marker] * 64]},
        headers={"X-Request-ID": "req-json-1"},
    )
    assert response.status_code == 200
    bad = await client.post("/api/v1/energy/from-potential", json={"potentials": [[1.0] * 3]})
    assert bad.status_code == 422

    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert lines, "nothing was logged"
    for line in lines:
        assert {"ts", "level", "logger", "message", "request_id"} <= set(line)
    [access] = [line for line in lines if line["request_id"] == "req-json-1"]
    assert access["logger"] == "service.access"
    assert access["method"] == "POST"
    assert access["route"] == "/api/v1/energy/from-potential"
    assert access["status"] == 200
    assert access["model"] == "energy_from_potential"
    assert access["duration_ms"] >= 0
    [refused] = [line for line in lines if line.get("status") == 422]
    assert refused["request_id"] == bad.headers["x-request-id"]
    assert str(marker) not in log_lines.getvalue()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logging_config_writes_the_chosen_format(log_format: str) -> None:
    script = (
        "import logging, logging.config\n"
        "from service.logs import logging_config\n"
        "from service.settings import Settings\n"
        f"logging.config.dictConfig(logging_config(Settings(log_format='{log_format}', "
        "log_level='warning')))\n"
        "logging.getLogger('uvicorn.error').warning('from uvicorn')\n"
        "logging.getLogger('service.x').info('below the level')\n"
        "logging.getLogger('service.x').error('boom %d', 7)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    if log_format == "json":
        first, second = (json.loads(line) for line in lines)
        assert (first["logger"], first["message"], first["level"]) == (
            "uvicorn.error",
            "from uvicorn",
            "warning",
        )
        assert (second["message"], second["level"], second["request_id"]) == (
            "boom 7",
            "error",
            None,
        )
    else:
        assert lines[1].endswith("ERROR service.x [-] boom 7")


def test_logging_config_silences_uvicorn_access_log() -> None:
    config = logging_config(Settings())
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    assert config["loggers"]["uvicorn.access"]["handlers"] == []


async def test_gzip_compresses_large_inference_answers_only(
    app: FastAPI, client: httpx.AsyncClient, tiny_model_dir: Path
) -> None:
    """As Triton: inference answers, when the client accepts gzip; never metadata, statistics
    or documents (tritonclient.http.aio inflates inference answers only)."""
    headers = {"Accept-Encoding": "gzip"}
    tensor = {"name": "code", "shape": [4, 16], "datatype": "UINT8", "data": [7] * 64}
    url = "/v2/models/digit_decoder/versions/1/infer"
    body = {"inputs": [tensor]}
    large = await client.post(url, json=body, headers=headers)
    assert large.headers.get("content-encoding") == "gzip"
    assert len(large.json()["outputs"][0]["data"]) == 4 * 784  # httpx decompresses it
    asked_not = await client.post(url, json=body, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in asked_not.headers
    for path in ("/openapi.json", "/v2/models/stats", "/v2/models/digit_classifier"):
        document = await client.get(path, headers=headers)
        assert document.status_code == 200 and "content-encoding" not in document.headers, path
    small = await client.get("/v2/health/live", headers=headers)
    assert "content-encoding" not in small.headers
    plain = create_app(Settings(model_dir=tiny_model_dir, warmup=False, gzip_min_bytes=0))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=plain), base_url="http://t"
    ) as other:
        assert "content-encoding" not in (await other.get("/openapi.json", headers=headers)).headers
