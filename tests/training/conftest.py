"""Tiny real data for the training tests: a few dozen synthetic digits and one-electron systems
solved exactly by ``data.schrodinger`` (never the 100,000-system cache, never the network)."""

from __future__ import annotations

import numpy as np
import pytest

from data import mnist, schrodinger
from training import energy
from training.digit_classifier import ClassifierData


def _split(rng: np.random.Generator, count: int) -> mnist.Split:
    images = rng.random((count, 28, 28, 1), dtype=np.float32)
    return mnist.Split(images=images, labels=rng.integers(0, 10, count).astype(np.int64))


@pytest.fixture(scope="session")
def tiny_mnist() -> ClassifierData:
    rng = np.random.default_rng(0)
    return ClassifierData(
        train=_split(rng, 48),
        validation=_split(rng, 16),
        test=_split(rng, 16),
        test_full=_split(rng, 32),
        source="synthetic test images",
        sha256={},
    )


@pytest.fixture(scope="session")
def tiny_systems() -> energy.EnergyData:
    ds = schrodinger.generate(count=64, seed=1)
    return energy.make_data(ds, "data.schrodinger.generate(count=64, seed=1)")
