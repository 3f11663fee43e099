"""Compile exported SavedModels for the service's compiled backends (``make compile-models``).

    python -m training.compile [--models-dir DIR] [MODEL[/VERSION] ...]

For every version folder ``models/<name>/<version>/`` (or the ones named), from the same
SavedModel and without touching it:

- ``model.onnx``: the ``serving_default`` signature converted by tf2onnx (opset 18), with the exact
  GELU's ``Erfc`` (which ONNX Runtime does not load) rewritten as ``1 - Erf``;
- ``verification.npz``: a verification batch of real inputs (MNIST test digits, the encoder's codes
  of them, potentials and densities from the project's data generators) and TensorFlow's outputs
  for it, the reference every compiled backend is compared with when the service loads it;
- a ``compiled`` section in ``metrics.json`` and a "Compiled backends" section at the end of
  ``MODEL_CARD.md`` (both replaced on a re-run; every other field is kept): the tool versions,
  the rewrites, the largest difference to TensorFlow per output measured here, or the error and
  the op that stopped the conversion (the service then serves that version with TensorFlow).

The tolerances are the service's (``service/backends/verify.py``): it checks again at every load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.common import DEFAULT_MODELS_DIR, load_signature

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
VERIFICATION_FILE = "verification.npz"
OPSET = 18
#: Items in a verification batch: enough to cover every output's range, small to store.
ITEMS = 32
#: Seeds no training set used (training: schrodinger seeds 1..100,000; data.potentials 1-3).
SCHRODINGER_SEED = 7_000_001
BROAD_SEED = 7
CARD_SECTION = "## Compiled backends"


def version_folders(models_dir: Path, targets: Sequence[str]) -> list[Path]:
    """``<name>/<version>`` folders holding a saved_model.pb: all of them, or the named ones."""
    found = sorted(p.parent for p in models_dir.glob("*/*/saved_model.pb"))
    if not targets:
        return found
    chosen = []
    for target in targets:
        name, _, version = target.partition("/")
        matches = [p for p in found if p.parent.name == name and version in ("", p.name)]
        if not matches:
            raise SystemExit(f"no exported SavedModel matches {target!r} under {models_dir}")
        chosen += matches
    return chosen


def _mnist_digits(count: int) -> np.ndarray:
    from data.mnist import load_mnist

    test = load_mnist(download=False).test
    # Spread over the split (not the first few, which favour some classes).
    index = np.linspace(0, len(test) - 1, count).round().astype(int)
    return np.asarray(test.images[index], dtype=np.float32)


def _systems(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Potentials and densities: 3/4 of the notebook's family, 1/4 of the broad families."""
    from data import potentials, schrodinger

    broad_count = count // 4
    narrow = schrodinger.generate(count - broad_count, seed=SCHRODINGER_SEED, workers=1)
    broad = potentials.generate(broad_count, BROAD_SEED, workers=1)
    V = np.concatenate([narrow.V, broad.V]).astype(np.float32)
    n = np.concatenate([narrow.n, broad.n]).astype(np.float32)
    return V, n


#: Items of a verification batch that probe the extra outputs' other answers (is_digit False,
#: in_domain False and its reasons): inverted digits, potentials scaled 4x, densities shifted.
PROBES = 4


def verification_inputs(models_dir: Path, name: str, version: int) -> dict[str, np.ndarray]:
    """The real inputs of one model version's verification batch."""
    if name in ("digit_classifier", "digit_encoder"):
        return {"images": _digits_and_negatives()}
    if name == "digit_decoder":
        # Real codes: the same version's encoder on real digits.
        encoder = load_signature(models_dir / "digit_encoder" / str(version))
        return {"code": encoder(images=_digits_and_negatives())["code"].numpy()}
    V, n = _systems(ITEMS - PROBES)
    if name == "energy_from_potential":
        return {"potential": np.concatenate([V, 4.0 * V[:PROBES]])}
    if name == "energy_from_density":
        return {"density": np.concatenate([n, np.roll(n[:PROBES], 16, axis=1)])}
    raise ValueError(f"no verification inputs known for model {name!r}")


def _digits_and_negatives() -> np.ndarray:
    digits = _mnist_digits(ITEMS - PROBES)
    return np.concatenate([digits, 1.0 - digits[:PROBES]])


