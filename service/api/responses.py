"""Fast JSON responses (orjson, numpy arrays serialised natively), and the documented errors."""

from __future__ import annotations

from pathlib import Path
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


# The documented error responses ---------------------------------------------------------------

#: Real error responses of this server, per operation (`"POST /api/v1/digits/classify"`) and
#: status, each with the request that produced it: written by `python -m service.api.examples`,
#: and checked against the running app by tests/service/api/test_examples.py.
EXAMPLES_FILE = Path(__file__).with_name("error_examples.json")

STATUS_DESCRIPTIONS = {
    "400": "The body does not parse: not JSON, not a .npy file, not multipart",
    "401": "Missing or wrong API key in the X-API-Key header",
    "403": "No API key is configured, so the admin API is off",
    "404": "Unknown model, version or file",
    "406": "The Accept header names no type this endpoint produces",
    "413": "Body over MLDM_MAX_BODY_BYTES (or image over MLDM_MAX_IMAGE_PIXELS)",
    "415": "Content-Type not accepted by this endpoint",
    "422": "The body parses but a value is wrong: shape, range, NaN, batch size, codes...",
    "503": "The model is not loaded (still loading, or it failed)",
    "504": "Inference took longer than MLDM_REQUEST_TIMEOUT_S",
}


#: TensorFlow Serving answers every invalid argument with 400, and so do the /v1 routes.
TF_SERVING_400 = (
    "Invalid argument (TensorFlow Serving's convention): the body does not parse, a value is "
    "wrong, or the model has no such signature"
)


def describe_status(path: str, status: str) -> str:
    """The documented meaning of an error status on one route."""
    if status == "400" and path.startswith("/v1/"):
        return TF_SERVING_400
    return STATUS_DESCRIPTIONS[status]


def load_examples() -> dict[str, dict[str, dict[str, Any]]]:
    examples: dict[str, dict[str, dict[str, Any]]] = orjson.loads(EXAMPLES_FILE.read_bytes())
    return examples


def document_errors(schema: dict[str, Any], *, api_key: bool) -> dict[str, Any]:
    """Make each operation's 4xx/5xx responses exactly its recorded real ones, with examples.

    An error status an operation cannot answer (the routers declare one list for all their
    routes) is dropped; 401 is dropped everywhere when no API key is configured, since no route
    then asks for one. Operations with no recorded examples keep what their route declares.
    """
    examples = load_examples()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            recorded = examples.get(f"{method.upper()} {path}")
            if recorded is None or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s[:1] in "45"]:
                del responses[status]
            for status, example in recorded.items():
                if status == "401" and not api_key:
                    continue
                responses[status] = {
                    "description": describe_status(path, status),
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                            "examples": {
                                f"{status}": {
                                    "summary": example["request"],
                                    "value": example["response"],
                                }
                            },
                        }
                    },
                }
    return schema
