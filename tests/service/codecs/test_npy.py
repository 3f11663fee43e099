""".npy files parsed without pickle: garbage, truncation, strings, byte order, Fortran order."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.codecs.npy import dump_npy, load_npy
from service.errors import InvalidInput, MalformedRequest


def test_load_npy_rejects_garbage_truncated_and_strings() -> None:
    with pytest.raises(MalformedRequest, match=r"not a valid \.npy file"):
        load_npy(b"PK\x03\x04 not numpy", "images")
    data = dump_npy(np.zeros((4, 64)))
    with pytest.raises(MalformedRequest, match=r"declares shape \[4, 64\]"):
        load_npy(data[:-8], "images")
    with pytest.raises(InvalidInput, match=r"unsupported \.npy dtype"):
        load_npy(dump_npy(np.array(["a", "b"])), "images")
    with pytest.raises(InvalidInput, match=r"unsupported \.npy dtype"):
        load_npy(dump_npy(np.zeros(3, dtype=np.complex64)), "images")


def test_load_npy_reads_big_endian_and_fortran_order() -> None:
    array = np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4))
    buffer = io.BytesIO()
    np.save(buffer, array)
    loaded = load_npy(buffer.getvalue(), "x")
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.dtype("float32")
