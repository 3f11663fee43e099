"""Overload and departures in the app (issue 23): admission control per model version (503 +
Retry-After at once), the in-flight limit, a client gone before its answer (its queued work never
runs, status 499), the solver's own lane, readiness and late requests while draining."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service import runtime
from service.app import create_app
from service.dataplane import DataPlane
from service.errors import Overloaded
from service.http_protocol import SHUTTING_DOWN
from service.metrics import InferenceStats
from service.registry import ModelRegistry
from service.runtime import Admission
from service.settings import Settings
from service.tasks import digits, energy, model_specs
from tests.service.helpers import assert_error, images, potentials
from tests.service.helpers import value as metric_value

CLASSIFY = "/api/v1/digits/classify"
BODY = {"images": images(1).tolist(), "scale": "unit"}


class Gate:
    """Every unbatched model call waits until `release`; `calls` names the models called."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.calls: list[str] = []

    def release(self) -> None:
        self.opened.set()

    async def wait_for_calls(self, count: int) -> None:
        for _ in range(500):
            if len(self.calls) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} model calls expected, {self.calls}")


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    real = runtime._predict_in_chunks

    def gated(model: Any, *args: Any) -> Any:
        gate.calls.append(model.name)
        gate.opened.wait(20)
        return real(model, *args)

    monkeypatch.setattr(runtime, "_predict_in_chunks", gated)
    yield gate
    gate.release()


@pytest.fixture(autouse=True)
def _not_draining() -> Iterator[None]:
    yield
    SHUTTING_DOWN.clear()


def _app(settings: Settings, registry: ModelRegistry, **changes: Any) -> FastAPI:
    # Batching off: each request is one call of `_predict_in_chunks`, which the gate holds.
    changes = {"batching_enabled": False, "inference_threads": 1, **changes}
    return create_app(settings.model_copy(update=changes), registry)


@pytest.fixture
def make_client(settings: Settings, tiny_registry: ModelRegistry) -> Callable[..., Any]:
    def make(**changes: Any) -> Any:
        app = _app(settings, tiny_registry, **changes)

        class Running:
            async def __aenter__(self) -> tuple[FastAPI, httpx.AsyncClient]:
                self.lifespan = app.router.lifespan_context(app)
                await self.lifespan.__aenter__()
                transport = httpx.ASGITransport(app=app)
                self.client = httpx.AsyncClient(transport=transport, base_url="http://test")
                return app, self.client

            async def __aexit__(self, *exc: object) -> None:
                await self.client.aclose()
                await self.lifespan.__aexit__(None, None, None)

        return Running()

    return make


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
        "state": {},
    }


async def _raw_request(app: FastAPI, gone: asyncio.Event, sent: list[dict[str, Any]]) -> None:
    """A classify request straight through ASGI whose client leaves when `gone` is set."""
    body = httpx.Request("POST", "http://t", json=BODY).read()
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app(_scope(CLASSIFY, body), receive, send)


def _rejected(app: FastAPI, model: str, reason: str) -> float:
    stats: InferenceStats = app.state.dataplane.runner.stats
    registry = CollectorRegistry()
    registry.register(stats.rejected)
    return (
        registry.get_sample_value(
            "mldm_requests_rejected_total", {"model": model, "reason": reason}
        )
        or 0.0
    )


def test_admission_refuses_a_full_queue_at_once_with_retry_after() -> None:
    admission = Admission("model 'm' version 1", "m", 2, 0.25, InferenceStats())
    with admission.admit(1), admission.admit(1), pytest.raises(Overloaded) as refused:  # noqa: SIM117
        with admission.admit(1):
            pass
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert "2 requests are queued or running" in refused.value.message
    assert admission.requests == 0 and admission.items == 0
    with admission.admit(1):  # room again
        pass


