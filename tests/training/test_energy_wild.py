"""training.energy_wild: a target missed shows as such in the report (coverage, auto's share within
1.6 mHa, auto's worst error, E[n]'s offset flag), and the .npz answers are read back whole."""

from __future__ import annotations

import io

import httpx
import numpy as np

from training import energy_wild

GOOD = {
    "n": 400.0,
    "in_domain": 1.0,
    "coverage95_in_domain": 0.96,
    "auto_within_1_6_mha": 1.0,
    "auto_worst_mha": 1.5,
    "auto_model_share": 0.01,
    "exact_worst_mha": 0.0,
}
OFFSET = {
    "n": 20.0,
    "in_domain": 0.0,
    "reason_names_offset": 1.0,
    "worst_error_ha": 49.5,
    "e_v_in_domain": 1.0,
    "e_v_worst_mha": 0.4,
}


def _met(text: str, name: str) -> str:
    row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
    return row.rsplit("|", 2)[1].strip()


def test_report_marks_each_missed_target() -> None:
    rows = {
        "good": GOOD,
        "undercovered": {**GOOD, "coverage95_in_domain": 0.92},
        "auto_often_off": {**GOOD, "auto_within_1_6_mha": 0.99},
        "auto_once_far": {**GOOD, "auto_worst_mha": 5.12},
        "never_in_domain": {**GOOD, "in_domain": 0.0, "coverage95_in_domain": float("nan")},
        "offset -50 Ha": OFFSET,
    }

    text = energy_wild.report(rows, 1.0, [], limit=50)

    assert _met(text, "good") == "yes" and _met(text, "never_in_domain") == "yes"
    for name in ("undercovered", "auto_often_off", "auto_once_far"):
        assert _met(text, name) == "**no**"
    assert "| offset -50 Ha | 20 | 0% | yes | 49.5 | 100% | 0.40 |" in text
    assert "Subsampled evenly to ~50 items a set." in text


def test_post_concatenates_the_npz_answers_of_every_chunk() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        rows = np.load(io.BytesIO(request.content), allow_pickle=False)
        buffer = io.BytesIO()
        np.savez(buffer, energies=rows[:, 0], mode=np.asarray("auto"))
        assert request.url.params["mode"] == "auto"
        return httpx.Response(200, content=buffer.getvalue())

    V = np.arange(2500 * 64, dtype=np.float32).reshape(2500, 64)
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://test") as http:
        arrays = energy_wild.post(http, "/from-potential", V, mode="auto")

    assert set(arrays) == {"energies"}  # the 0-d `mode` is not a per-item field
    np.testing.assert_array_equal(arrays["energies"], V[:, 0])
