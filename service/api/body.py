"""Reading request bodies: content-type dispatch and pydantic validation from raw bytes.

Routes take the `Request` and call `read_body` instead of declaring a body parameter, so that the
same endpoint can later accept other media types (`application/x-npy`) and every parse error goes
through the one error shape; `json_body` documents the body in OpenAPI all the same.
"""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.api.errors import from_validation_errors
from service.api.negotiation import NPY_BODY_DOC
from service.arrays import MAY_HOLD_BOOLEANS
from service.codecs.npy import NPY, load_npy
from service.errors import UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

#: Request models documented through `json_body`, added to the OpenAPI components by the app.
DOCUMENTED_MODELS: list[type[BaseModel]] = []

JSON = "application/json"
#: Bodies larger than this are parsed in a worker thread, off the event loop.
_OFFLOAD_BYTES = 256 * 1024


def media_type(request: Request) -> str:
    """The bare media type of the body (`application/json`), lower-case; JSON when absent."""
    value = request.headers.get("content-type", JSON)
    return value.split(";", 1)[0].strip().lower() or JSON


def _is_json(kind: str) -> bool:
    return kind == JSON or (kind.startswith("application/") and kind.endswith("+json"))


def require_json(request: Request) -> None:
    """A 415 unless the body is JSON."""
    kind = media_type(request)
    if not _is_json(kind):
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted here; send one of: {JSON}",
            field="Content-Type",
            expected=JSON,
            received=kind,
        )


async def read_body(request: Request, model: type[M], array_field: str | None) -> M:
    """The body validated as `model`, from JSON or, with `array_field`, from a .npy file.

    A .npy body fills `array_field`; the other fields of the model come from the query string
    (`?scale=byte`), validated by the same model, so both forms give the same errors.
    """
    kind = media_type(request)
    accepted = (JSON, NPY) if array_field else (JSON,)
    if kind == NPY and array_field:
        array = load_npy(await request.body(), array_field)
        try:
            return model.model_validate({**request.query_params, array_field: array})
        except ValidationError as exc:
            raise from_validation_errors(exc.errors()) from None
    if not _is_json(kind):
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted here; send one of: {', '.join(accepted)}",
            field="Content-Type",
            expected=" | ".join(accepted),
            received=kind,
        )
    # A big body would hold up every other request while parsed: a worker thread parses it.
    return await parse_json_offloaded(await request.body(), model)


async def read_json_any_type(request: Request, model: type[M]) -> M:
    """The body parsed as JSON whatever its Content-Type says, as TensorFlow Serving does (curl
    `-d` sends `application/x-www-form-urlencoded`)."""
    return await parse_json_offloaded(await request.body(), model)


async def parse_json_offloaded(body: bytes, model: type[M]) -> M:
    """`parse_json`, in a worker thread for a big body."""
    # Set here, in the request's own context (a worker thread's copy would not carry it back).
    MAY_HOLD_BOOLEANS.set(b"true" in body or b"false" in body)
    if len(body) > _OFFLOAD_BYTES:
        return await anyio.to_thread.run_sync(parse_json, body, model)
    return parse_json(body, model)


def parse_json(body: bytes, model: type[M]) -> M:
    try:
        # Strict: JSON has real booleans and integers, so `"include_exact": 0` or `"shape": ["1"]`
        # is a client's mistake to report, not to guess at (query strings stay lax: all text).
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None


def json_body(model: type[BaseModel], npy_query: dict[str, str] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body of `model`; with `npy_query`, also a .npy body
    whose other fields are the query parameters named there (name -> description)."""
    if model not in DOCUMENTED_MODELS:
        DOCUMENTED_MODELS.append(model)
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    content: dict[str, Any] = {JSON: {"schema": schema}}
    extra_schema: Any = model.model_config.get("json_schema_extra") or {}
    examples = extra_schema.get("examples") if isinstance(extra_schema, dict) else None
    if examples:
        content[JSON]["example"] = examples[0]
    doc: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if npy_query is not None:
        content[NPY] = NPY_BODY_DOC
        doc["parameters"] = [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": f"With a .npy body only: {description}",
                "schema": {"type": "string"},
            }
            for name, description in npy_query.items()
        ]
    return doc


def add_documented_models(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put the request models of `json_body` (and their nested models) into the components."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in DOCUMENTED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in schema.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas.setdefault(model.__name__, schema)
    return openapi
