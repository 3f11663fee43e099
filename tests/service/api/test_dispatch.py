"""The dispatch table of the POST routes answers exactly as FastAPI's router does.

Two apps over the same models and settings, one with the table, one without (the router alone):
every request below gets the same status, body and headers from both, including the errors (4xx
of bad bodies, unknown models, wrong methods, trailing slashes, a missing API key, an oversized
body) and the routes the table leaves to the router.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from service.api import dispatch
from service.app import create_app
from service.registry import ModelRegistry
from service.settings import Settings

KEY = "k" * 16
IMAGE = [[0.5] * 28] * 28
POTENTIAL = [0.1 * i for i in range(64)]


def _v2(name: str, shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}


V2_IMAGE = _v2("images", [1, 28, 28, 1], [0.5] * 784)
V2_POTENTIAL = _v2("potential", [1, 64], POTENTIAL)

#: (method, path, JSON body or raw bytes, extra headers); None: no body.
REQUESTS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("POST", "/v2/models/digit_classifier/infer", V2_IMAGE, {}),
    ("POST", "/v2/models/digit_classifier/versions/1/infer", V2_IMAGE, {}),
    ("POST", "/v2/models/energy_from_potential/infer", V2_POTENTIAL, {}),
    ("POST", "/v2/models/digit_classifier/versions/9/infer", V2_IMAGE, {}),
    ("POST", "/v2/models/no_such_model/infer", V2_IMAGE, {}),
    ("POST", "/v2/models/digit_classifier/infer", {"inputs": []}, {}),
    ("POST", "/v2/models/digit_classifier/infer", b"{not json", {}),
    ("POST", "/v2/models/digit_classifier/infer", _v2("images", [1, 3], [1.0, 2.0]), {}),
    ("POST", "/v2/models/digit_classifier/infer/", V2_IMAGE, {}),
    ("POST", "/v2/models/digit_classifier/infer", V2_IMAGE, {"X-API-Key": ""}),
    ("POST", "/v2/models/digit_classifier/infer", V2_IMAGE, {"X-API-Key": "wrong"}),
    ("POST", "/v2/models/digit_classifier/infer", b"x" * 5000, {"Content-Type": "text/plain"}),
    ("GET", "/v2/models/digit_classifier/infer", None, {}),
    ("HEAD", "/v2/models/digit_classifier/infer", None, {}),
    ("GET", "/v2/models/digit_classifier", None, {}),
    ("POST", "/v1/models/energy_from_potential:predict", {"instances": [POTENTIAL]}, {}),
    ("POST", "/v1/models/energy_from_potential/versions/1:predict", {"instances": [POTENTIAL]}, {}),
    ("POST", "/v1/models/energy_from_potential:predict", {"instances": [[1.0]]}, {}),
    ("POST", "/v1/models/nothing:predict", {"instances": [POTENTIAL]}, {}),
    ("POST", "/api/v1/digits/classify", {"images": [IMAGE], "scale": "unit"}, {}),
    ("POST", "/api/v1/digits/classify", {"images": [IMAGE]}, {}),
    ("POST", "/api/v1/digits/classify", {"images": "nope", "scale": "unit"}, {}),
    ("POST", "/api/v1/digits/classify/", {"images": [IMAGE], "scale": "unit"}, {}),
    ("GET", "/api/v1/digits/classify", None, {}),
    ("POST", "/api/v1/energy/from-potential", {"potentials": [POTENTIAL]}, {}),
    ("POST", "/api/v1/energy/from-potential", {"potentials": [[1.0, 2.0]]}, {}),
    ("POST", "/api/v1/no/such/route", {}, {}),
    ("POST", "/admin/reload", None, {}),
    ("GET", "/v2/health/ready", None, {}),
]

#: Headers that differ between any two answers (a fresh id, the clock).
VARYING = {"x-request-id", "date"}


def _no_table(app: FastAPI) -> FastAPI:
    """`app` answered by FastAPI's own middleware stack: the router, no dispatch table."""
    app.build_middleware_stack = lambda: FastAPI.build_middleware_stack(app)  # type: ignore[method-assign]
    return app