def write_verification(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow's outputs on ``inputs``, stored with them in ``verification.npz``."""
    import tensorflow as tf

    signature = load_signature(path)
    result = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    outputs = {key: value.numpy() for key, value in result.items()}
    arrays = {f"input.{k}": v for k, v in inputs.items()}
    arrays |= {f"output.{k}": v for k, v in outputs.items()}
    np.savez_compressed(path / VERIFICATION_FILE, **arrays)  # type: ignore[arg-type]
    return outputs


def rewrite_erfc(model: Any) -> int:
    """Replace every ``Erfc(x)`` node by ``1 - Erf(x)`` (ONNX Runtime has no Erfc kernel);
    the number of nodes rewritten."""
    from onnx import TensorProto, helper

    graph = model.graph
    rewritten = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type != "Erfc":
            continue
        base = node.name or f"erfc_{index}"
        erf_out = f"{base}__erf"
        one = helper.make_tensor(f"{base}__one", TensorProto.FLOAT, [], [1.0])
        graph.initializer.append(one)
        erf = helper.make_node("Erf", [node.input[0]], [erf_out], name=f"{base}__Erf")
        sub = helper.make_node("Sub", [one.name, erf_out], [node.output[0]], name=f"{base}__Sub")
        del graph.node[index]
        graph.node.insert(index, sub)
        graph.node.insert(index, erf)
        rewritten += 1
    return rewritten


def rewrite_shape_only_tables(model: Any) -> int:
    """Replace each initializer that only ``Shape`` nodes read (tf2onnx folds whole weight tables
    just to take their shape) by its shape as a constant; the number of tables dropped."""
    from onnx import numpy_helper

    graph = model.graph
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    dropped = 0
    for table in list(graph.initializer):
        nodes = readers.get(table.name, [])
        if not nodes or any(n.op_type != "Shape" or len(n.attribute) for n in nodes):
            continue
        for node in nodes:
            shape = np.asarray(table.dims, dtype=np.int64)
            graph.initializer.append(numpy_helper.from_array(shape, node.output[0]))
            graph.node.remove(node)
        graph.initializer.remove(table)
        dropped += 1
    return dropped


def _bank_constants(dtype: str) -> dict[str, np.ndarray]:
    """What energy v2's Gaussian bank is built from (``training.energy_v2._bank_functions``)."""
    from training import energy_v2

    return {
        "x": energy_v2.schrodinger.GRID.astype(dtype)[:, None, None],
        "c": energy_v2.BANK_CENTRES.astype(dtype)[None, :, None],
        "w": energy_v2.BANK_WIDTHS.astype(dtype)[None, None, :],
    }


def _bank_tables() -> dict[tuple[str, str], np.ndarray]:
    """The tables tf2onnx folds out of the bank: phi squared in float32 and float64, and phi
    transposed in float64 (the Lanczos step gathers from it)."""
    tables = {}
    for dtype in ("float32", "float64"):
        k = _bank_constants(dtype)
        phi = np.exp(-((k["x"] - k["c"]) ** 2) / (4 * k["w"] ** 2)).reshape(len(k["x"]), -1)
        phi = phi / np.sqrt((phi**2).sum(axis=0, keepdims=True))
        tables[("square", dtype)] = phi**2
    tables[("transpose", "float64")] = phi.T
    return tables


#: The bank in ONNX ops, as `_bank_functions` writes it: (op, inputs, output) under one prefix.
_BANK_STEPS = (
    ("Sub", ("x", "c"), "d"),
    ("Mul", ("d", "d"), "d2"),
    ("Mul", ("w", "w"), "w2"),
    ("Mul", ("four", "w2"), "den"),
    ("Div", ("d2", "den"), "q"),
    ("Neg", ("q",), "nq"),
    ("Exp", ("nq",), "e"),
    ("Reshape", ("e", "shape"), "phi"),
    ("Mul", ("phi", "phi"), "phi2"),
    ("ReduceSum", ("phi2", "axis"), "sum"),
    ("Sqrt", ("sum",), "norm"),
    ("Div", ("phi", "norm"), "unit"),
)


def rewrite_gaussian_bank(model: Any) -> int:
    """Replace each folded table of energy v2's Gaussian bank (3,048 trial Gaussians on 64 grid
    points, 3.9 MB in three copies) by nodes that build it from the grid, the 127 centres and
    the 24 widths, as the SavedModel's graph does (ONNX Runtime folds them again at load); the
    number of tables replaced. A table is recognised by its values: no other model matches."""
    from onnx import helper, numpy_helper

    tables, graph, built = _bank_tables(), model.graph, []
    for table in list(graph.initializer):
        value = numpy_helper.to_array(table)
        kind = next(
            (
                kind
                for (kind, dtype), ref in tables.items()
                if (dtype, ref.shape) == (value.dtype.name, value.shape)
                and np.allclose(value, ref, rtol=1e-5, atol=1e-12)
            ),
            None,
        )
        if kind is None:
            continue
        p, dtype = f"{table.name}__bank_", value.dtype.name
        constants = _bank_constants(dtype) | {"four": np.array(4.0, dtype)}
        constants |= {"shape": np.array([64, -1], np.int64), "axis": np.array([0], np.int64)}
        graph.initializer.extend(numpy_helper.from_array(v, p + k) for k, v in constants.items())
        for op, inputs, out in _BANK_STEPS:
            built.append(helper.make_node(op, [p + i for i in inputs], [p + out], name=p + out))
        last = ("Mul", [p + "unit"] * 2) if kind == "square" else ("Transpose", [p + "unit"])
        built.append(helper.make_node(*last, [table.name], name=p + "out"))
        graph.initializer.remove(table)
    for node in reversed(built):
        graph.node.insert(0, node)
    return sum(node.name.endswith("__bank_out") for node in built)


def _unsupported_op(log: str) -> str | None:
    """The op named in tf2onnx's 'Unsupported ops' line, if there is one."""
    for line in log.splitlines():
        if "Unsupported ops" in line:
            return line.split("Unsupported ops:", 1)[-1].strip()
    return None


def convert(path: Path) -> tuple[Any, dict[str, Any]]:
    """tf2onnx on the SavedModel at ``path`` (a subprocess: its graph rewrites stay out of this
    process); the ONNX model after the Erfc rewrite and the facts for the card."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / ONNX_FILE
        command = [
            sys.executable,
            "-m",
            "tf2onnx.convert",
            "--saved-model",
            str(path),
            "--opset",
            str(OPSET),
            "--output",
            str(output),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not output.is_file():
            op = _unsupported_op(done.stderr)
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise ConversionError(op or "unknown", f"tf2onnx failed: {tail[0]}")
        model = onnx.load(str(output))
    # tf2onnx keeps a TF op it has no conversion for as a node of that name; Erfc is the one
    # we know how to rewrite, any other stops the conversion here.
    erfc = rewrite_erfc(model)
    shape_only, bank = rewrite_shape_only_tables(model), rewrite_gaussian_bank(model)
    unknown = sorted(
        {n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type, n.domain or "")}
    )
    if unknown:
        raise ConversionError(", ".join(unknown), f"no ONNX conversion for {', '.join(unknown)}")
    onnx.checker.check_model(model)
    facts: dict[str, Any] = {"opset": OPSET, "rewrites": []}
    if erfc:
        facts["rewrites"].append(f"Erfc -> 1 - Erf ({erfc} nodes; ONNX Runtime has no Erfc)")
    if shape_only:
        facts["rewrites"].append(f"{shape_only} folded tables read only by Shape -> their shape")
    if bank:
        facts["rewrites"].append(
            f"{bank} folded tables of the Gaussian bank -> built in the graph from the grid, "
            "centres and widths (ONNX Runtime folds them at load)"
        )
    return model, facts


class ConversionError(RuntimeError):
    """A SavedModel tf2onnx could not convert; ``op`` names the op that stopped it."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(message)
        self.op = op


def _max_differences(
    reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> dict[str, float]:
    diffs = {}
    for key, expected in reference.items():
        got = outputs[key]
        if expected.dtype.kind in "biu":
            diffs[key] = float(np.count_nonzero(got != expected))
        else:
            diffs[key] = float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0))
    return diffs


