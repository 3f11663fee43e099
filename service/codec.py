"""The self-describing compressed digit format (docs/ARCHITECTURE.md).

`header || latent`: byte 0 is the format (0x01), bytes 1-2 the encoder version (uint16,
big-endian), then the K latent bytes exactly as `digit_encoder` produced them. The header lets a
code be decoded by the decoder of the version that made it, after newer versions are deployed.
"""

from __future__ import annotations

import base64
import binascii
import struct

import numpy as np

from service.errors import InvalidInput, describe

FORMAT_V1 = 0x01
HEADER = struct.Struct(">BH")
HEADER_BYTES = HEADER.size


def pack(version: int, latent: np.ndarray) -> bytes:
    """One code: the header for `version`, then the uint8 latent bytes."""
    if not 0 < version < 2**16:
        raise ValueError(f"encoder version {version} does not fit the 2-byte header")
    return HEADER.pack(FORMAT_V1, version) + np.ascontiguousarray(latent, dtype=np.uint8).tobytes()


def unpack(code: bytes, field: str) -> tuple[int, np.ndarray]:
    """(encoder version, latent uint8 array) of one code; a malformed code is a 422."""
    if len(code) <= HEADER_BYTES:
        raise InvalidInput.for_field(
            field,
            f"more than {HEADER_BYTES} bytes (header + latent)",
            f"{len(code)} bytes",
            what="truncated code",
        )
    fmt, version = HEADER.unpack_from(code)
    if fmt != FORMAT_V1:
        raise InvalidInput.for_field(
            field, f"format byte 0x{FORMAT_V1:02x}", f"0x{fmt:02x}", what="unknown code format"
        )
    return version, np.frombuffer(code, dtype=np.uint8, offset=HEADER_BYTES)


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