@pytest.fixture
async def clients(
    settings: Settings, tiny_registry: ModelRegistry
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    keyed = settings.model_copy(update={"api_key": SecretStr(KEY), "max_body_bytes": 4096})
    fast, plain = create_app(keyed, tiny_registry), _no_table(create_app(keyed, tiny_registry))
    async with fast.router.lifespan_context(fast), plain.router.lifespan_context(plain):
        made = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://test")
            for a in (fast, plain)
        ]
        async with made[0] as one, made[1] as two:
            yield one, two


def _send(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> Any:
    headers = {"X-API-Key": KEY, **headers}
    if body is None:
        return client.request(method, path, headers=headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("Content-Type", "application/json")
    return client.request(method, path, content=content, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "headers"), REQUESTS)
async def test_dispatch_answers_as_the_router(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    fast, plain = clients
    ours = await _send(fast, method, path, body, headers)
    theirs = await _send(plain, method, path, body, headers)
    assert ours.status_code == theirs.status_code
    assert ours.content == theirs.content
    drop = VARYING
    assert {k: v for k, v in ours.headers.items() if k not in drop} == {
        k: v for k, v in theirs.headers.items() if k not in drop
    }


async def test_dispatch_serves_the_inference_routes_and_their_errors(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table is in the stack and answers the POST inference routes, errors included."""
    fast, _ = clients
    hits: list[str] = []
    real = dispatch.HotRoutes.match

    def counted(self: dispatch.HotRoutes, path: str) -> Any:
        found = real(self, path)
        hits.append(found[0].route.path if found else "")
        return found

    monkeypatch.setattr(dispatch.HotRoutes, "match", counted)
    ok = await _send(fast, "POST", "/v2/models/digit_classifier/infer", V2_IMAGE, {})
    assert ok.status_code == 200
    missing = await _send(fast, "POST", "/v2/models/no_such_model/infer", V2_IMAGE, {})
    assert missing.status_code == 404
    assert "no_such_model" in missing.json()["error"]
    unauthorised = await _send(fast, "POST", "/api/v1/digits/classify", {}, {"X-API-Key": "x"})
    assert unauthorised.status_code == 401
    assert (await _send(fast, "POST", "/v1/models/a/b:predict", {}, {})).status_code == 404
    assert hits == [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/infer",
        "/api/v1/digits/classify",
        "",
    ]


async def test_dispatch_labels_metrics_with_the_route_template(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fast, plain = clients
    for client in (fast, plain):
        answer = await _send(
            client,
            "POST",
            "/v1/models/energy_from_potential:predict",
            {"instances": [POTENTIAL]},
            {},
        )
        assert answer.status_code == 200
    scraped = [(await c.get("/metrics", headers={"X-API-Key": KEY})).text for c in (fast, plain)]
    line = (
        'mldm_http_requests_total{method="POST",model="energy_from_potential",'
        'route="/v1/models/{name}:predict",status="200"} 1.0'
    )
    assert all(line in text for text in scraped)


def test_table_keeps_the_router_order_and_stops_at_what_it_cannot_reproduce(
    settings: Settings, tiny_registry: ModelRegistry
) -> None:
    app = create_app(settings, tiny_registry)
    table = dispatch.build_table(app.router.routes)
    paths = [entry.route.path for entry in table]
    assert paths[:2] == ["/api/v1/digits/classify", "/api/v1/digits/classify/image"]
    assert "/v2/models/{name}/infer" in paths
    assert "/v1/models/{name}:predict" in paths
    assert "/v2/models/{name}" not in paths  # GET only: the router's
    assert paths.index("/v2/models/{name}/infer") < paths.index("/v1/models/{name}:predict")
