"""bench.overload: what its tallies count as answered, refused, reset and timed out."""

from __future__ import annotations

import math

import pytest

from bench import overload
from bench.driver import Sample


def test_tally_sorts_samples_by_what_happened() -> None:
    statuses: list[int | str] = [200, 200, 503, 500, 502, "ConnectionRefusedError"]
    statuses += ["TimeoutError", "client: no answer within drain time", "ConnectionResetError"]
    tally = overload.Tally.of([Sample(0.0, 0.01 * (i + 1), s, "-") for i, s in enumerate(statuses)])

    assert (tally.count(200), tally.count(503), tally.count()) == (2, 1, 5)
    assert (tally.refused, tally.timeouts, tally.reset) == (1, 2, 1)
    assert tally.other_5xx() == 2
    assert tally.p(50, 200) == pytest.approx(15.0)  # ms, between the two 200s
    assert math.isnan(tally.p(99, 504))


def test_bodies_are_what_the_routes_take() -> None:
    classify = overload.classify_body()
    assert (
        classify.path == overload.CLASSIFY_PATH and b'"shape": [1, 28, 28, 1]' in classify.payload
    )
    assert overload.solver_body(3).payload.count(b"[") == 4  # the list and 3 potentials
