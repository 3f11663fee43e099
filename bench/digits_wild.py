"""Digits in the wild: the digit classifier's versions side by side on inputs unlike MNIST.

    python -m bench.digits_wild [--versions 1 2] [--limit N] [--json FILE]

Every picture goes the way an upload goes: encoded as PNG, read by ``service.imaging`` (the
service's own preprocessing) and classified by the exported SavedModel's ``serving_default``
signature; the degraded MNIST copies and the raw non-digit arrays go to the signature directly
(they are already 28x28 model inputs). Figures:

- MNIST test (10,000): accuracy, ECE, share accepted as digits (``is_digit``);
- degraded MNIST test: blur, low resolution (smooth and blocky), thin and thick strokes,
  noise, low contrast, elastic distortion, and photos on unevenly lit paper (through imaging);
- digits rendered from every installed font; scikit-learn's 8x8 handwritten digits (UCI);
- not a digit: the share rejected, per kind, either by the preprocessing ("no digit found",
  a 422) or by ``is_digit`` = false;
- reading rows of MNIST test digits and of rendered digits (``service.reading``).

v1 has no ``is_digit``: its rejection columns count only the preprocessing's refusals.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from data import mnist
from service import imaging, reading
from service.errors import InvalidInput
from training import digit_degrade, digit_robust, digit_sets
from training.common import DEFAULT_MODELS_DIR, load_signature

_MAX_PIXELS = 4096 * 4096


def preprocess(pictures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pictures through the upload path: the 28x28 images [N, 28, 28] (zeros where refused)
    and whether the preprocessing accepted each one [N]."""
    frames = np.zeros((len(pictures), 28, 28), np.float32)
    accepted = np.zeros(len(pictures), bool)
    for i, picture in enumerate(pictures):
        try:
            frames[i] = imaging.preprocess_upload(digit_sets.encode_png(picture), _MAX_PIXELS)
            accepted[i] = True
        except InvalidInput:
            pass
    return frames, accepted


class Model:
    def __init__(self, path: Path) -> None:
        self.signature = load_signature(path)
        self.outputs = set(self.signature.structured_outputs)

    def run(self, images: np.ndarray, batch: int = 1000) -> dict[str, np.ndarray]:
        """Every output of the signature for ``images`` [N, 28, 28], one call per batch."""
        x = images[..., None].astype(np.float32)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), batch):
            out = self.signature(images=tf.constant(x[start : start + batch]))
            for key, value in out.items():
                parts.setdefault(key, []).append(value.numpy())
        return {key: np.concatenate(values) for key, values in parts.items()}


