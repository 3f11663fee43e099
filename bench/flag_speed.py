"""The not-a-digit check's own cost (``data.digit_shape``): signals + score per image at batch 1
and per batch of 64, its first form (scikit-image, numpy's tree walk) against the served one
(counted hull, 2x2 Euler count, trees compiled by ONNX Runtime), in interleaved rounds; and that
both decide ``is_digit`` alike on MNIST test digits and digits_wild's non-digit kinds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

from bench import harness
from data import digit_shape, mnist
from service.registry import BackendPolicy, load_version
from training import digit_flag, digits_wild


def skimage_geometry(image: np.ndarray) -> np.ndarray:
    """``digit_shape.geometry`` as first written, on scikit-image and scipy.ndimage."""
    ink = image >= 0.5
    area = int(ink.sum())
    if area == 0:
        return np.zeros(12)
    strokes = int(measure.label(ink, connectivity=2).max())
    loops = max(strokes - measure.euler_number(ink, connectivity=2), 0)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    hull = morphology.convex_hull_image(ink)
    skeleton = morphology.skeletonize(ink)
    length = max(int(skeleton.sum()), 1)
    neighbours = ndimage.convolve(skeleton.astype(np.int32), np.ones((3, 3)), mode="constant") - 1
    cy, cx = ndimage.center_of_mass(image)
    centred = ndimage.shift(image, (13.5 - cy, 13.5 - cx), order=1)
    norm = float((centred * centred).sum()) or 1.0
    return np.array(
        [
            area / ink.size,
            strokes,
            loops,
            area / max(int(hull.sum()), 1),
            area / (height * width),
            np.log(height / width),
            area / length,
            int((skeleton & (neighbours == 1)).sum()),
            int((skeleton & (neighbours >= 3)).sum()),
            float((centred * centred[::-1, ::-1]).sum()) / norm,
            float((centred * centred[:, ::-1]).sum()) / norm,
            length / 28.0,
        ],
        dtype=np.float64,
    )


def inputs(count: int) -> dict[str, np.ndarray]:
    """MNIST test digits and digits_wild's non-digit kinds, as the service gives the classifier."""
    test = mnist.load_mnist(as_float=True, download=False).test_full.images[:count, ..., 0]
    non_digits = digits_wild.non_digit_sets()
    return {
        "MNIST test": test.astype(np.float32),
        **{name: digit_flag.prepare(pictures) for name, pictures in non_digits.items()},
    }


def compare(
    rule: digit_shape.FlagRule, sets: dict[str, np.ndarray], classifier: Callable[..., tuple]
) -> list[list[object]]:
    """Per set: its size, the largest signal and score differences, the decisions that differ."""
    rows: list[list[object]] = []
    for name, images in sets.items():
        if not len(images):  # every picture refused before the classifier (blank paper)
            rows.append([name, 0, "-", "-", 0])
            continue
        probabilities, ood = classifier(images)
        before = digit_shape.signals(images, probabilities, ood, skimage_geometry)
        after = digit_shape.signals(images, probabilities, ood)
        score_before, score_after = rule.walk(before), rule.score(after)
        differ = int(((score_before <= rule.threshold) != (score_after <= rule.threshold)).sum())
        diffs = [
            f"{np.abs(a - b).max():.1e}" for a, b in ((after, before), (score_after, score_before))
        ]
        rows.append([name, len(images), *diffs, differ])
    return rows


def timings(
    rule: digit_shape.FlagRule, images: np.ndarray, probabilities: np.ndarray, ood: np.ndarray
) -> list[list[Any]]:
    """Per batch size (1, 64): the median microseconds per call before and after, over
    interleaved rounds."""
    checks = {
        "before": lambda i, p, o: rule.walk(digit_shape.signals(i, p, o, skimage_geometry)),
        "after": lambda i, p, o: rule.score(digit_shape.signals(i, p, o)),
    }
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(9):
        for batch in (1, 64):
            for name, check in checks.items():
                spent = []
                for start in range(0, len(images) - batch + 1, batch):  # whole batches
                    part = slice(start, start + batch)
                    began = time.perf_counter()
                    check(images[part], probabilities[part], ood[part])
                    spent.append(time.perf_counter() - began)
                samples.setdefault((name, batch), []).append(float(np.median(spent)) * 1e6)
    medians = {key: harness.median(values) for key, values in samples.items()}
    return [[batch, medians["before", batch], medians["after", batch]] for batch in (1, 64)]


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("flag_speed", __doc__)
    p.add_argument("--digits", type=int, default=2000, help="MNIST test digits in the check")
    args = harness.parse(p, argv)
    version_dir = args.model_dir / "digit_classifier" / "2"
    rule = digit_shape.load_rule(version_dir)
    if rule is None or rule.compiled is None:
        print(f"{version_dir} has no compiled not-a-digit rule")
        return 2
    model = load_version("digit_classifier", 2, version_dir, BackendPolicy("onnxruntime"))

    def classifier(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = model.predict({"images": images[..., None]})
        return found["probabilities"], found["ood_score"]

    report = harness.new_report("flag_speed", args.argv)
    sets = inputs(args.digits)
    checked = compare(rule, sets, classifier)
    images = sets["MNIST test"][:128]
    medians = timings(rule, images, *classifier(images))
    cells = [[*row, f"{row[1] / row[2]:.1f}x"] for row in medians]
    lines = [
        "Same decisions: the first form's signals and numpy tree walk against the service's "
        "(largest absolute differences; `is_digit` decisions that differ).",
        "",
        *harness.table("set | images: | signals diff: | score diff: | decisions differ:", checked),
        "",
        "Cost of signals + score on MNIST test digits (median of 9 interleaved rounds of "
        f"{len(images)} images; microseconds per call: per image at batch 1, per batch at 64).",
        "",
        *harness.table("batch: | before us: | after us: | speed-up:", cells),
    ]
    harness.publish(report, harness.document(report, "The not-a-digit check's cost", lines), args)
    return 0
