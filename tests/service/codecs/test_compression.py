"""Request content codings: gzip and deflate inflated incrementally under the size limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from service.codecs.compression import Inflater, decompress
from service.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType


@pytest.mark.parametrize(("coding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_decompress_round_trips(coding: str, pack: object) -> None:
    data = b"0123456789" * 1000
    assert decompress(pack(data), coding, len(data)) == data  # type: ignore[operator]


def test_bomb_stops_inflating_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * (256 * 1024 * 1024))  # 256 MiB in ~250 KiB
    inflater = Inflater("gzip", 1024 * 1024)
    with pytest.raises(PayloadTooLarge, match="once decoded"):
        for i in range(0, len(bomb), 16384):
            inflater.feed(bomb[i : i + 16384])
    assert inflater.produced <= 1024 * 1024 + 1  # never more than one byte over the limit


def test_corrupt_truncated_and_trailing_data_are_400() -> None:
    packed = gzip.compress(b"hello")
    for body, message in (
        (b"not gzip", "not valid gzip data"),
        (packed[:-4], "truncated"),
        (packed + b"extra", "data after the end"),
    ):
        with pytest.raises(MalformedRequest, match=message):
            decompress(body, "gzip", 1000)


def test_unknown_coding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="'br' is not supported"):
        Inflater("br", 1000)
