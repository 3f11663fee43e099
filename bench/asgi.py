"""The service's app called in process, no socket, no uvicorn (tests/service/request_cpu.py):
`served_app` (its models loaded, the lifespan run) and `AsgiCall` (one request through it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire


class AsgiCall:
    """One request through an ASGI app, in-process: scope and body in, status out."""

    def __init__(self, app: Any, body: wire.Body) -> None:
        path, _, query = body.path.partition("?")
        headers = [(k.lower().encode(), v.encode()) for k, v in body.headers]
        headers += [(b"content-length", str(len(body.payload)).encode()), (b"host", b"bench")]
        self.app, self.payload, self.status = app, body.payload, 0
        self.scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "scheme": "http"}
        self.scope |= dict(method=body.method, path=path, raw_path=path.encode(), root_path="")
        self.scope |= dict(query_string=query.encode(), headers=headers, http_version="1.1")
        self.scope |= dict(client=("127.0.0.1", 1), server=("127.0.0.1", 80))

    async def __call__(self) -> int:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.payload, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await self.app(dict(self.scope), receive, send)
        return self.status


def stub_predict(self: Any, inputs: Any) -> dict[str, np.ndarray]:
    """Zeros of the output shapes: the service stack without TensorFlow."""
    count = next(iter(inputs.values())).shape[0]
    return {k: np.zeros([count, *spec.shape[1:]], spec.dtype) for k, spec in self.outputs.items()}


@contextlib.asynccontextmanager
async def served_app(model_dir: Path, stub: bool, **settings: Any) -> AsyncIterator[Any]:
    """The service's app with its models loaded (lifespan run), the model stubbed if asked."""
    from service import registry
    from service.app import create_app
    from service.settings import Settings

    models = tuple(c.model for c in wire.CASES.values())
    app = create_app(
        Settings(model_dir=model_dir, expected_models=models, log_level="warning", **settings)
    )
    real = registry.ModelVersion.predict
    async with app.router.lifespan_context(app):
        if stub:
            registry.ModelVersion.predict = stub_predict  # type: ignore[method-assign]
        try:
            yield app
        finally:
            registry.ModelVersion.predict = real  # type: ignore[method-assign]
