"""The request context: which request (id) the current task works for, as a context variable.

The lowest layer of the service (it imports nothing of it), so that logging, the middleware and
anything below the routes can read the request id without importing the HTTP layer, as
`mlserver/context.py` does for the model name.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-ID"
#: Printable ASCII without spaces, bounded: anything else from a client is replaced, never logged.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass
class RequestContext:
    # Mutable on purpose: a task started during a request (the batcher's worker) keeps a copy of
    # the context; clearing `request_id` when the request ends stops it lending a stale id later.
    request_id: str | None


_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "mldm_request", default=None
)


def enter(request_id: str) -> tuple[RequestContext, contextvars.Token[RequestContext | None]]:
    """Make `request_id` the current request's; `leave` with the token when it is answered."""
    context = RequestContext(request_id)
    return context, _context.set(context)


def leave(context: RequestContext, token: contextvars.Token[RequestContext | None]) -> None:
    context.request_id = None
    _context.reset(token)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    context = _context.get()
    return context.request_id if context is not None else None


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is printable ASCII of 1-128 characters, else a new one."""
    for key, value in headers:
        if key == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex
