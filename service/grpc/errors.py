"""The REST error catalogue as gRPC statuses: the same message, the status by HTTP code.

A `ServiceError` ends the call with the gRPC code of its HTTP status and its message unchanged;
its `field` / `expected` / `received` travel as trailing metadata (`mldm-error-field`, ...), as
they travel in the JSON error body over REST.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from service import errors
from service.errors import Overloaded, ServiceError
from service.settings import Settings

logger = logging.getLogger(__name__)

#: The metadata key of the API key (gRPC metadata keys are lower case).
API_KEY_METADATA = "x-api-key"

#: HTTP status of the catalogue -> gRPC status code (google.rpc.Code's own HTTP mapping).
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(status: int) -> grpc.StatusCode:
    """The gRPC code of an HTTP status (INTERNAL for a 5xx the table does not name)."""
    if status in CODES:
        return CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.INTERNAL


def code_of_error(kind: type[ServiceError]) -> grpc.StatusCode:
    """The gRPC code of one error of the catalogue: by its HTTP status, except a refusal by
    admission control, RESOURCE_EXHAUSTED (the server's own limit: retry later) where REST
    answers 503 like a model that is not ready (UNAVAILABLE)."""
    if issubclass(kind, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return code_of(kind.status_code)


def check_api_key(settings: Settings, context: grpc.aio.ServicerContext) -> None:
    """The REST API key check on the call's `x-api-key` metadata."""
    if settings.api_key is None:
        return
    key = None
    for item in context.invocation_metadata() or ():
        if item.key == API_KEY_METADATA:
            key = item.value if isinstance(item.value, str) else None
    errors.check_api_key(settings.api_key, key, API_KEY_METADATA, "metadata")


T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def rpc(*, key: bool = True) -> Callable[[Handler[T]], Handler[T]]:
    """Wrap a servicer method: the API key first (when `key`), then `ServiceError` -> status."""

    def decorate(method: Handler[T]) -> Handler[T]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
            try:
                if key:
                    check_api_key(self.settings, context)
                return await method(self, request, context)
            except ServiceError as exc:
                await abort(context, exc)
                raise AssertionError("unreachable") from None  # abort raises
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                # REST answers these 500 with a generic message and logs the traceback: the same.
                logger.exception("unhandled error in gRPC %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
                raise AssertionError("unreachable") from None

        return wrapper

    return decorate


async def abort(context: grpc.aio.ServicerContext, exc: ServiceError) -> None:
    """End the call with the error's status and message (raises)."""
    trailing = tuple(
        (f"mldm-error-{name}", value)
        for name in ("field", "expected", "received")
        if isinstance(value := getattr(exc, name), str) and value.isascii() and value.isprintable()
    )
    retry = (exc.headers or {}).get("Retry-After")
    if retry is not None:  # admission refused it: the REST answer's Retry-After, as metadata
        trailing = (*trailing, ("retry-after", retry))
    context.set_trailing_metadata(trailing)
    await context.abort(code_of_error(type(exc)), exc.message)
