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

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import morphology

FILE = "not_a_digit.json"
#: The same trees as an ONNX graph (``ai.onnx.ml`` TreeEnsemble), written from the JSON by
#: ``python -m training.digit_flag --compile``; its sha256 is in the JSON.
ONNX_FILE = "not_a_digit.onnx"
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
_EIGHT = np.ones((3, 3), dtype=bool)
_CROSS = ndimage.generate_binary_structure(2, 1)
_EIGHT_COUNT = np.ones((3, 3), dtype=np.uint8)
_ROW = np.arange(28, dtype=np.float64)[:, None]
_COL = np.arange(28, dtype=np.float64)[None, :]


def symmetry(image: np.ndarray) -> tuple[float, float]:
    """How much the ink overlaps itself turned half a turn and mirrored left-right about its
    centre of mass (1: symmetric): shapes drawn with a ruler are, handwriting rarely is."""
    total = float((image * image).sum())
    if total <= 0:
        return 0.0, 0.0
    # ndimage.center_of_mass's own sums, in its order (bit for bit), without its overhead.
    mass = image.sum()
    cy, cx = (image * _ROW).sum() / mass, (image * _COL).sum() / mass
    centred = ndimage.shift(image, (13.5 - cy, 13.5 - cx), order=1)
    norm = float((centred * centred).sum()) or 1.0
    turned = float((centred * centred[::-1, ::-1]).sum()) / norm
    mirrored = float((centred * centred[:, ::-1]).sum()) / norm
    return turned, mirrored


def hull_area(ink: np.ndarray) -> int:
    """The pixels of ``skimage.morphology.convex_hull_image(ink)`` (edges and corners count),
    counted row by row without drawing it.

    skimage takes the hull of the middles of every inked pixel's four edges. In half-pixel
    units (integers), its left side is the lower convex envelope of the leftmost such point of
    each half-row, its right side the upper envelope of the rightmost; a row's pixels are the
    integer columns between the two sides at the row's centre. The sides cross a row at a
    fraction with a denominator below 64, so the 1e-6 guard before rounding cannot move a
    pixel in or out."""
    inked = ink.any(axis=1)
    rows = np.flatnonzero(inked)
    far = 1 << 20
    first = np.where(inked, ink.argmax(axis=1) * 2, far)
    last = np.where(inked, (ink.shape[1] - 1 - ink[:, ::-1].argmax(axis=1)) * 2, -far)
    # Half-row 2r (at index 2r + 1) reaches 2*first - 1 (the left edge's middle); half-row
    # 2r - 1 (index 2r), between rows r - 1 and r, the nearer of their 2*first (the middles
    # of their bottom and top edges).
    left = np.empty(ink.shape[0] * 2 + 1, dtype=np.int64)
    right = np.empty_like(left)
    left[1::2], right[1::2] = first - 1, last + 1
    left[0::2] = np.minimum(np.append(far, first), np.append(first, far))
    right[0::2] = np.maximum(np.append(-far, last), np.append(last, -far))
    at = np.flatnonzero(left < far)
    low = _envelope(*_corners(at - 1, left[at], 1), 1)
    high = _envelope(*_corners(at - 1, right[at], -1), -1)
    centres = rows[0] * 2 + np.arange(0, (rows[-1] - rows[0]) * 2 + 1, 2)
    lo = np.interp(centres, *low)
    hi = np.interp(centres, *high)
    # Columns c with 2c between the sides, both included.
    return int((np.floor(hi / 2 + 1e-6) - np.ceil(lo / 2 - 1e-6) + 1).sum())


def _corners(ys: np.ndarray, xs: np.ndarray, sign: int) -> tuple[list[int], list[int]]:
    """The points of ``_envelope`` that can be its vertices: a point on or beyond the line
    through its two neighbours is none (its envelope passes through or inside that line)."""
    if len(ys) > 2:
        dy, dx = ys[1:-1] - ys[:-2], xs[1:-1] - xs[:-2]
        cross = sign * (dy * (xs[2:] - xs[:-2]) - dx * (ys[2:] - ys[:-2]))
        keep = np.concatenate([[True], cross > 0, [True]])
        ys, xs = ys[keep], xs[keep]
    return ys.tolist(), xs.tolist()


def _envelope(ys: list[int], xs: list[int], sign: int) -> tuple[list[int], list[int]]:
    """The vertices (y, x) of the lower (``sign`` 1) or upper (-1) convex envelope of points
    sorted by y (Andrew's monotone chain, in integers)."""
    cy: list[int] = []
    cx: list[int] = []
    for y, x in zip(ys, xs, strict=True):
        while (
            len(cy) > 1
            and sign * ((cy[-1] - cy[-2]) * (x - cx[-2]) - (cx[-1] - cx[-2]) * (y - cy[-2])) <= 0
        ):
            cy.pop()
            cx.pop()
        cy.append(y)
        cx.append(x)
    return cy, cx


def geometry(image: np.ndarray) -> np.ndarray:
    """The ink geometry of one [28, 28] image in [0, 1]: the values of ``NAMES[2:11]``, then
    the two symmetries and the skeleton's length (``NAMES[12:]``)."""
    return geometries(np.asarray(image)[None])[0]


