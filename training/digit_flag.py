"""Fit the not-a-digit rule of a digit_classifier version (``data.digit_shape``) and save it
beside the version as ``not_a_digit.json``.

    python -m training.digit_flag [--version 2] [--write]

Every picture goes through the service's own preprocessing (``data.digit_ink.mnist_style``) and
the version's compiled model (``model.onnx``, verified equal to the SavedModel when compiled);
the signals are ``data.digit_shape.signals``. Two fits, with the same settings:

- **Held-out kinds** (measured, not saved): fitted on digits (MNIST training images, raw and
  cropped to their ink, and the digits of the DejaVu fonts) against DejaVu letters, squares,
  triangles and circles, noise and blank frames; the threshold accepts ``acceptance`` of the
  validation digits (MNIST's validation split, raw and cropped); measured on what the fit never
  saw: Liberation letters and digits, rectangles, ellipses, stars and crosses, scribbles.
- **Saved**: the same, plus every shape kind and scribbles (other random seeds than the
  bench's 11) among the non-digits; its threshold from the same validation digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from data import digit_ink, digit_shape, mnist
from training import digit_sets
from training.common import REPO_ROOT

#: Trees of the boosted rule, leaves per tree, and the share of validation digits accepted.
TREES = 300
LEAVES = 15
ACCEPTANCE = 0.995
#: `digit_sets.shapes` draws kind ``i % 7``: these are squares, triangles and circles.
SHAPE_KINDS = ("square", "rectangle", "triangle", "circle", "ellipse", "star", "cross")
FIT_SHAPES = (0, 2, 3)


def prepare(pictures: list[np.ndarray]) -> np.ndarray:
    """uint8 pictures to the 28x28 inputs the service would give the model (refused: dropped)."""
    kept = []
    for picture in pictures:
        try:
            kept.append(digit_ink.mnist_style(picture.astype(np.float32) / 255.0))
        except digit_ink.NoDigitError:
            continue
    return np.stack(kept) if kept else np.zeros((0, 28, 28), np.float32)


def font_digits(family: str) -> list[np.ndarray]:
    pictures = []
    for font in (f for f in digit_sets.fonts() if family in f.name):
        for size in (24, 40, 64):
            for dark in (True, False):
                pictures += [
                    digit_sets.render_text(str(d), font, size, dark_on_light=dark)
                    for d in range(10)
                ]
    return pictures


def shapes_of(kinds: tuple[int, ...], count: int, seed: int) -> list[np.ndarray]:
    return [p for i, p in enumerate(digit_sets.shapes(count, seed)) if i % 7 in kinds]


def build_sets(limit: int = 4000) -> dict[str, np.ndarray]:
    """Every set the fits use, as 28x28 inputs: name -> [N, 28, 28]."""
    splits = mnist.load_mnist(as_float=True, download=False)
    train = splits.train.images[..., 0]
    validation = splits.validation.images[..., 0]
    rng = np.random.default_rng(0)
    picked = rng.choice(len(train), limit + limit // 2, replace=False)
    glyphs = "".join(c for c in digit_sets.NON_DIGIT_GLYPHS if c not in digit_sets.LOOKALIKES)
    noise = [
        p
        for name in ("uniform noise", "gaussian noise", "blank and nearly blank")
        for p in digit_sets.NON_DIGIT_SETS[name](100, 0)
    ]
    makers: dict[str, Callable[[], np.ndarray]] = {
        "MNIST train": lambda: train[picked[:limit]],
        "MNIST train, tight crops": lambda: prepare(digit_sets.tight_crops(train[picked[limit:]])),
        "MNIST validation": lambda: validation[: len(validation) // 2],
        "MNIST validation, tight crops": lambda: prepare(
            digit_sets.tight_crops(validation[len(validation) // 2 :])
        ),
        "DejaVu digits": lambda: prepare(font_digits("DejaVu")),
        "Liberation digits": lambda: prepare(font_digits("Liberation")),
        "DejaVu letters": lambda: prepare(digit_sets.font_non_digits(glyphs, family="DejaVu")[0]),
        "Liberation letters": lambda: prepare(
            digit_sets.font_non_digits(glyphs, family="Liberation")[0]
        ),
        "noise and blank": lambda: prepare(noise),
        "fit shapes": lambda: prepare(shapes_of(FIT_SHAPES, 700, 1)),
        "other shapes": lambda: prepare(
            shapes_of(tuple(k for k in range(7) if k not in FIT_SHAPES), 700, 1)
        ),
        "shapes": lambda: prepare(digit_sets.shapes(700, 2)),
        "scribbles": lambda: prepare(
            [p for seed in (1, 2, 3, 4) for p in digit_sets.scribbles(300, seed)]
        ),
        "scribbles, unseen": lambda: prepare(digit_sets.scribbles(300, 5)),
    }
    sets = {}
    for name, make in makers.items():
        start = time.perf_counter()
        sets[name] = make().astype(np.float32)
        print(f"{name:32s} {len(sets[name]):5d} in {time.perf_counter() - start:.0f} s", flush=True)
    return sets


def classifier_signals(version_dir: Path, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The signals of every set, with the version's compiled classifier."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    found = {}
    for name, images in sets.items():
        outputs = dict(zip(names, session.run(None, {"images": images[..., None]}), strict=True))
        found[name] = digit_shape.signals(images, outputs["probabilities"], outputs["ood_score"])
    return found


def fit_rule(
    signals: dict[str, np.ndarray], digits: list[str], others: list[str], version: int
) -> digit_shape.FlagRule:
    """Boosted trees, digits (0) against the others (1), each set of others weighing as much
    as any other and all of them as much as the digits; the threshold accepting `ACCEPTANCE`
    of the validation digits."""
    x = np.concatenate([signals[k] for k in digits + others])
    n_digits = sum(len(signals[k]) for k in digits)
    y = np.r_[np.zeros(n_digits), np.ones(len(x) - n_digits)]
    weight = np.concatenate(
        [np.ones(n_digits)]
        + [np.full(len(signals[k]), n_digits / len(others) / len(signals[k])) for k in others]
    )
    model = HistGradientBoostingClassifier(
        max_iter=TREES, max_leaf_nodes=LEAVES, early_stopping=False, random_state=0
    )
    model.fit(x, y, sample_weight=weight)
    rule = _as_rule(model, version)
    # The rule re-implements the trees: it must score exactly as scikit-learn does.
    np.testing.assert_allclose(rule.score(x), model.predict_proba(x)[:, 1], rtol=1e-6, atol=1e-9)
    validation = np.concatenate(
        [signals["MNIST validation"], signals["MNIST validation, tight crops"]]
    )
    threshold = float(np.quantile(rule.score(validation), ACCEPTANCE))
    return dataclasses.replace(rule, threshold=threshold)


def _as_rule(model: HistGradientBoostingClassifier, version: int) -> digit_shape.FlagRule:
    trees = [predictors[0].nodes for predictors in model._predictors]
    width = max(len(t) for t in trees)

    def column(field: str, dtype: type) -> np.ndarray:
        out: np.ndarray = np.zeros((len(trees), width), dtype=dtype)
        for i, nodes in enumerate(trees):
            out[i, : len(nodes)] = nodes[field]
        return out

    leaf = column("is_leaf", bool)
    # Padding nodes are leaves worth nothing (never reached).
    for i, nodes in enumerate(trees):
        leaf[i, len(nodes) :] = True
    return digit_shape.FlagRule(
        feature=column("feature_idx", np.int64),
        cut=column("num_threshold", np.float64),
        left=column("left", np.int64),
        right=column("right", np.int64),
        leaf=leaf,
        value=column("value", np.float64),
        baseline=float(np.ravel(model._baseline_prediction)[0]),
        threshold=0.5,
        classifier_version=version,
    )


def rates(rule: digit_shape.FlagRule, signals: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of each set flagged not a digit."""
    return {k: round(float((~rule.is_digit(v)).mean()), 4) for k, v in signals.items()}


