"""The compressed digit format: header layout, strict parsing, base64."""

from __future__ import annotations

import numpy as np
import pytest

from service.codecs import b64
from service.errors import InvalidInput
from service.tasks import codec


def test_pack_writes_format_version_then_latent() -> None:
    code = codec.pack(258, np.array([7, 8, 9], dtype=np.uint8))
    assert code == bytes([0x01, 0x01, 0x02, 7, 8, 9])


def test_unpack_round_trips_pack() -> None:
    latent = np.arange(16, dtype=np.uint8)
    version, decoded = codec.unpack(codec.pack(3, latent), "codes[0]")
    assert version == 3
    np.testing.assert_array_equal(decoded, latent)


def test_unpack_rejects_truncated_code() -> None:
    with pytest.raises(InvalidInput, match="truncated code") as info:
        codec.unpack(b"\x01\x00", "codes[2]")
    assert info.value.field == "codes[2]"


def test_unpack_rejects_unknown_format_byte() -> None:
    with pytest.raises(InvalidInput, match="unknown code format") as info:
        codec.unpack(b"\x02\x00\x01abc", "codes[0]")
    assert info.value.received == "0x02"


def test_pack_rejects_version_over_two_bytes() -> None:
    with pytest.raises(ValueError, match="2-byte header"):
        codec.pack(70000, np.zeros(4, np.uint8))


@pytest.mark.parametrize("text", ["not base64!", "AQID*", 12])
def test_b64decode_rejects_non_base64(text: object) -> None:
    with pytest.raises(InvalidInput) as info:
        b64.b64decode(text, "codes[1]")
    assert info.value.field == "codes[1]"
