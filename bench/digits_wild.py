"""Digits in the wild: the digit classifier's versions side by side on inputs unlike MNIST.

    python -m bench.digits_wild [--versions 1 2] [--limit N] [--json FILE]
    python -m bench.digits_wild --http [--limit N] [--json FILE] [--compare FILE]

In-process (the default), every picture goes the way an upload goes: encoded as PNG, read by
``service.imaging`` (the service's own preprocessing) and classified by the exported
SavedModel's ``serving_default`` signature; the degraded MNIST copies and the raw non-digit
arrays go to the signature directly (they are already 28x28 model inputs).

``--http`` starts the real server (``python -m service``, one worker, on a free loopback port
with the models of ``--models-dir``) and measures through the HTTP API what a client gets:
each PNG is a file upload to ``POST /api/v1/digits/classify/image`` (one file per request, as
the route takes), each row of digits an upload to ``POST /api/v1/digits/read``, and the 28x28
arrays go as .npy bodies to ``POST /api/v1/digits/classify`` (1,000 per request); prediction,
the ten probabilities and ``is_digit`` are read from the JSON answers. The task routes serve
the latest version (v2 with the committed models), so ``--versions`` does not apply;
``--compare`` prints where the figures differ from an in-process run's JSON. Figures:

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
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from bench import digits_http as http_client
from data import mnist
from service import imaging, reading
from service.errors import InvalidInput
from training import digit_degrade, digit_robust, digit_sets
from training.common import DEFAULT_MODELS_DIR, load_signature

_MAX_PIXELS = 4096 * 4096

#: What a classifier answers for a set: ``probabilities`` [N, 10] and, for versions that have
#: it, ``is_digit`` [N]; for uploads also ``accepted`` [N], false where the preprocessing
#: refused the picture (its probabilities are then zeros and its ``is_digit`` false).
Outputs = dict[str, np.ndarray]


class Classifier(Protocol):
    """What the figures need of a classifier version: in this process (`Model`) or behind the
    HTTP API (`bench.digits_http.HttpClassifier`)."""

    @property
    def has_is_digit(self) -> bool: ...

    def arrays(self, images: np.ndarray) -> Outputs: ...

    def uploads(self, pictures: list[np.ndarray]) -> Outputs: ...

    def read(self, pictures: list[np.ndarray]) -> list[list[int]]: ...


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
    """One SavedModel version in this process."""

    def __init__(self, path: Path) -> None:
        self.signature = load_signature(path)
        self.outputs = set(self.signature.structured_outputs)

    @property
    def has_is_digit(self) -> bool:
        return "is_digit" in self.outputs

    def run(self, images: np.ndarray, batch: int = 1000) -> dict[str, np.ndarray]:
        """Every output of the signature for ``images`` [N, 28, 28], one call per batch."""
        x = images[..., None].astype(np.float32)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), batch):
            out = self.signature(images=tf.constant(x[start : start + batch]))
            for key, value in out.items():
                parts.setdefault(key, []).append(value.numpy())
        return {key: np.concatenate(values) for key, values in parts.items()}

    def arrays(self, images: np.ndarray) -> Outputs:
        out = self.run(images)
        result = {"probabilities": out["probabilities"]}
        if "is_digit" in out:
            result["is_digit"] = out["is_digit"].reshape(len(images)).astype(bool)
        return result

    def uploads(self, pictures: list[np.ndarray]) -> Outputs:
        frames, ok = preprocess(pictures)
        out = self.arrays(frames)
        out["probabilities"] = np.where(ok[:, None], out["probabilities"], 0.0)
        if "is_digit" in out:
            out["is_digit"] &= ok
        return {**out, "accepted": ok}

    def read(self, pictures: list[np.ndarray]) -> list[list[int]]:
        """The digits read from each row picture, left to right ([] where none were found)."""
        read: list[list[int]] = []
        for picture in pictures:
            try:
                segments = reading.segment_row(picture.astype(np.float32) / 255.0)
            except InvalidInput:
                segments = []
            if not segments:
                read.append([])
                continue
            images = np.stack([s.image for s in segments])
            read.append([int(d) for d in self.run(images)["probabilities"].argmax(axis=1)])
        return read


def _accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return _scores(model.arrays(images), labels)


def _upload_accuracy(
    model: Classifier, pictures: list[np.ndarray], labels: np.ndarray
) -> dict[str, float]:
    out = model.uploads(pictures)
    return {**_scores(out, labels), "preprocess_ok": float(out["accepted"].mean())}


def _scores(out: Outputs, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (a refused picture counts as wrong) and the share accepted as digits."""
    correct = out["probabilities"].argmax(axis=1) == labels
    if "accepted" in out:
        correct &= out["accepted"]
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.digits_wild", description=__doc__)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--http",
        action="store_true",
        help="measure through the HTTP API of a server started here (the latest version)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="at most this many pictures per set that goes through the preprocessing (the "
        "MNIST test copies given to the model directly are always all 10,000)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--compare", type=Path, help="a previous run's --json: print the figures that differ"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.http:
        models = {v: Model(args.models_dir / digit_robust.NAME / str(v)) for v in args.versions}
        return _report(args, models)
    with (
        tempfile.TemporaryDirectory() as log_dir,
        http_client.serving(args.models_dir, Path(log_dir)) as client,
    ):
        print(f"# through the HTTP API at {client.url}, {digit_robust.NAME} v{client.version}")
        return _report(args, {client.version: client}, through=f"HTTP API ({client.url})")


def _report(
    args: argparse.Namespace, models: Mapping[int, Classifier], through: str = "in-process"
) -> int:
    start = time.perf_counter()
    limit = args.limit
    splits = mnist.load_mnist(as_float=True, download=False)
    test = splits.test_full
    test_images, test_labels = test.images[..., 0], test.labels
    results: dict[str, Any] = {
        "versions": list(models),
        "through": through,
        "limit": limit,
        "sections": {},
    }

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
        out = model.arrays(test_images)
        row = _scores(out, test_labels)
        row["ece"] = digit_robust.expected_calibration_error(out["probabilities"], test_labels)
        rows["MNIST test (direct)"][v] = row
    n = limit or 2000
    uploads = [np.rint(255 * (1 - im)).astype(np.uint8) for im in test_images[:n]]
    rows[f"MNIST test[:{n}] as dark-on-light PNG"] = {
        v: _upload_accuracy(m, uploads, test_labels[:n]) for v, m in models.items()
    }
    section("MNIST", rows)

    rows = {}
    for name, make in degraded_mnist(test_images).items():
        images = make()
        rows[name] = {v: _accuracy(m, images, test_labels) for v, m in models.items()}
    photos = digit_sets.mnist_photos(test_images[: limit or 3000], seed=3)
    n = len(photos)
    rows["photo: paper 170->255, noise 8"] = {
        v: _upload_accuracy(m, photos, test_labels[:n]) for v, m in models.items()
    }
    photos = digit_sets.mnist_photos(
        test_images[: limit or 3000], seed=4, ramp=(90.0, 255.0), noise=12.0
    )
    rows["photo: paper 90->255, noise 12"] = {
        v: _upload_accuracy(m, photos, test_labels[:n]) for v, m in models.items()
    }
    section("Degraded MNIST test", rows)

    rows = {}
    pictures, labels = digit_sets.font_digits()
    step = _stride(len(pictures), limit)
    pictures, labels = pictures[::step], labels[::step]
    rows[f"font digits ({len(digit_sets.fonts())} fonts)"] = {
        v: _upload_accuracy(m, pictures, labels) for v, m in models.items()
    }
    for order, name in ((1, "smooth"), (0, "blocky")):
        pictures, labels = digit_sets.sklearn_digits(order)
        pictures, labels = pictures[:limit], labels[:limit]
        rows[f"sklearn load_digits 8x8, {name} x12"] = {
            v: _upload_accuracy(m, pictures, labels) for v, m in models.items()
        }
    section("Other digits", rows)

    rows = {}
    count = min(limit or 300, 300)
    kinds: dict[str, list[np.ndarray]] = {
        name: make(count, 11) for name, make in digit_sets.NON_DIGIT_SETS.items()
    }
    # v2 saw DejaVu's letters (no look-alikes) in training (outlier exposure); Liberation's
    # are held out.
    answers: dict[int, dict[str, Outputs]] = {
        v: {name: m.uploads(pictures) for name, pictures in kinds.items()}
        for v, m in models.items()
    }
    for family, note in (("DejaVu", "seen in training"), ("Liberation", "held out")):
        glyphs, names = digit_sets.font_non_digits(family=family)
        step = _stride(len(glyphs), limit)
        glyphs, names = glyphs[::step], names[::step]
        plain = np.array([c not in digit_sets.LOOKALIKES for c in names])
        for v, m in models.items():
            out = m.uploads(glyphs)
            answers[v][f"letters+symbols, {family} ({note})"] = out
            answers[v][f"... {family}, no digit look-alikes"] = {
                k: x[plain] for k, x in out.items()
            }
    for v, m in models.items():
        for name, out in answers[v].items():
            ok = out["accepted"]
            row = {"n": float(len(ok)), "refused_by_preprocessing": float(1 - ok.mean())}
            if m.has_is_digit:
                # Refused by the preprocessing or accepted and flagged not-a-digit.
                row["rejected"] = float((~out["is_digit"]).mean())
            rows.setdefault(name, {})[v] = row
    rng = np.random.default_rng(5)
    raw = {
        "raw 28x28: zeros": np.zeros((100, 28, 28), np.float32),
        "raw 28x28: uniform noise": rng.random((1000, 28, 28)).astype(np.float32),
        "raw 28x28: ones": np.ones((100, 28, 28), np.float32),
    }
    for name, images in raw.items():
        rows[name] = {
            v: {"n": float(len(images)), "rejected": float((~m.arrays(images)["is_digit"]).mean())}
            for v, m in models.items()
            if m.has_is_digit
        }
    section("Not a digit (share rejected)", rows)

    rows = {}
    rows["MNIST rows (3-6 digits, gaps 3-14 px)"] = _read(
        models, _mnist_rows(test_images, test_labels, limit)
    )
    rows["rendered rows (fonts)"] = _read(models, _font_rows())
    section("Reading rows of digits", rows)
    results["seconds"] = time.perf_counter() - start
    print(f"\n{results['seconds']:.0f} s ({through})")
    if args.compare:
        print("\n" + "\n".join(compare(json.loads(args.compare.read_text()), results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines naming each figure of `after` that differs from (or is missing in) `before`, for
    the versions both runs measured; the last line counts the figures that agree."""
    lines, same = [], 0
    for section_name, rows in after["sections"].items():
        for key, by_version in rows.items():
            for version, row in by_version.items():
                old = before["sections"].get(section_name, {}).get(key, {}).get(version)
                if old is None:
                    lines.append(f"{key} v{version}: not in the other run")
                    continue
                for metric, value in row.items():
                    if metric not in old:
                        lines.append(f"{key} v{version} {metric}: not in the other run")
                    elif not math.isclose(value, old[metric], rel_tol=1e-9, abs_tol=1e-12):
                        lines.append(f"{key} v{version} {metric}: {old[metric]:.6g} -> {value:.6g}")
                    else:
                        same += 1
    return ["## Compared with the other run", *lines, f"{same} figures equal"]


def _stride(total: int, limit: int | None) -> int:
    """Every k-th picture of a set ordered by font, so that a limited run still covers every
    font and every glyph: k shares no factor with 10 digits or 74 glyphs per font."""
    if not limit or total <= limit:
        return 1
    step = max(1, total // limit)
    while math.gcd(step, 10) != 1 or math.gcd(step, len(digit_sets.NON_DIGIT_GLYPHS)) != 1:
        step += 1
    return step


Row = tuple[np.ndarray, str]


def _read(models: Mapping[int, Classifier], rows: list[Row]) -> dict[int, dict[str, float]]:
    """Read each row picture; shares of rows segmented into the right number of digits, of
    digits read right (in rows segmented right) and of rows read right."""
    out: dict[int, dict[str, float]] = {}
    for v, model in models.items():
        segmented_right = digits_right = digits_total = rows_right = 0
        for digits, (_, text) in zip(model.read([p for p, _ in rows]), rows, strict=True):
            if len(digits) != len(text):
                continue
            read = "".join(str(d) for d in digits)
            segmented_right += 1
            digits_right += sum(a == b for a, b in zip(read, text, strict=True))
            digits_total += len(text)
            rows_right += read == text
        out[v] = {
            "n": float(len(rows)),
            "segmented_right": segmented_right / len(rows),
            "digit_accuracy": digits_right / max(digits_total, 1),
            "rows_read_right": rows_right / len(rows),
        }
    return out


def _mnist_rows(images: np.ndarray, labels: np.ndarray, limit: int | None) -> list[Row]:
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(min(limit or 300, 300)):
        k = int(rng.integers(3, 7))
        idx = rng.choice(len(images), k, replace=False)
        picture, _ = digit_sets.mnist_row(images[idx], rng)
        rows.append((picture, "".join(str(labels[i]) for i in idx)))
    return rows


def _font_rows() -> list[Row]:
    rng = np.random.default_rng(10)
    rows = []
    for font in digit_sets.fonts():
        for _ in range(5):
            text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 8))))
            rows.append((digit_sets.render_text(text, font, 40), text))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