DIGITS = ["MNIST train", "MNIST train, tight crops", "DejaVu digits"]
HELD_OUT_OTHERS = ["DejaVu letters", "fit shapes", "noise and blank"]
SAVED_OTHERS = [*HELD_OUT_OTHERS, "other shapes", "shapes", "scribbles"]


def run(version: int, write: bool, cache: Path | None = None) -> dict[str, object]:
    version_dir = REPO_ROOT / "models" / "digit_classifier" / str(version)
    start = time.perf_counter()
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            signals = {k: stored[k] for k in stored.files}
    else:
        signals = classifier_signals(version_dir, build_sets())
        if cache is not None:
            np.savez(cache, **signals)  # type: ignore[arg-type]
    held_out = fit_rule(signals, DIGITS, HELD_OUT_OTHERS, version)
    saved = fit_rule(signals, DIGITS, SAVED_OTHERS, version)
    summary: dict[str, object] = {
        "command": f"python -m training.digit_flag --version {version} --write",
        "trees": TREES,
        "leaves": LEAVES,
        "acceptance": ACCEPTANCE,
        "held_out_kinds": {
            "fitted_on": DIGITS + HELD_OUT_OTHERS,
            "fit_shapes": [SHAPE_KINDS[k] for k in FIT_SHAPES],
            "flagged": rates(held_out, signals),
        },
        "saved": {"fitted_on": DIGITS + SAVED_OTHERS, "flagged": rates(saved, signals)},
        "seconds": round(time.perf_counter() - start),
    }
    print(json.dumps(summary, indent=1))
    if write:
        document = {**saved.to_json(), "fit": summary}
        (version_dir / digit_shape.FILE).write_text(json.dumps(document) + "\n")
        print(f"wrote {version_dir / digit_shape.FILE} and {compile_rule(version_dir)}")
    return summary