def _accuracy(model: Model, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = model.run(images)
    correct = out["probabilities"].argmax(axis=1) == labels
    row = {"n": float(len(labels)), "accuracy": float(correct.mean())}
    if "is_digit" in out:
        row["accepted_as_digit"] = float(out["is_digit"].mean())
    return row


def degraded_mnist(images: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """Fixed degradations of the test images [N, 28, 28]; each with its own seed."""

    def seeded(f: Callable[..., np.ndarray], **kw: Any) -> Callable[[], np.ndarray]:
        return lambda: f(images, np.random.default_rng(7), **kw)

    return {
        "blur sigma 1.0": seeded(digit_degrade.blur, sigma=1.0),
        "blur sigma 1.5": seeded(digit_degrade.blur, sigma=1.5),
        "10 px, upsampled smooth": seeded(digit_degrade.low_resolution, size=10, order=1),
        "10 px, upsampled blocky": seeded(digit_degrade.low_resolution, size=10, order=0),
        "7 px, upsampled smooth": seeded(digit_degrade.low_resolution, size=7, order=1),
        "thin strokes (2x2 erosion)": seeded(digit_degrade.stroke_width, change=-1),
        "thick strokes (3x3 dilation)": seeded(digit_degrade.stroke_width, change=2),
        "noise sigma 0.1": seeded(digit_degrade.noise, sigma=0.1),
        "low contrast": seeded(digit_degrade.contrast),
        "elastic distortion": seeded(digit_degrade.elastic),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.digits_wild", description=__doc__)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--limit",
        type=int,
        help="at most this many pictures per set that goes through the preprocessing (the "
        "MNIST test copies given to the model directly are always all 10,000)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    limit = args.limit
    models = {v: Model(args.models_dir / digit_robust.NAME / str(v)) for v in args.versions}
    splits = mnist.load_mnist(as_float=True, download=False)
    test = splits.test_full
    test_images, test_labels = test.images[..., 0], test.labels
    results: dict[str, Any] = {"versions": args.versions, "sections": {}}

    def section(name: str, rows: dict[str, dict[int, dict[str, float]]]) -> None:
        results["sections"][name] = {
            k: {str(v): r for v, r in row.items()} for k, row in rows.items()
        }
        print(f"\n## {name}")
        for key, row in rows.items():
            if not row:
                continue
            cells = "  ".join(
                f"v{v}: " + ", ".join(f"{m}={x:.4g}" for m, x in r.items() if m != "n")
                for v, r in row.items()
            )
            n = int(next(iter(row.values())).get("n", 0))
            print(f"{key:34s} n={n:<6d} {cells}", flush=True)

    # MNIST itself, directly and through the upload path.
    rows: dict[str, dict[int, dict[str, float]]] = {}
    rows["MNIST test (direct)"] = {}
    for v, model in models.items():
        out = model.run(test_images)
        row = _accuracy(model, test_images, test_labels)
        row["ece"] = digit_robust.expected_calibration_error(out["probabilities"], test_labels)
        rows["MNIST test (direct)"][v] = row
    n = limit or 2000
    uploads = [np.rint(255 * (1 - im)).astype(np.uint8) for im in test_images[:n]]
    frames, ok = preprocess(uploads)
    rows[f"MNIST test[:{n}] as dark-on-light PNG"] = {
        v: {**_accuracy(m, frames, test_labels[:n]), "preprocess_ok": float(ok.mean())}
        for v, m in models.items()
    }
    section("MNIST", rows)

    rows = {}
    for name, make in degraded_mnist(test_images).items():
        images = make()
        rows[name] = {v: _accuracy(m, images, test_labels) for v, m in models.items()}
    photos = digit_sets.mnist_photos(test_images[: limit or 3000], seed=3)
    frames, ok = preprocess(photos)
    n = len(photos)
    rows["photo: paper 170->255, noise 8"] = {
        v: {**_accuracy(m, frames, test_labels[:n]), "preprocess_ok": float(ok.mean())}
        for v, m in models.items()
    }
    photos = digit_sets.mnist_photos(
        test_images[: limit or 3000], seed=4, ramp=(90.0, 255.0), noise=12.0
    )
    frames, ok = preprocess(photos)
    rows["photo: paper 90->255, noise 12"] = {
        v: {**_accuracy(m, frames, test_labels[:n]), "preprocess_ok": float(ok.mean())}
        for v, m in models.items()
    }
    section("Degraded MNIST test", rows)

    rows = {}
    pictures, labels = digit_sets.font_digits()
    step = _stride(len(pictures), limit)
    pictures, labels = pictures[::step], labels[::step]
    frames, ok = preprocess(pictures)
    rows[f"font digits ({len(digit_sets.fonts())} fonts)"] = {
        v: {**_accuracy(m, frames, labels), "preprocess_ok": float(ok.mean())}
        for v, m in models.items()
    }
    for order, name in ((1, "smooth"), (0, "blocky")):
        pictures, labels = digit_sets.sklearn_digits(order)
        pictures, labels = pictures[:limit], labels[:limit]
        frames, ok = preprocess(pictures)
        rows[f"sklearn load_digits 8x8, {name} x12"] = {
            v: {**_accuracy(m, frames, labels), "preprocess_ok": float(ok.mean())}
            for v, m in models.items()
        }
    section("Other digits", rows)

    rows = {}
    count = min(limit or 300, 300)
    kinds: dict[str, list[np.ndarray]] = {
        name: make(count, 11) for name, make in digit_sets.NON_DIGIT_SETS.items()
    }
    # v2 saw DejaVu's letters (no look-alikes) in training (outlier exposure); Liberation's
    # are held out.
    prepared = {name: (*preprocess(pictures), len(pictures)) for name, pictures in kinds.items()}
    for family, note in (("DejaVu", "seen in training"), ("Liberation", "held out")):
        glyphs, names = digit_sets.font_non_digits(family=family)
        step = _stride(len(glyphs), limit)
        glyphs, names = glyphs[::step], names[::step]
        frames, ok = preprocess(glyphs)
        prepared[f"letters+symbols, {family} ({note})"] = (frames, ok, len(glyphs))
        plain = np.array([c not in digit_sets.LOOKALIKES for c in names])
        prepared[f"... {family}, no digit look-alikes"] = (frames[plain], ok[plain], plain.sum())
    for name, (frames, ok, total) in prepared.items():
        rows[name] = {}
        for v, m in models.items():
            row = {"n": float(total), "refused_by_preprocessing": float(1 - ok.mean())}
            if "is_digit" in m.outputs and ok.any():
                flagged = ~m.run(frames[ok])["is_digit"]
                row["rejected"] = float((~ok).mean() + ok.mean() * flagged.mean())
            rows[name][v] = row
    rng = np.random.default_rng(5)
    raw = {
        "raw 28x28: zeros": np.zeros((100, 28, 28), np.float32),
        "raw 28x28: uniform noise": rng.random((1000, 28, 28)).astype(np.float32),
        "raw 28x28: ones": np.ones((100, 28, 28), np.float32),
    }
    for name, images in raw.items():
        rows[name] = {
            v: {"n": float(len(images)), "rejected": float((~m.run(images)["is_digit"]).mean())}
            for v, m in models.items()
            if "is_digit" in m.outputs
        }
    section("Not a digit (share rejected)", rows)

    rows = {}
    rows["MNIST rows (3-6 digits, gaps 3-14 px)"] = _read_rows(
        models, test_images, test_labels, limit
    )
    rows["rendered rows (fonts)"] = _read_font_rows(models)
    section("Reading rows of digits", rows)
    results["seconds"] = time.perf_counter() - start
    print(f"\n{results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _stride(total: int, limit: int | None) -> int:
    """Every k-th picture of a set ordered by font, so that a limited run still covers every
    font and every glyph: k shares no factor with 10 digits or 74 glyphs per font."""
    if not limit or total <= limit:
        return 1
    step = max(1, total // limit)
    while math.gcd(step, 10) != 1 or math.gcd(step, len(digit_sets.NON_DIGIT_GLYPHS)) != 1:
        step += 1
    return step


def _read(
    models: dict[int, Model], rows: list[tuple[np.ndarray, str, int]]
) -> dict[int, dict[str, float]]:
    """Segment each row picture, classify the segments; shares of rows segmented into the right
    number of digits, of digits read right (in rows segmented right) and of rows read right."""
    segmented = []
    for picture, _, _ in rows:
        try:
            segments = reading.segment_row(picture.astype(np.float32) / 255.0)
        except InvalidInput:
            segments = []
        segmented.append(segments)
    counts_ok = [len(s) == len(text) for s, (_, text, _) in zip(segmented, rows, strict=True)]
    out: dict[int, dict[str, float]] = {}
    for v, model in models.items():
        digits_right = digits_total = rows_right = 0
        for segments, (_, text, _), right_count in zip(segmented, rows, counts_ok, strict=True):
            if not right_count:
                continue
            images = np.stack([s.image for s in segments])
            read = "".join(str(d) for d in model.run(images)["probabilities"].argmax(axis=1))
            digits_right += sum(a == b for a, b in zip(read, text, strict=True))
            digits_total += len(text)
            rows_right += read == text
        out[v] = {
            "n": float(len(rows)),
            "segmented_right": float(np.mean(counts_ok)),
            "digit_accuracy": digits_right / max(digits_total, 1),
            "rows_read_right": rows_right / len(rows),
        }
    return out


def _read_rows(
    models: dict[int, Model], images: np.ndarray, labels: np.ndarray, limit: int | None
) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(min(limit or 300, 300)):
        k = int(rng.integers(3, 7))
        idx = rng.choice(len(images), k, replace=False)
        picture, _ = digit_sets.mnist_row(images[idx], rng)
        rows.append((picture, "".join(str(labels[i]) for i in idx), k))
    return _read(models, rows)


def _read_font_rows(models: dict[int, Model]) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(10)
    rows = []
    for font in digit_sets.fonts():
        for _ in range(5):
            text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 8))))
            rows.append((digit_sets.render_text(text, font, 40), text, len(text)))
    return _read(models, rows)


if __name__ == "__main__":
    raise SystemExit(main())
