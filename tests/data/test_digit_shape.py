"""The not-a-digit signals of `data.digit_shape` on drawn inputs, the rule's JSON form, and the
fast forms (counted hull, compiled trees) against the definitions they replace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import morphology

from bench import flag_speed
from data import digit_shape, mnist
from training import digit_flag, digit_sets

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


REPO_VERSION = Path(__file__).resolve().parents[2] / "models" / "digit_classifier" / "2"


def _real_inputs(count: int) -> np.ndarray:
    """MNIST test digits and the drawn non-digits the rule must tell apart from them."""
    try:
        test = mnist.load_mnist(as_float=True, download=False).test_full.images[:count, ..., 0]
    except mnist.DatasetError as exc:
        pytest.skip(str(exc))
    drawn = digit_flag.prepare(digit_sets.shapes(40, 11) + digit_sets.scribbles(40, 11))
    rows = [_drawn(k) for k in ("ring", "bar", "eight")]
    return np.concatenate([test.astype(np.float32), drawn, np.stack(rows)])


def test_geometry_equals_the_skimage_definitions_one_by_one_and_batched() -> None:
    images = _real_inputs(300)
    images = np.concatenate([images[:5], np.zeros((1, 28, 28), np.float32), images[5:]])
    slow = np.stack([flag_speed.skimage_geometry(image) for image in images])
    np.testing.assert_array_equal(digit_shape.geometries(images), slow)
    np.testing.assert_array_equal(
        np.stack([digit_shape.geometry(i) for i in images[:40]]), slow[:40]
    )


def test_hull_area_counts_the_pixels_skimage_draws() -> None:
    rng = np.random.default_rng(0)
    inks = [rng.random((28, 28)) > p for p in (0.5, 0.9, 0.99, 0.999)] + [np.eye(28, dtype=bool)]
    inks += [image >= 0.5 for image in _real_inputs(100)]
    for ink in (i for i in inks if i.any()):
        assert digit_shape.hull_area(ink) == int(morphology.convex_hull_image(ink).sum())


@pytest.mark.skipif(
    not (REPO_VERSION / digit_shape.ONNX_FILE).is_file(), reason="no compiled rule committed"
)
def test_compiled_rule_scores_real_inputs_as_the_walk() -> None:
    import onnxruntime as ort

    rule = digit_shape.load_rule(REPO_VERSION)
    assert rule is not None and rule.compiled is not None
    images = _real_inputs(500)
    classifier = ort.InferenceSession(str(REPO_VERSION / "model.onnx"))
    names = [o.name for o in classifier.get_outputs()]
    found = dict(zip(names, classifier.run(None, {"images": images[..., None]}), strict=True))
    values = digit_shape.signals(images, found["probabilities"], found["ood_score"])
    score, walked = rule.score(values), rule.walk(values)
    np.testing.assert_allclose(score, walked, rtol=0, atol=1e-9)
    assert (score <= rule.threshold).tolist() == (walked <= rule.threshold).tolist()
    assert 0 < (score > rule.threshold).sum() < len(score)  # both decisions occur


def test_load_rule_refuses_a_compiled_file_the_json_does_not_name(tmp_path: Path) -> None:
    rule = _rule()
    (tmp_path / digit_shape.FILE).write_text(json.dumps(rule.to_json()))
    digit_flag.compile_rule(tmp_path)
    loaded = digit_shape.load_rule(tmp_path)
    assert loaded is not None and loaded.compiled is not None
    (tmp_path / digit_shape.ONNX_FILE).write_bytes(
        b"\0" + (tmp_path / "not_a_digit.onnx").read_bytes()
    )
    with pytest.raises(ValueError, match="sha256"):
        digit_shape.load_rule(tmp_path)
