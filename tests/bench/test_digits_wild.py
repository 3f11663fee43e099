"""bench.digits_wild's two ways of measuring: the committed classifier in this process and the
real server over HTTP (`bench.digits_http`) give the same answers on the same pictures; and
`compare` names the figures that differ between two runs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from bench import digits_http
from bench.digits_wild import Model, compare
from tests.service.conftest import REPO_MODELS
from training import digit_sets

CLASSIFIER = REPO_MODELS / "digit_classifier" / "2"


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[digits_http.HttpClassifier]:
    if not (CLASSIFIER / "saved_model.pb").exists():
        pytest.skip("models/digit_classifier/2 is not committed")
    # A model dir with only the classifier: the server starts without the other models.
    root = tmp_path_factory.mktemp("models")
    (root / "digit_classifier").symlink_to(REPO_MODELS / "digit_classifier")
    with digits_http.serving(root, tmp_path_factory.mktemp("logs")) as client:
        yield client


@pytest.fixture(scope="module")
def local() -> Model:
    return Model(CLASSIFIER)


def _digits() -> tuple[list[np.ndarray], np.ndarray]:
    font = digit_sets.fonts()[0]
    pictures = [digit_sets.render_text(str(d), font, 40) for d in (0, 3, 7)]
    return pictures, np.array([0, 3, 7])


def test_http_serves_the_latest_version_with_its_flag(
    http: digits_http.HttpClassifier,
) -> None:
    assert (http.version, http.has_is_digit) == (2, True)


def test_arrays_agree_with_in_process(http: digits_http.HttpClassifier, local: Model) -> None:
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.random((3, 28, 28)), np.zeros((2, 28, 28))]).astype(np.float32)
    over_http, here = http.arrays(images), local.arrays(images)
    np.testing.assert_allclose(over_http["probabilities"], here["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(over_http["is_digit"], here["is_digit"])
    assert not over_http["is_digit"].any()  # noise and blank frames are not digits


def test_uploads_agree_and_a_refused_picture_counts_as_refused(
    http: digits_http.HttpClassifier, local: Model
) -> None:
    pictures, labels = _digits()
    noise = digit_sets.NON_DIGIT_SETS["uniform noise"](1, 3)
    over_http, here = http.uploads([*pictures, *noise]), local.uploads([*pictures, *noise])
    np.testing.assert_array_equal(over_http["accepted"], [True, True, True, False])
    np.testing.assert_array_equal(over_http["accepted"], here["accepted"])
    np.testing.assert_allclose(over_http["probabilities"], here["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(over_http["probabilities"][:3].argmax(axis=1), labels)
    assert not over_http["is_digit"][3]


def test_read_agrees_with_in_process(http: digits_http.HttpClassifier, local: Model) -> None:
    font = digit_sets.fonts()[0]
    rows = [digit_sets.render_text("4071", font, 40), np.full((40, 60), 255, np.uint8)]
    assert http.read(rows) == local.read(rows) == [[4, 0, 7, 1], []]


def test_compare_names_changed_and_missing_figures() -> None:
    before = {"sections": {"S": {"a": {"2": {"n": 10.0, "accuracy": 0.5}}}}}
    after = {
        "sections": {
            "S": {
                "a": {"2": {"n": 10.0, "accuracy": 0.6, "rejected": 1.0}},
                "b": {"2": {"n": 1.0}},
            }
        }
    }
    assert compare(before, after) == [
        "## Compared with the other run",
        "a v2 accuracy: 0.5 -> 0.6",
        "a v2 rejected: not in the other run",
        "b v2: not in the other run",
        "1 figures equal",
    ]


def test_compare_counts_equal_figures() -> None:
    run = {"sections": {"S": {"a": {"1": {"n": 3.0, "accuracy": 1.0}}}}}
    assert compare(run, run)[-1] == "2 figures equal"
