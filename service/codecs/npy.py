"""`.npy` files as request bodies and responses, parsed without pickle.

The header is read and checked first (dtype numeric, not an object or structured dtype; data
length matching the declared shape), then the data is read.
"""

from __future__ import annotations

import io
import math

import numpy as np

from service.errors import InvalidInput, MalformedRequest

NPY = "application/x-npy"
_NUMERIC_KINDS = "iuf"


def load_npy(body: bytes, field: str) -> np.ndarray:
    """A numeric array from the bytes of a `.npy` file; never unpickles anything."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise MalformedRequest(
            f"body is not a valid .npy file: {exc}",
            field="body",
            expected="the bytes of numpy.save(array) (application/x-npy)",
            received=f"{len(body)} bytes",
        ) from None
    if dtype.hasobject or dtype.names is not None or dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput.for_field(
            field,
            "a numeric array (integer or float dtype)",
            f"dtype {dtype}",
            what="unsupported .npy dtype",
        )
    if any(size < 0 for size in shape):  # reshape would read -1 as "infer" or fail (a 500)
        raise MalformedRequest(
            f"body is not a valid .npy file: negative size in shape {list(shape)}",
            field="body",
            expected="a shape of non-negative sizes",
            received=f"shape {list(shape)}",
        )
    # Exact: np.prod wraps around int64, so (2**32, 2**32) would claim 0 bytes of data.
    expected_bytes = math.prod(shape) * dtype.itemsize
    data_bytes = len(body) - stream.tell()
    if expected_bytes != data_bytes:
        raise MalformedRequest(
            f"body is not a valid .npy file: the header declares shape {list(shape)} "
            f"({expected_bytes} bytes of data) but {data_bytes} bytes follow",
            field="body",
            expected=f"{expected_bytes} bytes of data",
            received=f"{data_bytes} bytes",
        )
    flat = np.frombuffer(body, dtype=dtype, offset=stream.tell())
    array = flat.reshape(shape, order="F") if fortran else flat.reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def dump_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