def test_admission_refuses_when_the_expected_wait_is_too_long() -> None:
    admission = Admission("model 'm' version 1", "m", 1000, 0.25, InferenceStats())
    for _ in range(3):
        admission.observe(100, 1.0)  # 10 ms per item
    admission.observe(100, 50.0)  # one stall: the median ignores it
    assert admission.seconds_per_item == pytest.approx(0.01)
    # The first: nothing queued before it; the second: 200 ms expected; the third: 260 ms.
    with admission.admit(20), admission.admit(6), pytest.raises(Overloaded) as refused:  # noqa: SIM117
        with admission.admit(1):
            pass
    assert "expected wait is 0.260 s" in refused.value.message
    assert refused.value.headers == {"Retry-After": "1"}


async def test_full_model_queue_is_answered_503_with_retry_after_over_http(
    gate: Gate, make_client: Callable[..., Any]
) -> None:
    async with make_client(queue_max_requests=1) as (app, client):
        first = asyncio.create_task(client.post(CLASSIFY, json=BODY))
        await gate.wait_for_calls(1)
        refused = await client.post(CLASSIFY, json=BODY)
        live = await client.get("/v2/health/ready")
        gate.release()
        answered = await first
    assert_error(refused, 503, "model 'digit_classifier' version 1 is overloaded")
    assert int(refused.headers["retry-after"]) >= 1
    assert live.status_code == 200
    assert answered.status_code == 200
    assert gate.calls == ["digit_classifier"]
    assert _rejected(app, "digit_classifier", "queue") == 1


async def test_requests_beyond_max_in_flight_are_refused_but_probes_answer(
    gate: Gate, make_client: Callable[..., Any]
) -> None:
    async with make_client(max_in_flight=1) as (app, client):
        first = asyncio.create_task(client.post(CLASSIFY, json=BODY))
        await gate.wait_for_calls(1)
        refused = await client.post(CLASSIFY, json=BODY)
        probes = [await client.get(p) for p in ("/v2/health/live", "/v2/health/ready")]
        metrics = await client.get("/metrics")
        gate.release()
        assert (await first).status_code == 200
    assert_error(refused, 503, "more than 1 requests in flight")
    assert refused.headers["retry-after"] == "1"
    assert [p.status_code for p in probes] == [200, 200] and metrics.status_code == 200
    assert _rejected(app, "<server>", "in_flight") == 1


