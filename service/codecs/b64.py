"""Standard base64 text as requests carry bytes (the digit codes, TF Serving's `{"b64": ...}`)."""

from __future__ import annotations

import base64
import binascii

from service.errors import InvalidInput, describe


def b64decode(text: object, field: str) -> bytes:
    """Strict standard base64 (padding required), as the compress endpoint writes it."""
    if not isinstance(text, str):
        raise InvalidInput.for_field(field, "a base64 string", describe(text))
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput.for_field(
            field, "standard base64 text", describe(text), what="not valid base64"
        ) from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
