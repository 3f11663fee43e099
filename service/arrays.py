"""Validation of client arrays: nested JSON lists or numpy arrays in, checked numpy arrays out.

The checks every task shares (a regular shape, numbers only, finite, a non-empty batch under the
limit) live here, so that every endpoint words the same mistake the same way: the error names
the field (with the index of the first bad element), what was expected and what came.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from service.errors import InvalidInput, describe

_NUMERIC_KINDS = "iuf"

#: False while the request being served came as a JSON body without a `true` or `false` token
#: (`service.api.body` sets it): its lists then hold no booleans, and the search for one, as
#: long as numpy's conversion itself, is skipped.
MAY_HOLD_BOOLEANS: ContextVar[bool] = ContextVar("may_hold_booleans", default=True)


def shape_text(shape: Sequence[int | None], batch: bool = True) -> str:
    """`[N, 28, 28]` for a batch, `[28, 28]` for one item."""
    dims = ["N"] if batch else []
    dims += ["?" if d is None else str(d) for d in shape]
    return "[" + ", ".join(dims) + "]"


def _index(path: Sequence[int]) -> str:
    return "".join(f"[{i}]" for i in path)


def _find_non_number(value: Any, path: list[int], depth: int = 0) -> tuple[list[int], Any] | None:
    """The first element that is not a (non-boolean) number, depth first."""
    if isinstance(value, list | tuple):
        if depth > 8:
            return path, value
        for i, item in enumerate(value):
            found = _find_non_number(item, [*path, i], depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return path, value
    return None


def _find_huge(value: Any, path: list[int]) -> tuple[list[int], Any]:
    """The first integer too large for a float64 (JSON allows any number of digits)."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_huge(item, [*path, i])
            if found[0]:
                return found
        return [], None
    if isinstance(value, int) and abs(value) > 1.7e308:
        return path, value
    return [], None


def _find_ragged(value: Any, path: list[int]) -> tuple[list[int], str, str]:
    """Where a nested list stops being rectangular: (path, expected length, received)."""
    if not isinstance(value, list | tuple) or not value:
        return path, "a non-empty list", describe(value)
    first = value[0]
    first_len = len(first) if isinstance(first, list | tuple) else None
    for i, item in enumerate(value):
        item_len = len(item) if isinstance(item, list | tuple) else None
        if item_len != first_len:
            expected = "a number" if first_len is None else f"a list of {first_len}"
            return [*path, i], expected, describe(item)
    for i, item in enumerate(value):
        if isinstance(item, list | tuple):
            deeper = _find_ragged(item, [*path, i])
            if deeper[0] != [*path, i] or not item:
                return deeper
    return path, "a regular array", describe(value)


def _find_bool(value: list[Any], path: list[int]) -> tuple[list[int], Any] | None:
    """The first boolean of a regular nested list of numbers (numpy reads `true` as 1.0)."""
    if value and isinstance(value[0], list):
        for i, item in enumerate(value):
            found = _find_bool(item, [*path, i])
            if found is not None:
                return found
        return None
    if bool in set(map(type, value)):  # one C-level pass over the row
        i = next(i for i, item in enumerate(value) if isinstance(item, bool))
        return [*path, i], value[i]
    return None


