"""One error handler per exception family, all producing the body of `ServiceError.to_body`.

FastAPI's own validation errors, Starlette's 404/405 and pydantic errors from body parsing are
translated into the same `{"error", "field", "expected", "received"}` shape; anything unexpected
is logged and answered 500 in that shape too, as a last resort.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.api.responses import STATUS_DESCRIPTIONS, JSONBody
from service.errors import InvalidInput, MalformedRequest, ServiceError, describe
from service.schemas import ErrorResponse

logger = logging.getLogger(__name__)

#: The error answers of the model routes, documented in OpenAPI (`responses=` of their routers;
#: `document_errors` then keeps each operation's recorded ones), described by the one table.
ERRORS: dict[int | str, dict[str, Any]] = {
    int(status): {"model": ErrorResponse, "description": STATUS_DESCRIPTIONS[status]}
    for status in ("400", "401", "404", "413", "415", "422", "503", "504")
}


def _field(loc: Sequence[int | str]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")] or list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def from_validation_errors(errors: Sequence[Any]) -> ServiceError:
    """The first pydantic/FastAPI validation error as a `ServiceError` (400 or 422)."""
    first: Any = (
        errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    )
    kind = first.get("type", "")
    loc = tuple(first.get("loc", ()))
    field = _field(loc)
    received = describe(first.get("input"))
    ctx = first.get("ctx") or {}
    if kind == "json_invalid":
        detail = ctx.get("error", first.get("msg", ""))
        return MalformedRequest(
            f"body is not valid JSON: {detail}",
            field="body",
            expected="a JSON object",
            received="malformed JSON",
        )
    if kind == "missing":
        return InvalidInput.for_field(field, "a value", "nothing", "required field missing")
    if kind == "extra_forbidden":
        return InvalidInput.for_field(field, "no such field", received, "unknown field")
    # Only the body itself: `{"parameters": [1]}` fails at loc ("parameters",), a field.
    if kind in ("model_type", "model_attributes_type", "dict_type") and field == "body":
        return InvalidInput.for_field("body", "a JSON object", received)
    if kind == "literal_error":
        return InvalidInput.for_field(field, str(ctx.get("expected", first.get("msg"))), received)
    message = str(first.get("msg", "invalid value"))
    return InvalidInput(
        f"{field}: {message[0].lower() + message[1:]}, received {received}",
        field=field,
        expected=message,
        received=received,
    )


def error_response(error: ServiceError) -> Response:
    return JSONBody(error.to_body(), status_code=error.status_code, headers=error.headers)


async def _service_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _request_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return error_response(from_validation_errors(exc.errors()))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {request.url.path} (allowed: {allowed})"
    else:
        message = str(exc.detail)
    return JSONBody({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONBody({"error": "internal server error"}, status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
