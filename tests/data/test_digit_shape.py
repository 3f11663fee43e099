"""The not-a-digit signals of `data.digit_shape` on drawn inputs, and the rule's JSON form."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from data import digit_shape

GEOMETRY = dict(zip(digit_shape.NAMES[2:11], range(9), strict=True))


def _drawn(draw: str) -> np.ndarray:
    image = Image.new("F", (28, 28), 0.0)
    pen = ImageDraw.Draw(image)
    if draw == "ring":
        pen.ellipse((6, 4, 21, 23), outline=1.0, width=3)
    elif draw == "bar":
        pen.line((14, 4, 14, 23), fill=1.0, width=3)
    elif draw == "eight":
        pen.ellipse((8, 3, 19, 13), outline=1.0, width=2)
        pen.ellipse((7, 13, 20, 24), outline=1.0, width=2)
    return np.asarray(image)


def test_geometry_counts_loops_strokes_and_ends() -> None:
    ring, bar, eight = (digit_shape.geometry(_drawn(k)) for k in ("ring", "bar", "eight"))
    assert (ring[GEOMETRY["strokes"]], ring[GEOMETRY["loops"]]) == (1, 1)
    assert (bar[GEOMETRY["loops"]], bar[GEOMETRY["ends"]]) == (0, 2)
    assert eight[GEOMETRY["loops"]] == 2
    assert ring[GEOMETRY["solidity"]] < 0.6 < bar[GEOMETRY["solidity"]]


def test_geometry_of_empty_image_is_zero() -> None:
    assert not digit_shape.geometry(np.zeros((28, 28))).any()


def test_signals_flag_loops_the_predicted_digit_cannot_have() -> None:
    ring = _drawn("ring")[None]
    one, zero = np.eye(10)[[1, 0]]
    unlike = digit_shape.NAMES.index("loops_unlike_digit")
    as_one = digit_shape.signals(ring, one[None], np.array([-5.0]))
    as_zero = digit_shape.signals(ring, zero[None], np.array([-5.0]))
    assert as_one.shape == (1, len(digit_shape.NAMES))
    assert (as_one[0, unlike], as_zero[0, unlike]) == (1.0, 0.0)
    assert as_one[0, 0] == -5.0 and as_one[0, 1] == 1.0


def _rule() -> digit_shape.FlagRule:
    # One tree: ood_score <= 0 -> leaf 1 (-2), else leaf 2 (+3); padded to 4 nodes.
    return digit_shape.FlagRule(
        feature=np.array([[0, 0, 0, 0]]),
        cut=np.array([[0.0, 0.0, 0.0, 0.0]]),
        left=np.array([[1, 0, 0, 0]]),
        right=np.array([[2, 0, 0, 0]]),
        leaf=np.array([[False, True, True, True]]),
        value=np.array([[0.0, -2.0, 3.0, 0.0]]),
        baseline=0.5,
        threshold=0.5,
        classifier_version=2,
    )


def test_rule_walks_its_trees_and_round_trips_through_json() -> None:
    rule = _rule()
    values = np.zeros((2, len(digit_shape.NAMES)))
    values[1, 0] = 1.0
    expected = 1 / (1 + np.exp(-np.array([0.5 - 2.0, 0.5 + 3.0])))
    np.testing.assert_allclose(rule.score(values), expected)
    assert rule.is_digit(values).tolist() == [True, False]
    again = digit_shape.FlagRule.from_json(rule.to_json())
    np.testing.assert_array_equal(again.score(values), rule.score(values))