async def test_client_gone_while_queued_has_its_work_dropped_and_counted_499(
    gate: Gate, make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with make_client() as (app, client):
        first = asyncio.create_task(client.post(CLASSIFY, json=BODY))
        await gate.wait_for_calls(1)  # holds the only inference thread
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        second = asyncio.create_task(_raw_request(app, gone, sent))
        model = app.state.registry.get("digit_classifier")
        admission = app.state.dataplane.runner.admission(model)
        for _ in range(200):  # queued behind the first
            if admission.requests == 2:
                break
            await asyncio.sleep(0.01)
        assert admission.requests == 2
        with caplog.at_level("INFO", logger="service.access"):
            gone.set()
            await asyncio.wait_for(second, timeout=5)  # not waiting for the model
        gate.release()
        assert (await first).status_code == 200
        metrics = (await client.get("/metrics")).text
    await asyncio.sleep(0.1)
    assert gate.calls == ["digit_classifier"], "the departed client's request ran"
    assert not [m for m in sent if m["type"] == "http.response.start"]
    route = {"method": "POST", "route": CLASSIFY, "model": "digit_classifier"}
    assert metric_value(metrics, "mldm_http_requests_total", **route, status="499") == 1
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert [r.getMessage() for r in lines] == [f"POST {CLASSIFY} 499"]
    assert not any(r.exc_info for r in caplog.records)


async def test_client_gone_mid_body_is_499_in_one_line_without_traceback(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with make_client() as (app, client):
        body = b'{"images": [[[0.0'
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": body, "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        with caplog.at_level("INFO"):
            await app(_scope(CLASSIFY, body * 100), receive, send)
        metrics = (await client.get("/metrics")).text
    route = {"method": "POST", "route": CLASSIFY, "model": "digit_classifier"}
    assert metric_value(metrics, "mldm_http_requests_total", **route, status="499") == 1
    assert metric_value(metrics, "mldm_http_requests_total", **route, status="500") is None
    access = [r.getMessage() for r in caplog.records if r.name == "service.access"]
    assert access == [f"POST {CLASSIFY} 499"]
    assert not any(r.exc_info for r in caplog.records)


async def test_solver_flood_is_bounded_and_leaves_the_models_free(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, tiny_registry: ModelRegistry
) -> None:
    held = threading.Event()
    started: list[int] = []

    def slow_solver(potentials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started.append(len(potentials))
        held.wait(20)
        return np.zeros(len(potentials)), np.zeros((len(potentials), 64))

    monkeypatch.setattr(energy, "_solver", lambda: slow_solver)
    changes = {"solver_threads": 1, "solver_max_queue": 2, "inference_threads": 1}
    runner = runtime.ModelRunner(settings.model_copy(update=changes))
    dataplane = DataPlane(tiny_registry, runner.settings, runner, model_specs())
    try:
        flood = [asyncio.create_task(energy.exact(dataplane, potentials(1))) for _ in range(2)]
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded, match="the solver lane is overloaded"):
            await energy.exact(dataplane, potentials(1))
        # The solver's thread is taken and its queue full; a classify still answers at once.
        classified = await asyncio.wait_for(digits.classify(dataplane, images(1)), timeout=5)
        assert len(classified.digits) == 1
        assert started == [1]  # one solver call runs, one waits for the lane's thread
    finally:
        held.set()
    assert [len(s.energies) for s in await asyncio.gather(*flood)] == [1, 1]
    await runner.aclose()


async def test_every_response_advertises_the_keep_alive_timeout(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(keep_alive_s=7) as (_, client):
        response = await client.get("/v2/health/live")
    assert response.headers["keep-alive"] == "timeout=7"


async def test_readiness_is_503_while_draining_and_liveness_stays_200(
    make_client: Callable[..., Any],
) -> None:
    async with make_client() as (_, client):
        SHUTTING_DOWN.set()
        ready = await client.get("/v2/health/ready")
        live = await client.get("/v2/health/live")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert live.status_code == 200


async def test_request_cut_off_by_the_end_of_the_grace_is_answered_503_in_our_shape(
    gate: Gate, make_client: Callable[..., Any]
) -> None:
    async with make_client() as (app, _):
        sent: list[dict[str, Any]] = []
        running = asyncio.create_task(_raw_request(app, asyncio.Event(), sent))
        await gate.wait_for_calls(1)
        SHUTTING_DOWN.set()
        running.cancel()  # what uvicorn does to requests still running after the grace
        await asyncio.wait_for(running, timeout=5)
        gate.release()
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 503
    assert b'"error":"the server shut down before the request was answered"' in body


async def test_bodies_past_the_in_flight_budget_are_refused_503() -> None:
    from service.api.limits import BodySizeLimit

    held = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await held.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodySizeLimit(app, max_body_bytes=10_000, max_in_flight_bytes=1_000)

    async def post(length: int) -> list[dict[str, Any]]:
        scope = _scope("/x", b"")
        scope["headers"] = [(b"content-length", str(length).encode())]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"a" * length, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await limited(scope, receive, send)
        return sent

    first = asyncio.create_task(post(5_000))  # alone: over the budget, allowed
    await asyncio.sleep(0.05)
    refused = await post(600)
    held.set()
    assert (await first)[0]["status"] == 200
    assert refused[0]["status"] == 503
    assert (b"retry-after", b"1") in refused[0]["headers"]
    assert b"request bodies in flight would take 5600 bytes" in refused[1]["body"]
    assert limited.in_flight == 0
    assert (await post(600))[0]["status"] == 200  # the budget is free again
