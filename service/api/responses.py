"""Fast JSON responses: orjson, with numpy arrays serialised natively (no `.tolist()` pass)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTIONS)


class JSONBody(JSONResponse):
    """`application/json` rendered by orjson; used by every route and error handler.

    A `JSONResponse` subclass so that FastAPI documents each route's `response_model` as the
    200 body in OpenAPI (for any other `Response` class it writes `{"type": "string"}`).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
