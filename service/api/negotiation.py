"""Binary arrays over HTTP: `.npy` responses and content negotiation.

Bulk clients send `Content-Type: application/x-npy` (the bytes of `numpy.save`) instead of JSON,
and ask for `Accept: application/x-npy` to get the main output back the same way; the file
format itself is `service.codecs.npy`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import Request
from starlette.responses import Response

from service.codecs.npy import NPY, dump_npy
from service.errors import NotAcceptable

JSON = "application/json"
#: Every per-item field of an answer as named arrays (``numpy.savez``, no pickles): what a bulk
#: client asks for when it wants more than the main output (issue 20).
NPZ = "application/x-npz"


def npy_response(array: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dump_npy(array), media_type=NPY, headers=headers)


def npz_response(arrays: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """Named arrays as one .npz file (read with ``numpy.load(..., allow_pickle=False)``)."""
    buffer = io.BytesIO()
    named: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
    np.savez(buffer, **named)
    return Response(buffer.getvalue(), media_type=NPZ, headers=headers)


def _accepted(header: str) -> list[str]:
    """Media types of an Accept header, most preferred first (q-values; ties keep order)."""
    entries: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        kind = pieces[0].lower()
        if not kind:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            entries.append((-quality, index, kind))
    return [kind for _, _, kind in sorted(entries)]


def negotiate(request: Request, offers: tuple[str, ...] = (JSON, NPY)) -> str:
    """The response media type for the Accept header: JSON by default; 406 if none fits."""
    header = request.headers.get("accept")
    if not header:
        return offers[0]
    for kind in _accepted(header):
        if kind in offers:
            return kind
        if kind in ("*/*", "application/*"):
            return offers[0]
    raise NotAcceptable(
        f"cannot answer with {header!r}; this endpoint produces {' or '.join(offers)}",
        field="Accept",
        expected=" | ".join(offers),
        received=header,
    )


NPY_BODY_DOC: dict[str, Any] = {
    "schema": {"type": "string", "format": "binary"},
}
NPY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            NPY: {"schema": {"type": "string", "format": "binary"}},
            NPZ: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "JSON; with `Accept: application/x-npy` the main output as a .npy file; "
        "with `Accept: application/x-npz` (classify and energy routes) every per-item field of "
        "the JSON answer as named arrays in one .npz file",
    },
    406: {"description": "The Accept header names no type this endpoint produces"},
}
