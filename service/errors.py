# ruff: noqa: N818  (HTTP status names read better than an Error suffix: NotFound, InvalidInput)
"""The service's one error type, its subclasses by HTTP status, and the one error body shape.

Every failure a client can cause is a `ServiceError` raised with a message that names the field,
what was expected and what came; `service.api.errors` turns it into `{"error": ..., ...}`, the
shape TensorFlow Serving uses, on every route and protocol.
"""

from __future__ import annotations

import hmac
import math
from typing import Any

from pydantic import SecretStr

_RECEIVED_LIMIT = 120


def describe(value: Any) -> str:
    """A short, safe description of a client value for an error message (never the whole body)."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    elif isinstance(value, list | tuple):
        text = f"a list of {len(value)}"
        if value and not isinstance(value[0], list | tuple | dict):
            text = f"{text}: {value[:4]!r}"[:_RECEIVED_LIMIT]
        return text
    elif isinstance(value, dict):
        return f"an object with keys {sorted(map(str, value))[:8]}"
    elif value is None:
        return "null"
    else:
        text = repr(value)
    return text if len(text) <= _RECEIVED_LIMIT else text[: _RECEIVED_LIMIT - 3] + "..."


class ServiceError(Exception):
    """A failure with an HTTP status and a message meant for the client."""

    status_code = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        received: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.expected = expected
        self.received = received
        self.headers = headers
        if status_code is not None:
            self.status_code = status_code

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: `error` always, `field`/`expected`/`received` when known."""
        body: dict[str, Any] = {"error": self.message}
        for key in ("field", "expected", "received"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


class MalformedRequest(ServiceError):
    """The body cannot be parsed at all (not JSON, not a .npy file, not multipart)."""

    status_code = 400


class InvalidInput(ServiceError):
    """The body parses but a value is wrong: shape, dtype, range, NaN, count, code..."""

    status_code = 422

    @classmethod
    def for_field(cls, field: str, expected: str, received: str, what: str = "") -> InvalidInput:
        """The common case: `<field>: expected <expected>, received <received>`."""
        message = f"{field}: {what or 'expected ' + expected}, received {received}"
        return cls(message, field=field, expected=expected, received=received)


class Unauthorized(ServiceError):
    """Missing or wrong API key."""

    status_code = 401


def check_api_key(
    configured: SecretStr | None,
    key: str | None,
    field: str,
    carrier: str,
    headers: dict[str, str] | None = None,
) -> None:
    """The API key check of every protocol: a 401 unless no key is configured or `key` is the
    configured one (compared in constant time); `carrier` says where `field` travels (an HTTP
    header, gRPC metadata)."""
    if configured is None:
        return
    expected = configured.get_secret_value().encode()
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise Unauthorized(
            f"missing or wrong API key in the {field} {carrier}",
            field=field,
            expected="the configured API key",
            received="no key" if key is None else "a wrong key",
            headers=headers,
        )


class NotFound(ServiceError):
    """Unknown route, model or version."""

    status_code = 404


class NotAcceptable(ServiceError):
    """The Accept header asks for a representation the route cannot produce."""

    status_code = 406


class PayloadTooLarge(ServiceError):
    """The body is over `max_body_bytes`."""

    status_code = 413


class UnsupportedMediaType(ServiceError):
    """The Content-Type is not one the route reads."""

    status_code = 415


class ModelNotReady(ServiceError):
    """The model exists in the contract but is not loaded (failed, missing or still loading)."""

    status_code = 503


class Overloaded(ServiceError):
    """More work is queued than the server can finish in time: refused at once, with a
    `Retry-After` (seconds) when the caller gives one; nothing of the request has run."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        headers = None
        if retry_after_s is not None:
            # HTTP's Retry-After is whole seconds; never 0, which invites an instant retry storm.
            headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
        super().__init__(message, headers=headers)


class InferenceTimeout(ServiceError):
    """Inference took longer than `request_timeout_s`."""

    status_code = 504
