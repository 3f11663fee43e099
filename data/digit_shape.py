"""Does a 28x28 MNIST-style input look like a digit? Signals of the input and of the
classifier's answer for it, combined into one not-a-digit score by boosted decision trees.

The signals (``signals``), per image: the classifier's free energy (``ood_score``) and its top
probability, and the ink's geometry on the image thresholded at half intensity (scikit-image):
the share of the frame inked, the number of strokes (connected components), closed loops
(components - Euler number), solidity (ink / its convex hull), extent (ink / its box), the box's
aspect ratio, the stroke width (ink / skeleton length), the skeleton's ends and branch points,
whether the number of loops is one the predicted digit can have, the half-turn and mirror
symmetry, and the skeleton's length. (The digit codec's reconstruction error was measured as a
signal too and changed nothing: ``docs/real-inputs.md``.)

The rule (``FlagRule``): its trees and its threshold are a JSON file fitted by
``python -m training.digit_flag`` and saved beside the classifier version it was fitted for
(``not_a_digit.json``). Numpy and scikit-image only: the service and the training pipeline
share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

FILE = "not_a_digit.json"
NAMES = (
    "ood_score",
    "top_probability",
    "fill",
    "strokes",
    "loops",
    "solidity",
    "extent",
    "aspect",
    "stroke_width",
    "ends",
    "branches",
    "loops_unlike_digit",
    "turn_symmetry",
    "mirror_symmetry",
    "stroke_length",
)
_INKED = 0.5
#: The closed loops each digit is commonly written with (4 open or closed; 2 with a loop).
_DIGIT_LOOPS = ({1}, {0}, {0, 1}, {0}, {0, 1}, {0}, {1}, {0}, {2, 1}, {1})
_NEIGHBOURS = np.ones((3, 3))


def symmetry(image: np.ndarray) -> tuple[float, float]:
    """How much the ink overlaps itself turned half a turn and mirrored left-right about its
    centre of mass (1: symmetric): shapes drawn with a ruler are, handwriting rarely is."""
    total = float((image * image).sum())
    if total <= 0:
        return 0.0, 0.0
    cy, cx = ndimage.center_of_mass(image)
    centred = ndimage.shift(image, (13.5 - cy, 13.5 - cx), order=1)
    norm = float((centred * centred).sum()) or 1.0
    turned = float((centred * centred[::-1, ::-1]).sum()) / norm
    mirrored = float((centred * centred[:, ::-1]).sum()) / norm
    return turned, mirrored


def geometry(image: np.ndarray) -> np.ndarray:
    """The ink geometry of one [28, 28] image in [0, 1]: the values of ``NAMES[2:11]``, then
    the two symmetries and the skeleton's length (``NAMES[12:]``)."""
    ink = image >= _INKED
    area = int(ink.sum())
    if area == 0:
        return np.zeros(12)
    labels = measure.label(ink, connectivity=2)
    strokes = int(labels.max())
    euler = measure.euler_number(ink, connectivity=2)
    loops = max(strokes - euler, 0)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    hull = morphology.convex_hull_image(ink)
    skeleton = morphology.skeletonize(ink)
    length = max(int(skeleton.sum()), 1)
    neighbours = ndimage.convolve(skeleton.astype(np.int32), _NEIGHBOURS, mode="constant") - 1
    ends = int((skeleton & (neighbours == 1)).sum())
    branches = int((skeleton & (neighbours >= 3)).sum())
    return np.array(
        [
            area / ink.size,
            strokes,
            loops,
            area / max(int(hull.sum()), 1),
            area / (height * width),
            np.log(height / width),
            area / length,
            ends,
            branches,
            *symmetry(image),
            length / 28.0,
        ],
        dtype=np.float64,
    )


def signals(
    images: np.ndarray,
    probabilities: np.ndarray,
    ood_score: np.ndarray,
) -> np.ndarray:
    """Every signal of ``NAMES`` for images [N, 28, 28] (a trailing channel is accepted) and
    the classifier's probabilities [N, 10] and ood_score [N]: [N, len(NAMES)] float64."""
    images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
    probabilities = np.asarray(probabilities).reshape(len(images), -1)
    digits = probabilities.argmax(axis=1)
    rows = []
    for k, image in enumerate(images):
        shape = geometry(image)
        unlike = float(int(shape[2]) not in _DIGIT_LOOPS[int(digits[k])])
        rows.append(
            [
                float(np.ravel(ood_score)[k]),
                float(probabilities[k].max()),
                *shape[:9],
                unlike,
                *shape[9:],
            ]
        )
    return np.asarray(rows, dtype=np.float64)


@dataclass(frozen=True)
class FlagRule:
    """Boosted decision trees over the signals: ``score = sigmoid(baseline + sum of the leaf
    each tree sends the signals to)``; an image is not a digit where ``score > threshold``.

    Every tree is arrays over its nodes, padded to one length: ``feature`` and ``cut`` (go left
    where ``signal[feature] <= cut``), ``left``, ``right``, ``leaf`` and ``value``.
    """

    feature: np.ndarray  # int [T, M]
    cut: np.ndarray  # float [T, M]
    left: np.ndarray  # int [T, M]
    right: np.ndarray  # int [T, M]
    leaf: np.ndarray  # bool [T, M]
    value: np.ndarray  # float [T, M]
    baseline: float
    threshold: float
    classifier_version: int

    def score(self, values: np.ndarray) -> np.ndarray:
        """The not-a-digit score in [0, 1] of signals [N, len(NAMES)]."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(NAMES))
        trees = np.arange(self.feature.shape[0])
        node = np.zeros((len(values), len(trees)), dtype=np.int64)
        for _ in range(self.feature.shape[1]):
            done = self.leaf[trees, node]
            if done.all():
                break
            signal = np.take_along_axis(values, self.feature[trees, node], axis=1)
            go_left = signal <= self.cut[trees, node]
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(done, node, step)
        raw = self.baseline + self.value[trees, node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-np.clip(raw, -60.0, 60.0)))

    def is_digit(self, values: np.ndarray) -> np.ndarray:
        return self.score(values) <= self.threshold

    def to_json(self) -> dict[str, object]:
        return {
            "signals": list(NAMES),
            "baseline": self.baseline,
            "threshold": self.threshold,
            "classifier_version": self.classifier_version,
            "trees": {
                "feature": self.feature.tolist(),
                "cut": self.cut.tolist(),
                "left": self.left.tolist(),
                "right": self.right.tolist(),
                "leaf": self.leaf.astype(int).tolist(),
                "value": self.value.tolist(),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlagRule:
        if list(data["signals"]) != list(NAMES):
            raise ValueError(f"signals {data['signals']} are not {list(NAMES)}")
        trees = data["trees"]
        return cls(
            np.asarray(trees["feature"], dtype=np.int64),
            np.asarray(trees["cut"], dtype=np.float64),
            np.asarray(trees["left"], dtype=np.int64),
            np.asarray(trees["right"], dtype=np.int64),
            np.asarray(trees["leaf"], dtype=bool),
            np.asarray(trees["value"], dtype=np.float64),
            float(data["baseline"]),
            float(data["threshold"]),
            int(data["classifier_version"]),
        )


def load_rule(version_dir: Path) -> FlagRule | None:
    """The rule saved beside a classifier version, or None where it has none."""
    path = version_dir / FILE
    if not path.is_file():
        return None
    return FlagRule.from_json(json.loads(path.read_text()))
