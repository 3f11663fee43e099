"""What a task is, and the steps its modules share (docs/ARCHITECTURE.md, "Adding a task").

A task is one module under `service/tasks/` that ends with `TASK = Task(name, models, router)`:
`models`, the `ModelSpec` of each model it serves (input contracts, primary output, the task
routes that use it); `router`, its HTTP routes (`task_router()`), each a thin handler that reads
the body with its request schema, calls the task's pre-step -> data plane -> post-step
functions (plain functions of the `DataPlane`, which tests call directly) and encodes the
answer. `service.tasks.TASKS` registers the modules; the app serves what it is given, so a test
can add a task without touching any other file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.body import json_body, media_type, read_body
from service.api.deps import FastRoute, require_api_key
from service.api.errors import ERRORS
from service.api.negotiation import JSON, NPY, NPY_RESPONSE, negotiate
from service.contracts import InputContract, ModelSpec
from service.dataplane import DataPlane
from service.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, describe
from service.registry import ModelVersion
from service.types import InferenceRequest, InferenceResponse

#: Nested-list inputs with more items than this are checked in a worker thread.
OFFLOAD_ITEMS = 64

Extras = Mapping[str, np.ndarray]
M = TypeVar("M", bound=BaseModel)
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class Task:
    """One task of the API: the models it serves and its routes."""

    name: str
    models: tuple[ModelSpec, ...]
    router: APIRouter


def task_router() -> APIRouter:
    """The router of a task's routes: under `/api/v1`, the API key, the documented errors."""
    return APIRouter(
        prefix="/api/v1",
        responses=ERRORS,
        dependencies=[Depends(require_api_key)],
        route_class=FastRoute,
    )


def array_route(
    router: APIRouter,
    path: str,
    tag: str,
    body: type[BaseModel],
    answer: type[BaseModel],
    npy_query: dict[str, str],
    *,
    exclude_none: bool = False,
) -> Callable[[Endpoint], Endpoint]:
    """`router.post` of a route whose body is `body` as JSON, or a .npy array with the query
    parameters of `npy_query` (name -> description), and whose answer is `answer` as JSON or
    its main output as .npy (`Accept: application/x-npy`)."""
    decorate: Callable[[Endpoint], Endpoint] = router.post(
        path,
        tags=[tag],
        response_model=answer,
        response_model_exclude_none=exclude_none,
        responses=NPY_RESPONSE,
        openapi_extra=json_body(body, npy_query=npy_query),
    )
    return decorate


async def read_request(
    request: Request, body: type[M], array_field: str, offers: tuple[str, ...] = (JSON, NPY)
) -> tuple[str, M]:
    """(the answer's media type, from Accept among `offers`; the body as `body`, its array in
    `array_field` for a .npy body): a 406 comes before any error of the body."""
    return negotiate(request, offers), await read_body(request, body, array_field)


async def infer_one(
    dataplane: DataPlane,
    model: ModelVersion,
    name: str,
    value: Any,
    field: str,
    contract: InputContract | None = None,
) -> InferenceResponse:
    """One input, named `field` in errors, through the data plane (validated there, once,
    against `contract` when the task's pre-step gives one, else the model's declared one)."""
    request = InferenceRequest(
        model.name,
        {name: value},
        model.version,
        fields={name: field},
        contracts={} if contract is None else {name: contract},
    )
    return await dataplane.infer_on(model, request)


def primary(dataplane: DataPlane, response: InferenceResponse) -> tuple[np.ndarray, Extras]:
    """The task's primary output (its `ModelSpec`'s) and the model version's other outputs."""
    spec = dataplane.specs.get(response.model.name)
    name = spec.primary_output if spec is not None else response.requested[0]
    if name not in response.outputs:  # a version that renamed it: its first output
        name = next(iter(response.outputs))
    return response.outputs[name], {k: v for k, v in response.outputs.items() if k != name}


async def offload(check: Callable[..., np.ndarray], value: Any, *args: Any) -> np.ndarray:
    """Run a pre-step inline for small inputs, in a worker thread for big nested lists."""
    if isinstance(value, list) and len(value) > OFFLOAD_ITEMS:
        return await anyio.to_thread.run_sync(check, value, *args)
    return check(value, *args)


def model_ref(model: ModelVersion) -> dict[str, Any]:
    return {"name": model.name, "version": model.version}


def model_headers(model: ModelVersion) -> dict[str, str]:
    return {"X-Model-Name": model.name, "X-Model-Version": str(model.version)}


def upload_doc(file: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body with a `file` part (and `extra` fields)."""
    properties = {"file": {"type": "string", "format": "binary", "description": file}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {**properties, **(extra or {})},
                    }
                }
            },
        }
    }


async def read_upload(request: Request) -> tuple[bytes, dict[str, str]]:
    """The bytes of the multipart part `file` and the form's text fields."""
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted here; send multipart/form-data with a "
            "'file' part",
            field="Content-Type",
            expected="multipart/form-data",
            received=kind,
        )
    try:
        form = await request.form(max_files=1, max_fields=4)
    except StarletteHTTPException as exc:  # Starlette's wrapper of multipart parse errors
        raise MalformedRequest(
            f"body is not valid multipart/form-data: {exc.detail}",
            field="body",
            expected="multipart/form-data with a 'file' part",
            received=describe(str(exc.detail)),
        ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput.for_field(
            "file", "a file part named 'file'", describe(upload) if upload else "no 'file' part"
        )
    data = await upload.read()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    await form.close()
    return data, fields


def flag(value: str | None, field: str) -> bool:
    """A boolean form field or query parameter ('true'/'false', '1'/'0'); absent = false."""
    if value is None:
        return False
    known = {"true": True, "1": True, "false": False, "0": False}
    if value.lower() not in known:
        raise InvalidInput.for_field(field, "true or false", describe(value))
    return known[value.lower()]
