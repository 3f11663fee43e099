"""training.digits_wild: the real server's answers to uploads and .npy bodies, and the figures made
from them (refused counts as wrong for a digit, as rejected for a non-digit)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.service.conftest import REPO_MODELS
from training import digit_sets, digits_wild


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[digits_wild.Client]:
    if not (REPO_MODELS / "digit_classifier" / "2" / "saved_model.pb").exists():
        pytest.skip("models/digit_classifier/2 is not committed")
    log = tmp_path_factory.mktemp("logs") / "service.log"
    with digits_wild.serving(REPO_MODELS, log) as client:
        yield client


def test_uploads_read_digits_touching_the_edges_and_refuse_blank_paper(
    client: digits_wild.Client,
) -> None:
    font = digit_sets.fonts()[0]
    pictures = [digit_sets.render_text(str(d), font, 40, pad=0) for d in (0, 3, 7)]
    paper = digit_sets.paper_pictures(2, 5)

    answers = client.uploads([*pictures, *paper])

    np.testing.assert_array_equal(answers.accepted, [True, True, True, False, False])
    np.testing.assert_array_equal(answers.digit[:3], [0, 3, 7])
    np.testing.assert_array_equal(answers.rejected[3:], [True, True])


def test_arrays_flag_blank_frames(client: digits_wild.Client) -> None:
    images = np.zeros((3, 28, 28), np.float32)

    answers = client.arrays(images, chunk=2)

    assert len(answers.digit) == 3 and answers.accepted.all()
    assert answers.rejected.all()


def test_rows_count_refused_as_wrong_and_as_rejected() -> None:
    answers = digits_wild.Answers(
        digit=np.array([1, -1, 2, 3]),
        accepted=np.array([True, False, True, True]),
        is_digit=np.array([True, False, False, True]),
    )
    labels = np.array([1, 1, 2, 0])

    row = digits_wild.digit_row(answers, labels)

    assert row["accuracy"] == 0.5 and row["refused"] == 0.25
    assert row["accepted as digit"] == 0.5
    assert digits_wild.non_digit_row(answers)["rejected"] == 0.5


def test_report_says_which_targets_are_missed() -> None:
    rows = {
        "scribbles": {"n": 10.0, "rejected": 0.5, "refused": 0.0},
        "lit blank paper": {"n": 10.0, "rejected": 1.0, "refused": 1.0},
    }

    text = digits_wild.report(rows, 1.0, limit=10)

    assert "| scribbles | 10 | rejected | 0.5000 | >= 0.95 | **no** |" in text
    assert "| lit blank paper | 10 | rejected | 1.0000 | >= 0.95 | yes |" in text
