"""Write perf_analyzer's `--input-data` files for our models' value ranges (`make perf-input-data`).

perf_analyzer's default random input (uniform over the datatype's range) is refused by the data
plane's range checks: pixels outside [0, 1], unnormalised densities, so it aborts with "Failed to
maintain requested inference load". These files hold valid inputs, two per model, in
perf_analyzer's JSON format (`{"data": [{"<input>": [flat values]}, ...]}`, one item each; `-b`
batches them): digit-like images, the codes the committed encoder makes of them, a harmonic and
a Gaussian-well potential, and two normalised densities, all on the grid of docs/ARCHITECTURE.md.

    .venv/bin/python deploy/perf_analyzer/input_data.py       # writes deploy/perf_analyzer/*.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.registry import ModelRegistry
from service.settings import REPO_ROOT
from service.tasks.energy import DX, GRID

OUT = Path(__file__).resolve().parent


def images() -> np.ndarray:
    """Two 28x28x1 digit-like images in [0, 1]: a '1' (a bar) and a '0' (a ring)."""
    y, x = np.mgrid[0:28, 0:28]
    one = ((np.abs(x - 14) <= 2) & (y >= 5) & (y <= 22)).astype(np.float32)
    radius = np.hypot(x - 13.5, y - 13.5)
    zero = ((radius >= 6) & (radius <= 9)).astype(np.float32)
    return np.stack([one, zero])[..., None]


def potentials() -> np.ndarray:
    harmonic = 0.5 * 0.05 * GRID**2
    well = -1.0 * np.exp(-(GRID**2) / 4.0)
    return np.stack([harmonic, well]).astype(np.float32)


def densities() -> np.ndarray:
    rows = [np.exp(-((GRID - c) ** 2) / (2 * w**2)) for c, w in ((0.0, 1.0), (2.0, 2.5))]
    dense = np.stack(rows)
    return (dense / (dense.sum(axis=1, keepdims=True) * DX)).astype(np.float32)


def inputs(registry: ModelRegistry) -> dict[str, dict[str, np.ndarray]]:
    """Model -> {input name: a batch of valid items}."""
    pictures = images()
    encoder = registry.get("digit_encoder")
    codes = encoder.predict({"images": pictures})[encoder.output.name]
    return {
        "digit_classifier": {"images": pictures},
        "digit_encoder": {"images": pictures},
        "digit_decoder": {"code": codes.astype(np.uint8)},
        "energy_from_potential": {"potential": potentials()},
        "energy_from_density": {"density": densities()},
    }


def _values(item: np.ndarray) -> list[float] | list[int]:
    flat = item.reshape(-1)
    if flat.dtype.kind in "iu":  # integers as JSON integers (perf_analyzer reads UINT8 so)
        return [int(v) for v in flat]
    return np.round(flat.astype(float), 7).tolist()


def document(batch: dict[str, np.ndarray]) -> dict[str, list[dict[str, list[float] | list[int]]]]:
    count = next(iter(batch.values())).shape[0]
    return {"data": [{name: _values(a[i]) for name, a in batch.items()} for i in range(count)]}


def main() -> int:
    registry = ModelRegistry(REPO_ROOT / "models")
    registry.load()
    for name, batch in inputs(registry).items():
        (OUT / f"{name}.json").write_text(json.dumps(document(batch)) + "\n")
        print(f"wrote {OUT / name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
