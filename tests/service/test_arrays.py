"""Client arrays in one form: checked as sent, reshaped and cast once, booleans refused."""

from __future__ import annotations

import contextvars

import numpy as np
import pytest

from service.api.body import parse_json_offloaded
from service.arrays import MAY_HOLD_BOOLEANS, as_batch, to_numeric_array
from service.dataplane import fit_to_spec
from service.errors import InvalidInput
from service.registry import TensorSpec
from service.schemas import V2InferenceRequest

IMAGES = TensorSpec("images", np.dtype(np.float32), (None, 28, 28, 1))


def test_as_batch_keeps_the_signature_shape_as_sent() -> None:
    sent = np.zeros((2, 28, 28, 1))
    batch, single = as_batch(sent, "images", (28, 28), 10, squeeze_channel=True)
    assert batch.shape == (2, 28, 28, 1) and not single
    assert np.shares_memory(batch, sent)  # no copy, no reshape


def test_fit_to_spec_reshapes_once_and_casts_once() -> None:
    batch, _ = as_batch(np.zeros((2, 28, 28)), "images", (28, 28), 10, squeeze_channel=True)
    fitted = fit_to_spec(batch, IMAGES, "images")
    assert fitted.shape == (2, 28, 28, 1) and fitted.dtype == np.float32
    unchanged = np.zeros((2, 28, 28, 1), np.float32)
    assert fit_to_spec(unchanged, IMAGES, "images") is unchanged  # already the model's form


def test_fit_to_spec_divides_in_the_model_dtype() -> None:
    pixels = np.arange(784).reshape(1, 28, 28) % 256
    fitted = fit_to_spec(pixels, IMAGES, "images", divide_by=255.0)
    assert fitted.dtype == np.float32
    expected = pixels.astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(fitted.reshape(1, 28, 28), expected)


def test_error_index_of_a_channel_input_names_the_pixel_as_sent() -> None:
    sent = np.zeros((2, 28, 28, 1))
    sent[1, 3, 4, 0] = 2.0
    with pytest.raises(InvalidInput) as info:
        as_batch(sent, "images", (28, 28), 10, squeeze_channel=True, value_range=(0, 1, "px"))
    assert info.value.field == "images[1][3][4]"


def test_wrong_channel_shape_is_reported_without_the_channel() -> None:
    with pytest.raises(InvalidInput, match=r"received shape \[2, 28, 27\]"):
        as_batch(np.zeros((2, 28, 27, 1)), "images", (28, 28), 10, squeeze_channel=True)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([True, 0.1], "x[0]"),
        ([0.1, 2, False], "x[2]"),
        ([[0.1, 0.2], [0.3, True]], "x[1][1]"),
        ([[[1, 2]], [[3, False]]], "x[1][0][1]"),
    ],
)
def test_booleans_among_numbers_are_not_numbers(value: list[object], field: str) -> None:
    with pytest.raises(InvalidInput, match="expected a number") as info:
        to_numeric_array(value, "x")
    assert info.value.field == field


async def test_a_json_body_without_true_or_false_skips_the_search() -> None:
    async def parsed(body: bytes) -> bool:
        await parse_json_offloaded(body, V2InferenceRequest)
        return MAY_HOLD_BOOLEANS.get()

    tensor = b'{"name": "x", "datatype": "FP32", "shape": [2], "data": [0.5, 1]}'
    plain = b'{"inputs": [' + tensor + b"]}"
    flagged = b'{"inputs": [' + tensor + b'], "parameters": {"binary_data_output": true}}'
    assert await parsed(plain) is False
    assert await parsed(flagged) is True
    assert contextvars.Context().run(MAY_HOLD_BOOLEANS.get) is True  # outside a JSON request
