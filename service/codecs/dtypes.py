"""The one dtype table: numpy <-> Open Inference Protocol datatype <-> TensorFlow <-> Triton.

Every protocol names tensor dtypes its own way (`float32`, `FP32`, `DT_FLOAT`, `TYPE_FP32`);
each codec translates through this table only, so the protocols cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DType:
    numpy: str
    v2: str
    tf: str

    @property
    def triton(self) -> str:
        """The model configuration's `data_type` (`TYPE_FP32`; `TYPE_STRING` for BYTES)."""
        return "TYPE_STRING" if self.v2 == "BYTES" else f"TYPE_{self.v2}"


#: numpy name, V2 datatype, TensorFlow DataType: one dtype a line.
TABLE: tuple[DType, ...] = tuple(
    DType(*line.split())
    for line in """
    bool     BOOL    DT_BOOL
    uint8    UINT8   DT_UINT8
    uint16   UINT16  DT_UINT16
    uint32   UINT32  DT_UINT32
    uint64   UINT64  DT_UINT64
    int8     INT8    DT_INT8
    int16    INT16   DT_INT16
    int32    INT32   DT_INT32
    int64    INT64   DT_INT64
    float16  FP16    DT_HALF
    float32  FP32    DT_FLOAT
    float64  FP64    DT_DOUBLE
    object   BYTES   DT_STRING
    """.strip().splitlines()
)
BY_NUMPY = {d.numpy: d for d in TABLE}
BY_V2 = {d.v2: d for d in TABLE}
BYTES = BY_NUMPY["object"]


#: `of` per numeric dtype object, filled as met: `dtype.name` is a Python-level property, and
#: every tensor of every answer asks (strings and bytes stay out: `S10`, `U3`... are unbounded).
_OF: dict[np.dtype[Any], DType] = {}


def of(dtype: np.dtype[Any]) -> DType:
    """The table row of a numpy dtype (strings and bytes are BYTES)."""
    row = _OF.get(dtype)
    if row is not None:
        return row
    if dtype.kind in "OSU":
        return BYTES
    row = BY_NUMPY.get(dtype.name, BYTES)
    if dtype.kind in "biuf":
        _OF[dtype] = row
    return row


def v2_name(dtype: np.dtype[Any]) -> str:
    return of(dtype).v2


def numpy_of_v2(datatype: str) -> np.dtype[Any] | None:
    """The numpy dtype of a V2 datatype (None for one the table does not know)."""
    row = BY_V2.get(datatype)
    return None if row is None else np.dtype(row.numpy)
