"""The one dtype table: every protocol's name for each numpy dtype."""

from __future__ import annotations

import numpy as np

from service.codecs import dtypes


def test_table_names_each_dtype_in_every_protocol() -> None:
    row = dtypes.of(np.dtype("float32"))
    assert (row.v2, row.tf, row.triton) == ("FP32", "DT_FLOAT", "TYPE_FP32")
    assert dtypes.of(np.dtype("bool")).triton == "TYPE_BOOL"
    assert dtypes.of(np.dtype("S3")).v2 == "BYTES" and dtypes.BYTES.triton == "TYPE_STRING"


def test_v2_names_round_trip_to_numpy() -> None:
    for row in dtypes.TABLE:
        if row.v2 != "BYTES":
            dtype = dtypes.numpy_of_v2(row.v2)
            assert dtype is not None and dtypes.v2_name(dtype) == row.v2
    assert dtypes.numpy_of_v2("BF16") is None