def geometries(images: np.ndarray) -> np.ndarray:
    """``geometry`` of each of images [N, 28, 28]: [N, 12] (zeros for an image without ink).

    The images are laid in one column, a blank line around each, so that one call of each
    labelling, skeletonising and neighbour count does them all (none reaches across a blank
    line: 8-connected ink, 4-connected background, the skeleton's 3x3 windows); a picture's
    components then have consecutive labels, after those of the pictures above it.
    """
    ink = images >= _INKED
    area = ink.reshape(len(ink), -1).sum(axis=1)
    out = np.zeros((len(ink), 12))
    kept = np.flatnonzero(area > 0)
    if not len(kept):
        return out
    ink, area, count = ink[kept], area[kept], len(kept)
    mosaic = np.zeros((count * 29 + 1, 30), dtype=bool)
    mosaic[:-1].reshape(count, 29, 30)[:, 1:, 1:29] = ink
    strokes = _per_picture(ndimage.label(mosaic, structure=_EIGHT)[0], count)
    background = ndimage.label(~mosaic, structure=_CROSS)[0]
    # Label 1 is the blank lines with every picture's outside, no loop: the loops are 2, 3...
    loops = _per_picture(np.maximum(background - 1, 0), count)
    skeleton = morphology.skeletonize(mosaic)
    neighbours = ndimage.convolve(skeleton.view(np.uint8), _EIGHT_COUNT, mode="constant") - 1
    skeleton = skeleton[:-1].reshape(count, 29 * 30)
    neighbours = neighbours[:-1].reshape(count, 29 * 30)
    length = np.maximum(skeleton.sum(axis=1), 1)
    ends = (skeleton & (neighbours == 1)).sum(axis=1)
    branches = (skeleton & (neighbours >= 3)).sum(axis=1)
    inked_rows = np.asarray(ink.any(axis=2))
    inked_cols = np.asarray(ink.any(axis=1))
    height = 28 - inked_rows[:, ::-1].argmax(axis=1) - inked_rows.argmax(axis=1)
    width = 28 - inked_cols[:, ::-1].argmax(axis=1) - inked_cols.argmax(axis=1)
    hull = np.array([hull_area(one) for one in ink])
    turns = np.array([symmetry(image) for image in images[kept]])
    out[kept] = np.stack(
        [
            area / (28 * 28),
            strokes,
            loops,
            area / np.maximum(hull, 1),
            area / (height * width),
            np.log(height / width),
            area / length,
            ends,
            branches,
            turns[:, 0],
            turns[:, 1],
            length / 28.0,
        ],
        axis=1,
    )
    return out


def _per_picture(labels: np.ndarray, count: int) -> np.ndarray:
    """How many labels each picture's block of a ``geometries`` mosaic holds."""
    top = labels[:-1].reshape(count, -1).max(axis=1)
    before = np.concatenate([[0], np.maximum.accumulate(top)[:-1]])
    return np.maximum(top - before, 0)


def signals(
    images: np.ndarray,
    probabilities: np.ndarray,
    ood_score: np.ndarray,
    shape_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Every signal of ``NAMES`` for images [N, 28, 28] (a trailing channel is accepted) and
    the classifier's probabilities [N, 10] and ood_score [N]: [N, len(NAMES)] float64.
    ``shape_of`` stands for ``geometry`` where another form of it is measured."""
    images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
    probabilities = np.asarray(probabilities).reshape(len(images), -1)
    digits = probabilities.argmax(axis=1)
    if shape_of is None:
        shapes = geometries(images)
    else:
        shapes = np.array([shape_of(image) for image in images]).reshape(-1, 12)
    rows = []
    for k, shape in enumerate(shapes):
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


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(raw, -60.0, 60.0))))


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
    #: The same trees compiled (``not_a_digit.onnx``, an onnxruntime session), or None: then
    #: ``score`` walks the arrays.
    compiled: Any = field(default=None, repr=False, compare=False)

    def score(self, values: np.ndarray) -> np.ndarray:
        """The not-a-digit score in [0, 1] of signals [N, len(NAMES)]."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1, len(NAMES))
        if self.compiled is None:
            return self.walk(values)
        raw = self.baseline + self.compiled.run(None, {"signals": values})[0][:, 0]
        return _sigmoid(raw)

    def walk(self, values: np.ndarray) -> np.ndarray:
        """``score`` by walking the stored arrays level by level with numpy: the definition
        the compiled trees are checked against (equal within float64 rounding), ~40x slower at
        one image."""
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
        return _sigmoid(self.baseline + self.value[trees, node].sum(axis=1))

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
    """The rule saved beside a classifier version, or None where it has none; compiled where
    its ``not_a_digit.onnx`` is there too, and refused (ValueError) where that file is not the
    one its JSON names by sha256."""
    path = version_dir / FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rule = FlagRule.from_json(data)
    compiled = version_dir / ONNX_FILE
    if "onnx_sha256" not in data or not compiled.is_file():
        return rule
    model = compiled.read_bytes()
    if hashlib.sha256(model).hexdigest() != data["onnx_sha256"]:
        raise ValueError(f"{compiled} is not the file {path} names (sha256 differs)")
    import onnxruntime as ort  # the service's runtime; loaded only where a rule has trees

    options = ort.SessionOptions()
    # One image is ~10 us of work: a thread pool would cost more than it saves.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return dataclasses.replace(rule, compiled=session)
