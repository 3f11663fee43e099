# ruff: noqa: N818  (HTTP status names read better than an Error suffix, as in service.errors)
"""The client's exceptions: one `ServiceError` base carrying the server's error body and status.

The server answers every error as `{"error": ..., "field": ..., "expected": ..., "received": ...}`;
the exception keeps that body whole and exposes its parts, with the HTTP status and the request id
the server logged the request under (quote it when reporting a problem).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request the service refused or could not answer; `status_code` is None when no HTTP
    answer came at all (connection refused, timeout)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body: dict[str, Any] = body or {}
        self.request_id = request_id

    @property
    def field(self) -> str | None:
        """The request field at fault, as the server named it (`images[0][3][4]`)."""
        value = self.body.get("field")
        return value if isinstance(value, str) else None

    @property
    def expected(self) -> str | None:
        value = self.body.get("expected")
        return value if isinstance(value, str) else None

    @property
    def received(self) -> str | None:
        value = self.body.get("received")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        status = f"HTTP {self.status_code}: " if self.status_code is not None else ""
        request = f" (request id {self.request_id})" if self.request_id else ""
        return f"{status}{self.message}{request}"


class InvalidRequest(ServiceError):
    """A 4xx: the request is wrong (values, shape, size, content type...); do not retry as is."""


class Unauthorized(InvalidRequest):
    """401: missing or wrong API key."""


class NotFound(InvalidRequest):
    """404: unknown route, model or version."""


class ServerError(ServiceError):
    """A 5xx: the server failed or timed out on a request that may well be valid."""


class ServiceUnavailable(ServerError):
    """503: the model (or the whole server) is not ready; raised once the retries are spent."""


class ServiceConnectionError(ServiceError):
    """No HTTP answer: the connection failed or the client's timeout passed."""


def error_for_status(
    status: int, body: dict[str, Any], message: str, request_id: str | None
) -> ServiceError:
    """The most specific exception for an error status."""
    kind: type[ServiceError]
    if status == 401:
        kind = Unauthorized
    elif status == 404:
        kind = NotFound
    elif status == 503:
        kind = ServiceUnavailable
    elif 400 <= status < 500:
        kind = InvalidRequest
    elif status >= 500:
        kind = ServerError
    else:
        kind = ServiceError
    return kind(message, status_code=status, body=body, request_id=request_id)