def onnx_model(rule: digit_shape.FlagRule) -> bytes:
    """The rule's trees as an ONNX graph, ``signals`` [N, 15] float64 -> ``raw`` [N, 1] float64
    (the sum of the leaves, before the baseline and the sigmoid): one ``ai.onnx.ml``
    TreeEnsemble (opset 5, float64 splits and leaves, split ``<=`` as the arrays)."""
    from onnx import TensorProto, helper, numpy_helper

    features: list[int] = []
    splits: list[float] = []
    true_ids: list[int] = []
    true_leaf: list[int] = []
    false_ids: list[int] = []
    false_leaf: list[int] = []
    roots: list[int] = []
    weights: list[float] = []
    for t in range(rule.feature.shape[0]):
        internal = [n for n in range(rule.feature.shape[1]) if not rule.leaf[t, n]]
        if not internal or internal[0] != 0:
            raise ValueError(f"tree {t} has no split at its root")
        leaves = [n for n in range(rule.feature.shape[1]) if rule.leaf[t, n]]
        node_id = {n: len(features) + i for i, n in enumerate(internal)}
        leaf_id = {n: len(weights) + i for i, n in enumerate(leaves)}
        roots.append(node_id[0])
        for n in internal:
            features.append(int(rule.feature[t, n]))
            splits.append(float(rule.cut[t, n]))
            for child, ids, is_leaf in (
                (int(rule.left[t, n]), true_ids, true_leaf),
                (int(rule.right[t, n]), false_ids, false_leaf),
            ):
                ids.append(leaf_id[child] if rule.leaf[t, child] else node_id[child])
                is_leaf.append(int(rule.leaf[t, child]))
        weights += [float(rule.value[t, n]) for n in leaves]
    trees = helper.make_node(
        "TreeEnsemble",
        ["signals"],
        ["raw"],
        domain="ai.onnx.ml",
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE
        n_targets=1,
        tree_roots=roots,
        nodes_featureids=features,
        nodes_splits=numpy_helper.from_array(np.asarray(splits, dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.zeros(len(features), dtype=np.uint8)),  # <=
        nodes_truenodeids=true_ids,
        nodes_trueleafs=true_leaf,
        nodes_falsenodeids=false_ids,
        nodes_falseleafs=false_leaf,
        leaf_targetids=[0] * len(weights),
        leaf_weights=numpy_helper.from_array(np.asarray(weights, dtype=np.float64)),
    )
    graph = helper.make_graph(
        [trees],
        "not_a_digit",
        [
            helper.make_tensor_value_info(
                "signals", TensorProto.DOUBLE, [None, len(digit_shape.NAMES)]
            )
        ],
        [helper.make_tensor_value_info("raw", TensorProto.DOUBLE, [None, 1])],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def compile_rule(version_dir: Path) -> Path:
    """Write ``not_a_digit.onnx`` from the version's ``not_a_digit.json`` and name it there by
    sha256 (the JSON is otherwise rewritten as it was)."""
    path = version_dir / digit_shape.FILE
    document = json.loads(path.read_text())
    model = onnx_model(digit_shape.FlagRule.from_json(document))
    (version_dir / digit_shape.ONNX_FILE).write_bytes(model)
    document["onnx_sha256"] = hashlib.sha256(model).hexdigest()
    path.write_text(json.dumps(document) + "\n")
    return version_dir / digit_shape.ONNX_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", type=int, default=2, help="digit_classifier version")
    parser.add_argument("--write", action="store_true", help="save not_a_digit.json")
    parser.add_argument(
        "--cache", type=Path, help="keep the signals in this .npz and reuse them when it exists"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="only (re)write not_a_digit.onnx from the saved not_a_digit.json (no fit)",
    )
    args = parser.parse_args(argv)
    if args.compile:
        version_dir = REPO_ROOT / "models" / "digit_classifier" / str(args.version)
        print(f"wrote {compile_rule(version_dir)}")
        return 0
    run(args.version, args.write, args.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
