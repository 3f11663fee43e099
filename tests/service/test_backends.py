"""The backends (service/backends/): a tiny SavedModel compiled with the project's own conversion
(training/compile.py), equal outputs, refusal of a wrong compiled model, `auto`'s choice (the
compiled model alone where it verifies) and `measure`'s (per batch size), the fallback without
onnxruntime, and every committed version's compiled artefact verified; the same for the optional
OpenVINO backend over the same `model.onnx` where its package is installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.backends.base import ONNX_FILE
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.select import Plan, choose, measure
from service.backends.verify import VerificationBatch, compare, tolerance_for
from service.metrics import _ModelCollector
from service.registry import BackendPolicy, ModelRegistry, load_version

OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not OPENVINO, reason="openvino (requirements-dev.lock)")
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
COMMITTED = sorted(p.parent for p in REPO_MODELS.glob("*/*/saved_model.pb"))


def _tiny_energy_model(path: Path) -> None:
    """An MLP with the exact GELU (tf2onnx writes it with Erfc, which the conversion rewrites)
    and three outputs of three kinds: an energy, a flag and a reason code."""
    import tensorflow as tf

    rng = np.random.default_rng(3)

    class Tiny(tf.Module):
        def __init__(self) -> None:
            self.w1 = tf.Variable(rng.normal(size=(64, 16)).astype(np.float32) * 0.3)
            self.w2 = tf.Variable(rng.normal(size=(16,)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="potential")])
        def serve(self, potential: Any) -> Any:
            hidden = tf.nn.gelu(tf.matmul(potential, self.w1), approximate=False)
            energy = tf.reduce_sum(hidden * self.w2, axis=1)
            return {
                "energy": energy,
                "in_domain": energy < 0.0,
                "domain_reason": tf.cast(energy > 1.0, tf.int32),
            }

    module = Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """energy_from_potential/1: the tiny SavedModel, its model.onnx and verification batch."""
    pytest.importorskip("tf2onnx", reason="the converter (requirements-dev.lock) is needed")
    import tensorflow as tf

    from training.common import load_signature, signature_description
    from training.compile import compile_version

    root = tmp_path_factory.mktemp("compiled")
    path = root / "energy_from_potential" / "1"
    _tiny_energy_model(path)
    card = {"name": path.parent.name, "version": 1, "tensorflow": tf.__version__}
    card["signature"] = signature_description(load_signature(path))
    (path / "metrics.json").write_text(json.dumps(card), encoding="utf-8")
    # The export step itself: real potentials and densities from the data generators.
    section = compile_version(root, path)
    assert any("Erfc" in rewrite for rewrite in section["onnxruntime"]["rewrites"])
    return root


def _version(root: Path, policy: BackendPolicy) -> Any:
    return load_version("energy_from_potential", 1, root / "energy_from_potential" / "1", policy)


@pytest.mark.parametrize("setting", ["auto", "onnxruntime"])
def test_onnxruntime_serves_with_tensorflows_outputs_and_without_tensorflow(
    setting: str, compiled_dir: Path
) -> None:
    model = _version(compiled_dir, BackendPolicy(default=setting))
    assert list(model.backends) == ["onnxruntime"] and not model.refused
    reference = _version(compiled_dir, BackendPolicy(default="tensorflow"))
    assert model.inputs == reference.inputs and model.outputs == reference.outputs
    V = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    got = model.predict({"potential": V})
    expected = reference.predict({"potential": V})
    assert compare(expected, got).equal, compare(expected, got).problems
    assert got["in_domain"].dtype == np.bool_ and got["domain_reason"].dtype == np.int32
    assert model.card["serving"]["by_batch_size"] == {"1+": "onnxruntime"}


@pytest.mark.parametrize("setting", ["auto", "onnxruntime", "measure", "openvino"])
def test_a_wrong_compiled_model_is_refused_and_tensorflow_serves(
    setting: str, compiled_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx
    from onnx import numpy_helper

    root = tmp_path / "models"
    shutil.copytree(compiled_dir, root)
    onnx_path = root / "energy_from_potential" / "1" / "model.onnx"
    model = onnx.load(str(onnx_path))
    # Nudge the largest weight matrix by 0.1%: a plausible miscompilation, not garbage.
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    nudged = numpy_helper.to_array(largest) * np.float32(1.001)
    largest.CopyFrom(numpy_helper.from_array(nudged, largest.name))
    onnx.save(model, str(onnx_path))
    # As if recompiled: the card records the new file, so only verification can catch it.
    card_path = onnx_path.parent / "metrics.json"
    card = json.loads(card_path.read_text())
    card["compiled"]["onnxruntime"]["sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))

    version = _version(root, BackendPolicy(default=setting))
    assert version.plan.backends == ["tensorflow"]
    assert "differs from TensorFlow" in version.refused["onnxruntime"]
    assert "'energy'" in version.refused["onnxruntime"]
    assert version.card["serving"]["refused"] == version.refused
    assert any("onnxruntime refused" in r.getMessage() for r in caplog.records)

    # Every compiled runtime tried reads the same nudged file: each is refused (`openvino` is
    # tried by its own setting, and by `measure` where the package is installed).
    tried = setting == "openvino" or (setting == "measure" and OPENVINO)
    assert set(version.refused) == {"onnxruntime"} | ({"openvino"} if tried else set())
    if tried and OPENVINO:
        assert "differs from TensorFlow" in version.refused["openvino"]

    registry = ModelRegistry(root, ("energy_from_potential",), BackendPolicy(default=setting))
    registry.load()
    families = {f.name: f for f in _ModelCollector(registry).collect()}
    samples = families["mldm_model_version_backend_refused"].samples
    assert sorted(s.labels["backend"] for s in samples) == sorted(version.refused)
    assert {(s.labels["model"], s.labels["version"]) for s in samples} == {
        ("energy_from_potential", "1")
    }


@pytest.mark.parametrize("setting", ["auto", "onnxruntime", "measure"])
def test_a_missing_onnxruntime_package_falls_back_to_tensorflow(
    setting: str, compiled_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises
    version = _version(compiled_dir, BackendPolicy(default=setting))
    # `measure` still times OpenVINO where it is installed, and may keep it for some sizes.
    assert "onnxruntime" not in version.backends and "tensorflow" in version.backends
    if setting != "measure":
        assert version.plan.backends == ["tensorflow"]
    assert "not importable" in version.refused["onnxruntime"]
    V = np.ones((2, 64), np.float32)
    assert version.predict({"potential": V})["energy"].shape == (2,)


def test_the_tensorflow_setting_never_loads_the_compiled_model(compiled_dir: Path) -> None:
    version = _version(compiled_dir, BackendPolicy(default="tensorflow"))
    assert list(version.backends) == ["tensorflow"] and not version.refused


def test_auto_takes_tensorflow_only_for_a_version_without_a_compiled_model(
    compiled_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(compiled_dir, root)
    (root / "energy_from_potential" / "1" / "model.onnx").unlink()
    version = _version(root, BackendPolicy())  # the default setting: auto
    assert list(version.backends) == ["tensorflow"] and not version.refused
    assert "make compile-models" in version.card["serving"]["not_compiled"]


def test_measure_keeps_the_faster_backend_per_batch_size(compiled_dir: Path) -> None:
    version = _version(compiled_dir, BackendPolicy(default="measure", measure_repeats=3))
    measured = version.card["serving"]["measured_us"]
    # OpenVINO, where installed, is timed beside the other two.
    assert set(measured) == {"tensorflow", "onnxruntime"} | ({"openvino"} if OPENVINO else set())
    for size in ("1", "8", "64"):
        fastest = min(measured, key=lambda name: measured[name][size])
        assert version.backend_for(int(size)) == fastest


def test_choose_takes_the_fastest_per_size_and_merges_equal_neighbours() -> None:
    plan = choose(
        {
            "tensorflow": {1: 800e-6, 8: 1800e-6, 64: 8000e-6},
            "onnxruntime": {1: 200e-6, 8: 1400e-6, 64: 11000e-6},
        }
    )
    assert plan == Plan(steps=((8, "onnxruntime"), (64, "tensorflow")))
    assert [plan.for_size(n) for n in (1, 8, 9, 64, 500)] == [
        "onnxruntime",
        "onnxruntime",
        "tensorflow",
        "tensorflow",
        "tensorflow",
    ]
    assert plan.describe() == {"1-8": "onnxruntime", "9+": "tensorflow"}


def test_measure_times_each_backend_on_tiled_inputs() -> None:
    now = [0.0]
    sizes_seen: list[int] = []

    def backend(cost: float) -> Any:
        def run(inputs: Mapping[str, np.ndarray]) -> None:
            sizes_seen.append(len(inputs["x"]))
            now[0] += cost * len(inputs["x"])

        return run

    timings = measure(
        {"slow": backend(3.0), "fast": backend(1.0)},
        {"x": np.arange(5.0).reshape(5, 1)},
        sizes=(1, 8),
        repeats=3,
        clock=lambda: now[0],
    )
    assert timings == {"slow": {1: 3.0, 8: 24.0}, "fast": {1: 1.0, 8: 8.0}}
    assert set(sizes_seen) == {1, 8}


def test_tolerances_are_exact_for_integer_kinds_and_energies_in_hartree() -> None:
    assert tolerance_for("code", np.dtype(np.uint8)).exact
    assert tolerance_for("is_digit", np.dtype(np.bool_)).exact
    assert tolerance_for("probabilities", np.dtype(np.float32)).atol == 1e-5
    energy = tolerance_for("energy", np.dtype(np.float32))
    assert (energy.atol, energy.rtol) == (1e-5, 2e-6)
    codes = np.array([[1, 2, 3]], np.uint8)
    assert not compare({"code": codes}, {"code": codes + np.uint8(1)}).equal
    probabilities = np.array([[0.25, 0.75]], np.float32)
    assert compare({"p": probabilities}, {"p": probabilities + np.float32(5e-6)}).equal
    assert not compare({"p": probabilities}, {"p": probabilities + np.float32(5e-5)}).equal


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}-v{p.name}")
def test_every_committed_version_has_a_compiled_model_that_passes_verification(
    path: Path,
) -> None:
    batch = VerificationBatch.load(path)
    for array in batch.inputs.values():  # real inputs, not a constant
        assert len(array) >= 16 and float(np.std(array.astype(np.float64))) > 0.0
    backend = OnnxRuntimeBackend.load(path / ONNX_FILE, threads=1)
    result = compare(batch.reference, backend.run(batch.inputs))
    assert result.equal, result.problems
    import json

    card = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    assert card["compiled"]["onnxruntime"]["file"] == "model.onnx"
    assert "## Compiled backends" in (path / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_auto_serves_the_committed_models_without_importing_tensorflow() -> None:
    script = (
        "import sys; from service.registry import BackendPolicy, ModelRegistry; "
        "from service.tasks import model_names; "
        f"r = ModelRegistry({str(REPO_MODELS)!r}, model_names(), BackendPolicy('auto')); "
        "r.load(warm_up=True); "
        "print(r.ready, sorted({b for e in r.entries() for m in e.versions.values() "
        "for b in m.plan.backends}), 'tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.split("\n")[-2] == "True ['onnxruntime'] False", done.stderr[-2000:]


@pytest.mark.parametrize("setting", ["auto", "onnxruntime", "measure"])
def test_a_model_onnx_the_card_does_not_record_is_refused(
    setting: str, compiled_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(compiled_dir, root)
    card_path = root / "energy_from_potential" / "1" / "metrics.json"
    card = json.loads(card_path.read_text())
    del card["compiled"]  # what a re-export without `make compile-models` leaves
    card_path.write_text(json.dumps(card))
    version = _version(root, BackendPolicy(default=setting))
    assert version.plan.backends == ["tensorflow"]
    assert list(version.backends) == ["tensorflow"]
    assert "card records" in version.refused["onnxruntime"]


@pytest.mark.parametrize(
    ("backend", "platform"),
    [
        ("onnxruntime", "onnxruntime_onnx"),
        pytest.param("openvino", "openvino", marks=needs_openvino),
    ],
)
async def test_metadata_config_and_metrics_name_the_serving_backend(
    backend: str, platform: str, compiled_dir: Path
) -> None:
    import httpx

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(
        model_dir=compiled_dir,
        expected_models=("energy_from_potential",),
        backend=backend,
        warmup=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            config = (await client.get("/v2/models/energy_from_potential/config")).json()
            metadata = (await client.get("/v2/models/energy_from_potential")).json()
            metrics = (await client.get("/metrics")).text
    assert (config["backend"], config["platform"]) == (backend, platform)
    assert config["default_model_filename"] == "model.onnx"
    assert config["parameters"] == {"backend_batch_1+": {"string_value": backend}}
    serving = metadata["parameters"]["model_card"]["serving"]
    assert serving["backend"] == backend and serving["setting"] == backend
    assert (
        f'mldm_model_version_backend{{backend="{backend}",model="energy_from_potential",'
        'version="1"} 1.0' in metrics
    )


# OpenVINO -----------------------------------------------------------------------------------


@needs_openvino
def test_openvino_serves_with_tensorflows_outputs_and_without_tensorflow(
    compiled_dir: Path,
) -> None:
    model = _version(compiled_dir, BackendPolicy(default="openvino"))
    assert list(model.backends) == ["openvino"] and not model.refused
    assert model.card["serving"]["by_batch_size"] == {"1+": "openvino"}
    reference = _version(compiled_dir, BackendPolicy(default="tensorflow"))
    assert model.inputs == reference.inputs and model.outputs == reference.outputs
    for size in (1, 5, 64):  # a dynamic batch
        V = np.random.default_rng(size).normal(size=(size, 64)).astype(np.float32)
        got = model.predict({"potential": V})
        expected = reference.predict({"potential": V})
        assert compare(expected, got).equal, compare(expected, got).problems
        assert got["energy"].shape == (size,) and got["in_domain"].dtype == np.bool_


@needs_openvino
def test_openvino_calls_from_several_threads_do_not_mix(compiled_dir: Path) -> None:
    from service.backends.openvino import OpenVinoBackend

    path = compiled_dir / "energy_from_potential" / "1" / ONNX_FILE
    backend = OpenVinoBackend.load(path, threads=1)
    batches = [np.full((3, 64), k / 10, np.float32) for k in range(4)]
    alone = [backend.run({"potential": b})["energy"] for b in batches]
    got: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}

    def call(k: int) -> None:
        for _ in range(20):
            got[k].append(backend.run({"potential": batches[k]})["energy"])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        assert all(np.array_equal(e, alone[k]) for e in got[k])


@needs_openvino
def test_an_openvino_that_differs_is_refused_and_onnxruntime_serves(
    compiled_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.backends.openvino import OpenVinoBackend

    real_run = OpenVinoBackend.run

    def off_by_1e4(self: OpenVinoBackend, inputs: Mapping[str, np.ndarray]) -> Any:
        outputs = real_run(self, inputs)
        outputs["energy"] = outputs["energy"] + np.float32(1e-4)  # 10x the energy tolerance
        return outputs

    monkeypatch.setattr(OpenVinoBackend, "run", off_by_1e4)
    version = _version(compiled_dir, BackendPolicy(default="openvino"))
    assert version.plan.backends == ["onnxruntime"]
    assert list(version.refused) == ["openvino"]
    assert "differs from TensorFlow: output 'energy'" in version.refused["openvino"]
    assert version.card["serving"]["refused"] == version.refused
    assert any("openvino refused, onnxruntime serves" in r.getMessage() for r in caplog.records)

    measured = _version(compiled_dir, BackendPolicy(default="measure", measure_repeats=1))
    assert "openvino" not in measured.backends and "openvino" in measured.refused


def test_a_missing_openvino_package_falls_back_to_onnxruntime(
    compiled_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises
    version = _version(compiled_dir, BackendPolicy(per_model={"energy_from_potential": "openvino"}))
    assert version.plan.backends == ["onnxruntime"] and "tensorflow" not in version.backends
    assert "openvino package is not importable" in version.refused["openvino"]
    assert version.card["serving"]["refused"] == version.refused
    assert any("openvino refused, onnxruntime serves" in r.getMessage() for r in caplog.records)
    V = np.ones((2, 64), np.float32)
    assert version.predict({"potential": V})["energy"].shape == (2,)

    # With neither package, TensorFlow serves and both reasons are kept.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    version = _version(compiled_dir, BackendPolicy(default="openvino"))
    assert version.plan.backends == ["tensorflow"]
    assert set(version.refused) == {"openvino", "onnxruntime"}


def test_measure_without_openvino_times_the_others_and_refuses_nothing(
    compiled_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    version = _version(compiled_dir, BackendPolicy(default="measure", measure_repeats=1))
    assert set(version.card["serving"]["measured_us"]) == {"tensorflow", "onnxruntime"}
    assert not version.refused and "openvino" in version.card["serving"]["not_installed"]


@needs_openvino
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}-v{p.name}")
def test_every_committed_version_passes_verification_on_openvino(path: Path) -> None:
    from service.backends.openvino import OpenVinoBackend

    batch = VerificationBatch.load(path)
    backend = OpenVinoBackend.load(path / ONNX_FILE, threads=1)
    result = compare(batch.reference, backend.run(batch.inputs))
    assert result.equal, result.problems
