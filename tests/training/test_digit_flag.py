"""Fitting the not-a-digit rule (`training.digit_flag`) on tiny signals: the exported trees
score exactly as scikit-learn's, and the threshold accepts the asked share of validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data import digit_shape
from training import digit_flag


def _signals(center: float, count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(center, 1.0, (count, len(digit_shape.NAMES)))


def _digit_sets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    names = ("digits", "MNIST validation", "MNIST validation, tight crops")
    return {name: _signals(0.0, 300 if name == "digits" else 200, rng) for name in names}


def test_fit_rule_separates_and_keeps_validation_acceptance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(digit_flag, "TREES", 20)  # fast; the export is the same for any count
    rng = np.random.default_rng(0)
    signals = {
        **_digit_sets(rng),
        "letters": _signals(3.0, 100, rng),
        "shapes": _signals(-3.0, 50, rng),
    }
    rule = digit_flag.fit_rule(signals, ["digits"], ["letters", "shapes"], version=7)
    validation = np.concatenate(
        [signals["MNIST validation"], signals["MNIST validation, tight crops"]]
    )
    accepted = rule.is_digit(validation).mean()
    assert digit_flag.ACCEPTANCE - 0.01 <= accepted <= digit_flag.ACCEPTANCE + 0.005
    assert (~rule.is_digit(_signals(3.0, 100, rng))).mean() > 0.9
    assert (~rule.is_digit(_signals(-3.0, 100, rng))).mean() > 0.9
    assert rule.classifier_version == 7
    again = digit_shape.FlagRule.from_json(rule.to_json())
    np.testing.assert_array_equal(again.score(validation), rule.score(validation))


def test_compile_rule_writes_trees_that_score_as_the_walk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(digit_flag, "TREES", 20)
    rng = np.random.default_rng(1)
    signals = {**_digit_sets(rng), "letters": _signals(2.0, 200, rng)}
    rule = digit_flag.fit_rule(signals, ["digits"], ["letters"], version=7)
    (tmp_path / digit_shape.FILE).write_text(json.dumps(rule.to_json()))
    digit_flag.compile_rule(tmp_path)
    compiled = digit_shape.load_rule(tmp_path)
    assert compiled is not None and compiled.compiled is not None
    values = _signals(1.0, 500, rng)
    np.testing.assert_allclose(compiled.score(values), rule.walk(values), rtol=0, atol=1e-12)
    assert compiled.threshold == rule.threshold
