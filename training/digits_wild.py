"""Digits in the wild, through the HTTP API: what a client gets for pictures unlike MNIST's.

    python -m training.digits_wild [--limit N] [--models-dir DIR] [--out FILE.md] [--json FILE]

Starts the service (``harness.our_server``: one worker on a free loopback port, with only the
digit classifier of ``--models-dir``), then asks it what a client would:

- every picture is a PNG uploaded to ``POST /api/v1/digits/classify/image`` (one file per
  request, as the route takes; a few connections at once);
- the MNIST test images go as .npy bodies to ``POST /api/v1/digits/classify``.

A refused upload (422 "no digit found") counts as wrong for a digit and as rejected for a
non-digit; an accepted one is rejected when its ``is_digit`` is false. The sets are made by
``training.digit_sets`` (nothing stored): scikit-learn's UCI digits with no margin and with the
2 px margin, the 10,000 MNIST test digits cropped tightly to their ink, digits in every
installed font, letters without digit look-alikes, geometric shapes, scribbles and lit blank
paper. Each figure is printed beside its target (issue 20) and written to ``--out``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench import harness
from data import mnist
from training import digit_sets

CLASSIFIER = "digit_classifier"
API = "/api/v1/digits"


@dataclass(frozen=True)
class Answers:
    """What the server answered for N pictures: the predicted digit (-1 where refused), whether
    the picture was accepted (not a 422) and whether it was taken for a digit."""

    digit: np.ndarray
    accepted: np.ndarray
    is_digit: np.ndarray

    @property
    def rejected(self) -> np.ndarray:
        """Refused by the preprocessing, or accepted and flagged not a digit."""
        return ~(self.accepted & self.is_digit)


class Client:
    """The digit routes of a running server."""

    def __init__(self, url: str, connections: int = 4) -> None:
        self.url = url
        self.connections = connections
        self._http = httpx.Client(
            base_url=url,
            timeout=120.0,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def close(self) -> None:
        self._http.close()

    def _upload(self, picture: np.ndarray) -> tuple[int, bool, bool]:
        files = {"file": ("picture.png", digit_sets.encode_png(picture), "image/png")}
        response = self._http.post(API + "/classify/image", files=files)
        if response.status_code == 422:
            return -1, False, False
        response.raise_for_status()
        prediction = response.json()["predictions"][0]
        return int(prediction["digit"]), True, bool(np.ravel(prediction["is_digit"])[0])

    def uploads(self, pictures: list[np.ndarray]) -> Answers:
        """Each picture uploaded as a PNG, `connections` requests at a time."""
        with ThreadPoolExecutor(self.connections) as pool:
            rows = list(pool.map(self._upload, pictures))
        digit, accepted, is_digit = (np.array(column) for column in zip(*rows, strict=True))
        return Answers(digit.astype(int), accepted.astype(bool), is_digit.astype(bool))

    def arrays(self, images: np.ndarray, chunk: int = 1000) -> Answers:
        """28x28 images [N, 28, 28] in [0, 1] as .npy bodies, `chunk` per request."""
        digits, flags = [], []
        for start in range(0, len(images), chunk):
            buffer = io.BytesIO()
            np.save(buffer, images[start : start + chunk].astype(np.float32), allow_pickle=False)
            response = self._http.post(
                API + "/classify",
                params={"scale": "unit"},
                content=buffer.getvalue(),
                headers={"Content-Type": "application/x-npy", "Accept": "application/json"},
            )
            response.raise_for_status()
            for p in response.json()["predictions"]:
                digits.append(int(p["digit"]))
                flags.append(bool(np.ravel(p["is_digit"])[0]))
        n = len(digits)
        return Answers(np.array(digits), np.ones(n, bool), np.array(flags, bool))


@contextmanager
def serving(models_dir: Path, log: Path, timeout_s: float = 300.0) -> Iterator[Client]:
    """The service on a free loopback port with only the classifier of `models_dir`."""
    with harness.serving_only(models_dir, [CLASSIFIER], log.parent, timeout_s) as server:
        client = Client(server.url)
        try:
            yield client
        finally:
            client.close()


#: name -> (the figure, ">=", its target), from issue 20.
TARGETS: dict[str, tuple[str, float]] = {
    "UCI digits, no margin (64x64)": ("accuracy", 0.98),
    "UCI digits, 2 px margin (96x96)": ("accuracy", 0.98),
    "MNIST test, tight crops": ("accuracy", 0.99),
    "MNIST test (.npy)": ("accepted as digit", 0.99),
    "font digits": ("accepted as digit", 0.98),
    "letters without look-alikes": ("rejected", 0.95),
    "geometric shapes": ("rejected", 0.95),
    "scribbles": ("rejected", 0.95),
    "lit blank paper": ("rejected", 0.95),
}


def non_digit_sets() -> dict[str, list[np.ndarray]]:
    """The scenario's non-digit kinds: letters without digit look-alikes, geometric shapes,
    scribbles and lit blank paper (also the inputs of bench.flag_speed's check)."""
    glyphs = "".join(c for c in digit_sets.NON_DIGIT_GLYPHS if c not in digit_sets.LOOKALIKES)
    return {
        "letters without look-alikes": digit_sets.font_non_digits(glyphs)[0],
        "geometric shapes": digit_sets.shapes(300, 11),
        "scribbles": digit_sets.scribbles(300, 11),
        "lit blank paper": digit_sets.paper_pictures(300, 11),
    }


def digit_row(answers: Answers, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (refused counts as wrong), refused and accepted-as-digit shares."""
    return {
        "n": float(len(labels)),
        "accuracy": float((answers.digit == labels).mean()),
        "refused": float((~answers.accepted).mean()),
        "accepted as digit": float((~answers.rejected).mean()),
    }


def non_digit_row(answers: Answers) -> dict[str, float]:
    """Shares rejected (refused or flagged) and refused by the preprocessing alone."""
    return {
        "n": float(len(answers.accepted)),
        "rejected": float(answers.rejected.mean()),
        "refused": float((~answers.accepted).mean()),
    }


def measure(client: Client, limit: int | None) -> dict[str, dict[str, float]]:
    """Every set of the scenario through `client`; at most `limit` pictures per set."""
    test = mnist.load_mnist(as_float=True, download=False).test_full
    images, labels = test.images[..., 0], test.labels
    rows: dict[str, dict[str, float]] = {}

    def digits(name: str, make: Callable[[], tuple[list[np.ndarray], np.ndarray]]) -> None:
        pictures, truth = make()
        step = max(1, len(pictures) // limit) if limit else 1
        pictures, truth = pictures[::step][:limit], truth[::step][:limit]
        rows[name] = digit_row(client.uploads(pictures), truth)
        print(f"{name:34s} {_cells(rows[name])}", flush=True)

    digits("UCI digits, no margin (64x64)", lambda: digit_sets.sklearn_digits(1, margin=0))
    digits("UCI digits, 2 px margin (96x96)", lambda: digit_sets.sklearn_digits(1, margin=2))
    digits("MNIST test, tight crops", lambda: (digit_sets.tight_crops(images), labels))
    n = limit or len(images)
    rows["MNIST test (.npy)"] = digit_row(client.arrays(images[:n]), labels[:n])
    print(f"{'MNIST test (.npy)':34s} {_cells(rows['MNIST test (.npy)'])}", flush=True)
    digits("font digits", digit_sets.font_digits)
    for name, pictures in non_digit_sets().items():
        step = max(1, len(pictures) // limit) if limit else 1
        rows[name] = non_digit_row(client.uploads(pictures[::step][:limit]))
        print(f"{name:34s} {_cells(rows[name])}", flush=True)
    return rows


def _cells(row: dict[str, float]) -> str:
    return f"n={int(row['n']):<6d} " + ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "n")


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def report(rows: dict[str, dict[str, float]], seconds: float, limit: int | None) -> str:
    """The figures as Markdown, each beside its target."""
    commit = harness.git_commit()[0]
    cells = []
    for name, row in rows.items():
        figure, target = TARGETS.get(name, ("accuracy", float("nan")))
        met = "yes" if row[figure] >= target else "**no**"
        cells.append(
            [name, str(int(row["n"])), figure, f"{row[figure]:.4f}", f">= {target:.2f}", met]
        )
    lines = [
        f"# Digits in the wild through the HTTP API ({dt.date.today()}, commit {commit})",
        "",
        "`python -m training.digits_wild"
        + (f" --limit {limit}`" if limit else "`")
        + f": {seconds:.0f} s on {os.cpu_count()} cores, load average {_load()} at the end; the",
        "figures do not depend on the load. Refused (422) counts as wrong for digits and as",
        "rejected for non-digits.",
        "",
        *harness.table("set | n: | figure | measured: | target: | met", cells),
        "",
        "All figures:",
        "",
        "```",
        json.dumps(rows, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser("digits_wild", __doc__, results=False)
    parser.prog = "python -m training.digits_wild"
    parser.add_argument("--limit", type=int, help="at most this many pictures per set")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = harness.parse(parser, argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs, serving(args.model_dir, Path(logs) / "log") as c:
        print(f"# through the HTTP API at {c.url}", flush=True)
        rows = measure(c, args.limit)
    text = report(rows, time.perf_counter() - start, args.limit)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