def to_numeric_array(value: Any, field: str) -> np.ndarray:
    """A nested list (or a numpy array) of numbers as a numpy array; anything else is a 422."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidInput.for_field(
                field, "a numeric array (float or integer dtype)", f"dtype {value.dtype}"
            )
        return value
    if not isinstance(value, list):
        raise InvalidInput.for_field(field, "a (nested) list of numbers", describe(value))
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        bad = _find_non_number(value, [])
        if bad is not None:
            path, item = bad
            raise InvalidInput.for_field(field + _index(path), "a number", describe(item)) from None
        path, expected, received = _find_ragged(value, [])
        raise InvalidInput.for_field(
            field + _index(path), expected, received, what=f"ragged array: expected {expected}"
        ) from None
    if array.dtype.kind not in _NUMERIC_KINDS or array.dtype == np.bool_:
        bad = _find_non_number(value, [])
        if bad is None and array.dtype == object:  # integers beyond int64 (JSON allows them)
            try:
                return np.array(value, dtype=np.float64)
            except OverflowError:
                path, item = _find_huge(value, [])
                raise InvalidInput.for_field(
                    field + _index(path), "a finite number", describe(item), "number too large"
                ) from None
        path, item = bad if bad is not None else ([], value)
        raise InvalidInput.for_field(field + _index(path), "a number", describe(item))
    boolean = _find_bool(value, []) if MAY_HOLD_BOOLEANS.get() else None
    if boolean is not None:  # `true` is not the number 1 on any protocol
        path, item = boolean
        raise InvalidInput.for_field(field + _index(path), "a number", describe(item))
    return array


def item_index(
    field: str,
    where: Sequence[int],
    single: bool,
    flat_shape: Sequence[int] | None = None,
    rank: int | None = None,
) -> str:
    """`field[i][j]` as the client sent it: an unbatched single item has no batch index; with
    `flat_shape` (the array's shape), the index into the flat data (`data[k]` of a V2 tensor);
    `rank` drops a trailing channel index (always 0) beyond the item's own dimensions."""
    if flat_shape is not None:
        return f"{field}[{int(np.ravel_multi_index(tuple(where), tuple(flat_shape)))}]"
    if rank is not None:
        where = where[: rank + 1]
    return field + _index(where[1:] if single else where)


def check_finite(
    array: np.ndarray, field: str, single: bool = False, flat: bool = False, rank: int | None = None
) -> None:
    """Reject NaN and infinities, naming the first one."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        shape = array.shape if flat else None
        raise InvalidInput.for_field(
            item_index(field, where, single, shape, rank), "a finite number", str(array[where])
        )


def as_batch(
    value: Any,
    field: str,
    item_shape: tuple[int, ...],
    max_items: int,
    *,
    squeeze_channel: bool = False,
    value_range: tuple[float, float, str] | None = None,
    integers: bool = False,
    flat_index: bool = False,
) -> tuple[np.ndarray, bool]:
    """One item or a batch of items of `item_shape`, checked, as an array `[N, *item_shape]`
    (or `[N, *item_shape, 1]` as sent, with `squeeze_channel`), in the dtype it came in.

    A value with the item's own rank is one item; one more leading dimension is a batch.
    With `squeeze_channel`, a trailing channel dimension of 1 is accepted too (`[N, 28, 28, 1]`)
    and kept: the model's own shape, reshaped no further. `value_range` = (low, high, what) and
    `integers` check the values. Returns the batch and whether the client sent a single item
    (error indices then omit the batch index). With `flat_index`, errors name the index into the
    flat data (a V2 tensor's `data[k]`).
    """
    array = to_numeric_array(value, field)
    rank = len(item_shape)
    channel = (
        squeeze_channel
        and array.ndim == rank + 2
        and array.shape[-1] == 1
        and array.shape[1:-1] == item_shape
    )
    single = not channel and array.ndim == rank and array.shape == item_shape
    if single:
        array = array[np.newaxis]
    if not channel and (array.ndim != rank + 1 or array.shape[1:] != item_shape):
        expected = f"{shape_text(item_shape, batch=False)} or {shape_text(item_shape)}"
        if array.size == 0 and array.ndim == 1:
            raise InvalidInput.for_field(field, "at least one item", "an empty list", "empty batch")
        squeezed = squeeze_channel and array.ndim == rank + 2 and array.shape[-1] == 1
        shape = array.shape[:-1] if squeezed else array.shape
        received = "[" + ", ".join(map(str, shape)) + "]"
        raise InvalidInput.for_field(field, f"shape {expected}", f"shape {received}", "wrong shape")
    if array.shape[0] == 0:
        raise InvalidInput.for_field(field, "at least one item", "an empty list", "empty batch")
    if array.shape[0] > max_items:
        raise InvalidInput.for_field(
            field,
            f"at most {max_items} items",
            f"{array.shape[0]} items",
            what=f"batch too large: at most {max_items} items per request",
        )
    check_finite(array, field, single, flat_index, rank)
    if value_range is not None and not _dtype_within(array.dtype, value_range[0], value_range[1]):
        check_range(array, field, *value_range, single=single, flat=flat_index, rank=rank)
    if integers and array.dtype.kind == "f":
        fractional = array != np.rint(array)
        if fractional.any():
            where = tuple(int(i) for i in np.argwhere(fractional)[0])
            flat_shape = array.shape if flat_index else None
            raise InvalidInput.for_field(
                item_index(field, where, single, flat_shape, rank),
                "an integer",
                f"{array[where]:g}",
            )
    return array, single


def _dtype_within(dtype: np.dtype[Any], low: float, high: float) -> bool:
    """Whether every value of an integer dtype lies in [low, high] (uint8 in [0, 255]): then
    the per-element check of a bulk array can be skipped."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return bool(info.min >= low and info.max <= high)


def check_range(
    array: np.ndarray,
    field: str,
    low: float,
    high: float,
    what: str,
    single: bool = False,
    flat: bool = False,
    rank: int | None = None,
) -> None:
    """Every value in [low, high], else a 422 naming the first value outside."""
    outside = (array < low) | (array > high)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise InvalidInput.for_field(
            item_index(field, where, single, array.shape if flat else None, rank),
            f"{what} in [{low:g}, {high:g}]",
            f"{array[where]:g}",
            what=f"value out of range: expected {what} in [{low:g}, {high:g}]",
        )
