"""training.energy_calibration: the interval scale covers every family, not only the average,
and auto's thresholds keep its promise on every family it was fitted on."""

from __future__ import annotations

import numpy as np

from training import energy_calibration as cal


def _family(rng: np.random.Generator, n: int, std: float, error: float) -> dict[str, np.ndarray]:
    return {
        "energy_std": np.full(n, std),
        "error": rng.normal(0, error, n),
        "in_domain": np.ones(n, bool),
        "domain_score": rng.uniform(0, 1, n),
    }


def test_std_scale_covers_the_worst_family() -> None:
    rng = np.random.default_rng(0)
    results = {
        "honest": _family(rng, 2000, 0.001, 0.001),
        "overconfident": _family(rng, 2000, 0.001, 0.004),  # errors 4x its std
    }

    scale = cal.std_scale(results)

    for r in results.values():
        assert cal.coverage(r, scale)["coverage95_in_domain"] >= 0.95
    assert 3.5 < scale < 4.5
    assert cal.coverage(results["overconfident"], 1.0)["coverage95_in_domain"] < 0.5


def test_auto_rule_keeps_the_promise_on_every_family() -> None:
    rng = np.random.default_rng(1)
    good = _family(rng, 1000, 0.0002, 0.0002)
    bad = _family(rng, 1000, 0.003, 0.01)
    results = {"good": good, "bad": bad}

    threshold, max_score = cal.auto_rule(results, 1.0)

    for r in results.values():
        figures = cal.auto_figures(r, 1.0, threshold, max_score)
        assert figures["within_1_6_mha"] >= cal.SHARE
        assert figures["worst_mha"] <= cal.WORST_HA * 1000
    assert cal.auto_figures(good, 1.0, threshold, max_score)["model_share"] > 0.9
    assert cal.auto_figures(bad, 1.0, threshold, max_score)["model_share"] == 0.0


def test_demo_presets_span_their_slider_ranges() -> None:
    presets = cal.demo_presets(steps=5, notebook=10)

    assert set(presets) == {"preset notebook", "preset harmonic", "preset double", "preset box"}
    box = presets["preset box"]
    assert box.shape == (25, 64) and box.max() == 5.0 and box[box > 0].min() == 0.1
    assert presets["preset harmonic"].shape == (5, 64)
