"""The walk of one request through `service/`: how many calls of the service's own functions
(on the event loop's thread), over how many files, for one V2 image inference and one task-route
classify (scale byte, then unit), on the tiny test models.

Run: `python -m tests.service.request_walk` (from the repository root)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SERVICE = str(Path("service").resolve())


async def _walk(client: httpx.AsyncClient, method: str, url: str, body: Any) -> dict[str, int]:
    """Calls per service file during one request (after a first, warming one)."""
    await client.request(method, url, json=body)  # warm: first-call imports and caches
    calls: dict[str, int] = {}

    def profile(frame: Any, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if event == "call" and name.startswith(SERVICE) and "/client/" not in name:
            key = name[len(SERVICE) + 1 :]
            calls[key] = calls.get(key, 0) + 1

    sys.setprofile(profile)
    try:
        response = await client.request(method, url, json=body)
    finally:
        sys.setprofile(None)
    assert response.status_code == 200, response.text
    return calls


async def main() -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.service.conftest import build_tiny_models

    root = build_tiny_models(Path(tempfile.mkdtemp()))
    app = create_app(Settings(model_dir=root, warmup=False, batching_enabled=False))
    image = (np.arange(784).reshape(28, 28) % 256).astype(int)
    cases = {
        "V2 infer, one image (JSON)": (
            "POST",
            "/v2/models/digit_classifier/infer",
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "FP32",
                        "shape": [1, 28, 28, 1],
                        "data": (image / 255).ravel().tolist(),
                    }
                ]
            },
        ),
        "task classify, scale=byte": (
            "POST",
            "/api/v1/digits/classify",
            {"images": [image.tolist()], "scale": "byte"},
        ),
        "task classify, scale=unit": (
            "POST",
            "/api/v1/digits/classify",
            {"images": [(image / 255).tolist()], "scale": "unit"},
        ),
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for name, (method, url, body) in cases.items():
                calls = await _walk(client, method, url, body)
                print(f"{name}: {sum(calls.values())} calls in {len(calls)} files")
                for path, count in sorted(calls.items()):
                    print(f"    {path}: {count}")


if __name__ == "__main__":
    asyncio.run(main())