def compile_version(models_dir: Path, path: Path) -> dict[str, Any]:
    """Compile one version folder; returns (and writes into its card) the ``compiled`` section."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    name, version = path.parent.name, int(path.name)
    inputs = verification_inputs(models_dir, name, version)
    reference = write_verification(path, inputs)
    section: dict[str, Any] = {
        "verification": {
            "file": VERIFICATION_FILE,
            "items": len(next(iter(inputs.values()))),
            "inputs": _describe_inputs(name),
            "reference": f"TensorFlow {tf.__version__} serving_default",
        },
        "onnxruntime": {"tool": f"tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}"},
    }
    entry = section["onnxruntime"]
    (path / ONNX_FILE).unlink(missing_ok=True)
    try:
        model, facts = convert(path)
    except ConversionError as exc:
        logger.error("%s v%s: not converted (op %s): %s", name, version, exc.op, exc)
        entry |= {"file": None, "error": str(exc), "op": exc.op}
    else:
        onnx.save(model, str(path / ONNX_FILE))
        data = (path / ONNX_FILE).read_bytes()
        entry |= {"file": ONNX_FILE, "sha256": hashlib.sha256(data).hexdigest(), **facts}
        entry["max_abs_diff_at_export"] = _run_onnxruntime(path / ONNX_FILE, inputs, reference)
    _write_card(path, section)
    return section


def _run_onnxruntime(
    onnx_path: Path, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, float] | str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime not installed: not measured"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, inputs), strict=True))
    return _max_differences(reference, outputs)


def _describe_inputs(name: str) -> str:
    if name in ("digit_classifier", "digit_encoder", "digit_decoder"):
        digits = (
            f"{ITEMS - PROBES} MNIST test digits spread over the test split and {PROBES} of "
            "them inverted (white background)"
        )
        return (
            digits if name != "digit_decoder" else f"the same version's encoder codes of {digits}"
        )
    broad = (ITEMS - PROBES) // 4
    probe = "scaled 4x" if name == "energy_from_potential" else "shifted by 16 grid points"
    return (
        f"{ITEMS - PROBES - broad} systems of data.schrodinger (seed {SCHRODINGER_SEED}), {broad} "
        f"of data.potentials' broad families (seed {BROAD_SEED}) and {PROBES} of them {probe}"
    )


def _write_card(path: Path, section: dict[str, Any]) -> None:
    metrics = path / "metrics.json"
    card = json.loads(metrics.read_text(encoding="utf-8"))
    card["compiled"] = section
    metrics.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    markdown = path / "MODEL_CARD.md"
    text = markdown.read_text(encoding="utf-8") if markdown.is_file() else ""
    # Only this section is replaced: sections written after it (calibration) stay.
    head, _, rest = text.partition("\n" + CARD_SECTION)
    _, _, tail = rest.partition("\n## ")
    after = "\n## " + tail if tail else ""
    body = head.rstrip("\n") + "\n\n" + _card_markdown(section) + after
    markdown.write_text(body, encoding="utf-8")


def _card_markdown(section: dict[str, Any]) -> str:
    verification = section["verification"]
    ort = section["onnxruntime"]
    lines = [
        CARD_SECTION,
        "",
        "Written by `make compile-models` (`training/compile.py`) from this SavedModel; "
        "see docs/runtimes.md.",
        "",
        f"- Verification batch: `{verification['file']}`, {verification['inputs']}, with "
        f"{verification['reference']}'s outputs; every compiled backend is checked against it "
        "when the service loads this version, and refused if it differs.",
    ]
    if ort.get("file"):
        lines.append(
            f"- ONNX Runtime: `{ort['file']}` ({ort['tool']}, opset {ort['opset']}); "
            f"rewrites: {'; '.join(ort['rewrites']) or 'none'}."
        )
        diffs = ort["max_abs_diff_at_export"]
        if isinstance(diffs, dict):
            lines.append(
                "- Largest difference to TensorFlow on the verification batch at export "
                "(float outputs: absolute; integer and boolean outputs: elements that differ): "
                + ", ".join(f"`{k}` {v:.3g}" for k, v in sorted(diffs.items()))
                + "."
            )
    else:
        lines.append(
            f"- ONNX Runtime: not converted ({ort['tool']}): {ort['error']} (op `{ort['op']}`). "
            "TensorFlow serves this version."
        )
    return "\n".join(lines) + "\n"


def compile_exported(models_dir: Path, paths: Sequence[Path]) -> None:
    """The export step: compile freshly exported versions (in order: an encoder before its
    decoder); without tf2onnx, say how to do it later and leave TensorFlow to serve them."""
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        print("not compiled: tf2onnx is not installed (make compile-models)", flush=True)
        return
    for path in paths:
        _report(path, compile_version(models_dir, path))


def _report(path: Path, section: dict[str, Any]) -> None:
    ort = section["onnxruntime"]
    where = f"{path.parent.name} v{path.name}"
    if ort.get("file"):
        print(f"{where}: {ort['file']}, max abs diff {ort['max_abs_diff_at_export']}", flush=True)
    else:
        print(f"{where}: not converted (op {ort['op']}); TensorFlow serves it", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compile", description=__doc__)
    parser.add_argument("targets", nargs="*", help="MODEL or MODEL/VERSION (default: all)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in version_folders(args.models_dir, args.targets):
        _report(path, compile_version(args.models_dir, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
