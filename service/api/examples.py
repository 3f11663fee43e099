"""Record the real error responses of every operation, for the OpenAPI documentation.

`python -m service.api.examples` builds the app on the committed models (`models/`), sends each
operation the requests below (one per error status it can answer) and writes what came back to
`service/api/error_examples.json`; `service.api.responses.document_errors` puts them into
`/openapi.json`. tests/service/api/test_examples.py runs the same probes and fails when the
recorded file and the server disagree, so the documented examples stay real responses.

Four app instances answer, all over the same loaded registry: the default settings; one with an
API key (401); one whose models are not loaded (503); one with a 1 ms inference timeout (504).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from pydantic import SecretStr

from service.api.responses import EXAMPLES_FILE
from service.registry import ModelRegistry
from service.settings import REPO_ROOT, Settings
from service.tasks import model_names

API_KEY = "example-api-key-0123456789"
#: The model each `{name}` route is probed with (small inputs, fast).
MODEL = "energy_from_potential"
GRID = 64


@dataclass
class Probe:
    """One request meant to produce `status` from one operation."""

    status: str
    request: str
    app: str = "default"
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    files: dict[str, tuple[str, bytes, str]] | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.new("L", (side, side), 255)  # a dark bar on white: a "1"
    image.paste(0, (side * 9 // 20, side // 5, side * 11 // 20, side * 4 // 5))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


_DIGIT = [[0.0] * 28 for _ in range(28)]
_POTENTIAL = [0.05 * (-15 + 30 * i / 63) ** 2 for i in range(GRID)]
_BIG = 4096  # items in a 504 probe: far more than the model does in 1 ms

#: A valid JSON body per task route, and one with a wrong value (the 422 probe).
_TASK_BODIES: dict[str, tuple[Any, Any, str]] = {
    "/api/v1/digits/classify": (
        {"images": _DIGIT, "scale": "unit"},
        {"images": _DIGIT[:27], "scale": "unit"},
        "an image of 27 rows instead of 28",
    ),
    "/api/v1/digits/compress": (
        {"images": _DIGIT, "scale": "unit"},
        {"images": _DIGIT, "scale": "percent"},
        "a scale that is neither 'unit' nor 'byte'",
    ),
    "/api/v1/digits/decompress": (
        None,  # filled in with a real code, made by the compress route
        {"codes": ["AQACAAAA"]},
        "a code shorter than the encoder's",
    ),
    "/api/v1/energy/from-potential": (
        {"potentials": _POTENTIAL},
        {"potentials": _POTENTIAL[:63]},
        "a potential of 63 points instead of 64",
    ),
    "/api/v1/energy/from-density": (
        {"densities": [63 / 30 / GRID] * GRID},  # uniform: sum(n) * dx = 1
        {"densities": [1.0] * GRID},
        "a density that does not integrate to 1",
    ),
    "/api/v1/energy/exact": (
        {"potentials": _POTENTIAL},
        {"potentials": [*_POTENTIAL[:10], 1e300, *_POTENTIAL[11:]]},
        "a potential with a value of 1e300",
    ),
}

#: The .npy body of each task route's 504 probe (one big batch).
_BIG_NPY = {
    "/api/v1/digits/classify": (np.zeros((_BIG, 28, 28), np.float32), "?scale=unit"),
    "/api/v1/digits/compress": (np.zeros((_BIG, 28, 28), np.float32), "?scale=unit"),
    "/api/v1/energy/from-potential": (np.tile(np.array(_POTENTIAL, np.float32), (_BIG * 4, 1)), ""),
    "/api/v1/energy/from-density": (np.full((_BIG * 4, GRID), 63 / 30 / GRID, np.float32), ""),
    "/api/v1/energy/exact": (np.tile(np.array(_POTENTIAL, np.float32), (_BIG, 1)), ""),
}


#: Operations that answer while their model is loading: the exact solver needs no model, TF
#: Serving's status route reports the state (LOADING) with 200, and a code whose decoder is not
#: loaded yet is refused as a code from an unknown version (422).
_NO_503 = {
    "/api/v1/energy/exact",
    "/v1/models/{name}",
    "/v1/models/{name}/labels/{label}",
    "/api/v1/digits/decompress",
    "/v2/models/{name}/stats",
}
#: The version labels of every probed app, so the /v1 label routes have one to answer for.
LABELS = {MODEL: {"stable": 1}}


def _fill(
    path: str, name: str = MODEL, version: str = "1", file: str = "loss.png", label: str = "stable"
) -> str:
    for key, value in (("name", name), ("version", version), ("file", file), ("label", label)):
        path = path.replace(f"{{{key}}}", value)
    return path


def _predict_bodies(path: str) -> tuple[Any, Any, Any, str]:
    """(valid, invalid, big) bodies of a TF Serving / V2 inference route, and the 4xx story."""
    if path.startswith("/v1/"):
        return (
            {"instances": [_POTENTIAL]},
            {"instances": [_POTENTIAL[:63]]},
            {"instances": [_POTENTIAL] * _BIG},
            "an instance of 63 values instead of 64",
        )

    def v2(rows: int, width: int) -> dict[str, Any]:
        data = (_POTENTIAL[:width]) * rows
        shape = [rows, width]
        return {"inputs": [{"name": "potential", "shape": shape, "datatype": "FP32", "data": data}]}

    return v2(1, GRID), v2(1, 63), v2(_BIG, GRID), "a tensor of shape [1, 63] instead of [1, 64]"


def probes(method: str, path: str, operation: dict[str, Any], code: str) -> list[Probe]:
    """The requests that make `method path` answer each error status it can answer."""
    content_types = operation.get("requestBody", {}).get("content", {})
    declared = operation.get("responses", {})
    json_body = "application/json" in content_types
    multipart = "multipart/form-data" in content_types
    url = _fill(path)
    out: list[Probe] = []

    valid: Any = None
    invalid: Any = None
    big: tuple[np.ndarray, str] | Any = None
    story = ""
    if path in _TASK_BODIES:
        valid, invalid, story = _TASK_BODIES[path]
        if path == "/api/v1/digits/decompress":
            valid = {"codes": [code]}
        big = _BIG_NPY.get(path)
        if path == "/api/v1/digits/decompress":
            row = np.frombuffer(base64.b64decode(code), np.uint8)
            big = (np.tile(row, (_BIG * 4, 1)), "")
    elif path.endswith((":predict", "/infer")):
        valid, invalid, big, story = _predict_bodies(path)

    if operation.get("security") or path.startswith("/admin"):
        out.append(Probe("401", "without the X-API-Key header", app="keyed"))
    if path.startswith("/admin"):
        out.append(Probe("403", "to a server with no API key configured"))
    # TensorFlow Serving's conventions on /v1: the body is JSON whatever its content type says,
    # and invalid arguments are 400, as TF Serving answers them.
    tf_serving = path.startswith("/v1/")
    if path.endswith((":classify", ":regress")):
        out.append(
            Probe(
                "400", "any body: the model has no such signature", content=_json({"examples": []})
            )
        )
    if json_body and tf_serving:
        out.append(Probe("400", story, content=_json(invalid)))
    elif json_body:
        out.append(Probe("400", "a body that is not JSON", content=b'{"oops": [1, 2'))
    # V2 infer, as Triton, also reads JSON whatever the content type.
    if json_body and not tf_serving and not path.startswith("/v2/"):
        out.append(
            Probe(
                "415",
                "a text/plain body",
                headers={"content-type": "text/plain"},
                content=_json(valid),
            )
        )
    if multipart:
        out.append(
            Probe(
                "400",
                "a multipart body with a bad boundary",
                headers={"content-type": "multipart/form-data; boundary=x"},
                content=b"--y\r\nnot a part\r\n",
            )
        )
        out.append(
            Probe(
                "415",
                "a JSON body instead of multipart/form-data",
                content=_json({"file": "digit.png"}),
            )
        )
        out.append(
            Probe(
                "413",
                "a 5000 x 5000 pixel PNG (over MLDM_MAX_IMAGE_PIXELS)",
                files={"file": ("big.png", _png(5000), "image/png")},
            )
        )
        out.append(
            Probe(
                "422",
                "a file that is not an image",
                files={"file": ("digit.png", b"not an image at all", "image/png")},
            )
        )
        out.append(Probe("503", "a PNG while the classifier is not loaded", app="empty"))
        out[-1].files = {"file": ("digit.png", _png(28), "image/png")}
        out.append(Probe("504", "a 4000 x 4000 pixel PNG with a 1 ms timeout", app="slow"))
        out[-1].files = {"file": ("big.png", _png(4000), "image/png")}
    if json_body:
        limit = Settings().max_body_bytes
        out.append(Probe("413", f"a body of {limit + 1} bytes", content=b" " * (limit + 1)))
        if not tf_serving:
            out.append(Probe("422", story, content=_json(invalid)))
    if "406" in declared:
        out.append(
            Probe("406", "Accept: text/csv", headers={"accept": "text/csv"}, content=_json(valid))
        )
    if "{label}" in path:
        out.append(Probe("404", "an unknown version label", path=_fill(path, label="nightly")))
    elif "{file}" in path:
        out.append(Probe("404", "a plot that does not exist", path=_fill(path, file="none.png")))
    elif "{version}" in path:
        missing = _fill(path, MODEL, "99")
        out.append(Probe("404", "a version that does not exist (99)", path=missing))
    elif "{name}" in path:
        out.append(Probe("404", "an unknown model name", path=_fill(path, "no_such_model")))
    needs_model = json_body or "{name}" in path or path == "/v2/health/ready"
    if needs_model and not multipart and path not in _NO_503:
        body = _json(valid) if json_body else b""
        out.append(Probe("503", "while the model is not loaded", app="empty", content=body))
    if big is not None and json_body:
        if isinstance(big, tuple):
            array, query = big
            out.append(
                Probe(
                    "504",
                    f"a .npy batch of {len(array)} with MLDM_REQUEST_TIMEOUT_S=0.001",
                    app="slow",
                    path=url + query,
                    headers={"content-type": "application/x-npy"},
                    content=_npy(array),
                )
            )
        else:
            out.append(
                Probe(
                    "504",
                    f"a batch of {_BIG} with MLDM_REQUEST_TIMEOUT_S=0.001",
                    app="slow",
                    content=_json(big),
                )
            )
    for probe in out:
        probe.method = method
        probe.path = probe.path or url
        if probe.content and "content-type" not in probe.headers and probe.files is None:
            probe.headers["content-type"] = "application/json"
    return out


def _settings(model_dir: Path, **overrides: Any) -> Settings:
    return Settings(model_dir=model_dir, warmup=False, version_labels=LABELS, **overrides)


@asynccontextmanager
async def _clients(registry: ModelRegistry) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    from service.app import create_app

    model_dir = registry.model_dir
    empty = ModelRegistry(model_dir, model_names())  # never loaded: every model not ready
    empty.loaded = True  # so the lifespan leaves it as it is: every model still loading
    apps: dict[str, FastAPI] = {
        "default": create_app(_settings(model_dir), registry),
        "keyed": create_app(_settings(model_dir, api_key=SecretStr(API_KEY)), registry),
        "empty": create_app(_settings(model_dir), empty),
        "slow": create_app(_settings(model_dir, request_timeout_s=0.001), registry),
    }
    async with AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")
            )
        yield clients


async def record(registry: ModelRegistry) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """{"METHOD path": {status: {"request", "response"}}} from the real app, and mismatches."""
    from service.app import create_app

    keyed = create_app(_settings(registry.model_dir, api_key=SecretStr(API_KEY)), registry)
    schema = keyed.openapi()
    recorded: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    async with _clients(registry) as clients:
        compressed = await clients["default"].post(
            "/api/v1/digits/compress", json={"images": _DIGIT, "scale": "unit"}
        )
        code = compressed.json()["codes"][0]
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                key = f"{method.upper()} {path}"
                recorded[key] = {}  # an operation that answers no error is documented so too
                for probe in probes(method.upper(), path, operation, code):
                    response = await clients[probe.app].request(
                        probe.method,
                        probe.path,
                        headers=probe.headers,
                        content=probe.content or None,
                        files=probe.files,
                    )
                    if str(response.status_code) != probe.status:
                        problems.append(
                            f"{key}, {probe.request}: expected {probe.status}, "
                            f"got {response.status_code} {response.text[:200]}"
                        )
                        continue
                    recorded[key][probe.status] = {
                        "request": probe.request,
                        "response": response.json(),
                    }
    for entry in recorded.values():  # statuses in order, so the file diffs well
        ordered = dict(sorted(entry.items()))
        entry.clear()
        entry.update(ordered)
    return recorded, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--out", type=Path, default=EXAMPLES_FILE)
    args = parser.parse_args(argv)
    registry = ModelRegistry(args.model_dir, model_names())
    registry.load(warm_up=True)
    recorded, problems = asyncio.run(record(registry))
    for problem in problems:
        print(problem, file=sys.stderr)
    text = json.dumps(recorded, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    count = sum(map(len, recorded.values()))
    print(f"{count} examples for {len(recorded)} operations -> {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
