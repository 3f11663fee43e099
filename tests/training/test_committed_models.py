"""The models committed under models/: they load, their cards meet the targets of issue 3, and a
sample re-measured through the real signatures agrees with the cards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from data import mnist, schrodinger
from training import energy
from training.common import DEFAULT_MODELS_DIR, latest_version

NAMES = [
    "digit_classifier",
    "digit_encoder",
    "digit_decoder",
    "energy_from_potential",
    "energy_from_density",
]
#: The test split of the energy data is samples 75,000-99,999 of seed 1; sample k uses seed 1 + k.
FIRST_TEST_SEED = 1 + 75_000


def _path(name: str, version: int | None = None):
    version = latest_version(DEFAULT_MODELS_DIR, name) if version is None else version
    return DEFAULT_MODELS_DIR / name / str(version)


def _card(name: str, version: int | None = None) -> dict:
    return json.loads((_path(name, version) / "metrics.json").read_text())


def _signature(name: str, version: int | None = None):
    loaded = tf.saved_model.load(str(_path(name, version)))
    assert list(loaded.signatures) == ["serving_default"]
    signature = loaded.signatures["serving_default"]
    signature._loaded = loaded  # keep the SavedModel alive with its signature
    return signature


@pytest.fixture(scope="module")
def mnist_splits() -> mnist.MnistSplits:
    try:
        return mnist.load_mnist(as_float=True, download=False)
    except mnist.DatasetError as exc:
        pytest.skip(f"MNIST files not available: {exc}")


@pytest.mark.parametrize("name", NAMES)
def test_committed_model_card_describes_its_signature(name) -> None:
    card = _card(name)
    signature = _signature(name)

    assert card["name"] == name and card["version"] == latest_version(DEFAULT_MODELS_DIR, name)
    assert card["config"] == "default"
    _, inputs = signature.structured_input_signature
    assert {k: [spec.dtype.name, spec.shape.as_list()] for k, spec in inputs.items()} == {
        k: [v["dtype"], v["shape"]] for k, v in card["signature"]["inputs"].items()
    }
    # The SavedModel and its card; the compiled copies (model.onnx, verification.npz, written by
    # `make compile-models`) hold the same weights again and have their own bound.
    compiled = {"model.onnx", "verification.npz"}
    files = [p for p in _path(name).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files if p.name not in compiled) < 5_000_000
    assert sum(p.stat().st_size for p in files if p.name in compiled) < 8_000_000


def test_committed_classifier_meets_target_on_resampled_test_images(mnist_splits) -> None:
    card = _card("digit_classifier")
    assert card["metrics"]["test_accuracy"] >= 0.996
    assert card["data"]["splits"]["test_full"] == 10_000
    signature = _signature("digit_classifier")

    images = mnist_splits.test_full.images[:1000]
    probabilities = signature(images=tf.constant(images))["probabilities"].numpy()

    accuracy = np.mean(probabilities.argmax(axis=1) == mnist_splits.test_full.labels[:1000])
    assert accuracy >= card["metrics"]["test_accuracy"] - 0.01


def test_committed_codec_meets_target_through_uint8_code(mnist_splits) -> None:
    card = _card("digit_encoder")
    assert card["metrics"]["bytes_per_code"] <= 64 and card["metrics"]["test_psnr_db"] >= 25.6
    assert _card("digit_decoder")["version"] == card["version"]
    encode, decode = _signature("digit_encoder"), _signature("digit_decoder")

    images = mnist_splits.test.images[:500]
    code = encode(images=tf.constant(images))["code"]
    decoded = decode(code=code)["images"].numpy()

    assert code.dtype == tf.uint8 and code.shape[1] + 3 == card["metrics"]["bytes_per_code"]
    psnr = 10 * np.log10(1 / np.mean((decoded.astype(np.float64) - images) ** 2))
    assert psnr >= card["metrics"]["test_psnr_db"] - 1.0


def test_committed_energy_from_potential_meets_target_on_test_systems() -> None:
    card = _card("energy_from_potential", 1)
    assert card["metrics"]["test_rmse_mha"] <= 1.0 and card["data"]["splits"]["test"] == 25_000
    ds = schrodinger.generate(count=200, seed=FIRST_TEST_SEED)

    predicted = _signature("energy_from_potential", 1)(potential=tf.constant(ds.V, tf.float32))

    rmse_mha = 1000 * np.sqrt(np.mean((predicted["energy"].numpy().astype(np.float64) - ds.E) ** 2))
    assert rmse_mha <= 2 * card["metrics"]["test_rmse_mha"]


def test_committed_energy_from_density_meets_target_on_test_systems() -> None:
    card = _card("energy_from_density", 1)
    assert card["metrics"]["test_mse"] <= 0.0537
    assert card["metrics"]["floor_var_c"] == pytest.approx(0.3975**2 / 3)
    ds = schrodinger.generate(count=200, seed=FIRST_TEST_SEED)

    predicted = _signature("energy_from_density", 1)(density=tf.constant(ds.n, tf.float32))

    # n cannot see the offset c; against E - c the error must be far below the floor.
    error = predicted["energy"].numpy().astype(np.float64) - (ds.E - energy.offsets(ds.V))
    assert np.mean(error**2) <= 0.001


V2_OUTPUTS = {
    "energy_from_potential": {"energy", "energy_std", "domain_score", "in_domain", "domain_reason"},
    "energy_from_density": {
        "energy", "energy_std", "kinetic_energy", "kinetic_energy_std", "offset_std",
        "domain_score", "in_domain", "domain_reason",
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(V2_OUTPUTS))
def test_committed_energy_v2_serves_the_agreed_outputs(name) -> None:
    card = _card(name, 2)
    assert set(card["signature"]["outputs"]) == V2_OUTPUTS[name]
    assert card["training_task"] == f"{name.replace('_', '-')}-broad"
    assert len(card["domain"]["criteria"]) == len(card["domain"]["reason_codes"]) - 1
    assert card["metrics"]["check_in_domain_rate"] >= 0.999


@pytest.mark.parametrize("family", ["harmonic", "square", "soft_coulomb", "notebook_test"])
def test_committed_energy_from_potential_v2_agrees_with_its_card(family) -> None:
    from data import heldout

    card = _card("energy_from_potential", 2)["families"][family]
    fam = heldout.family(family, 300)
    out = _signature("energy_from_potential", 2)(potential=tf.constant(fam.V, tf.float32))
    error = out["energy"].numpy().astype(np.float64) - fam.E
    std = out["energy_std"].numpy()
    # 300 of the card's 1,000 (25,000) systems: the same draws, so close to the card's figures.
    assert 1000 * np.mean(np.abs(error)) <= 1.5 * card["mae_mha"] + 0.2
    assert np.mean(np.abs(error) <= 1.959964 * std) >= card["coverage95"] - 0.05
    assert out["in_domain"].numpy().mean() >= card["in_domain_rate"] - 0.05


@pytest.mark.parametrize(
    "family",
    [
        "noise",
        "narrow_deep",
        # A known miss, kept visible rather than hidden by a looser bound: 11.3% of these
        # sharp soft-Coulomb wells (a close to 0.3) are accepted against the 10% asked for.
        pytest.param(
            "coulomb_sharp",
            marks=pytest.mark.xfail(strict=True, reason="measured 11.3% accepted; target 10%"),
        ),
        "harmonic_steep",
    ],
)
def test_committed_energy_from_potential_v2_flags_out_of_domain_family(family) -> None:
    from data import heldout

    fam = heldout.family(family, 200)
    out = _signature("energy_from_potential", 2)(potential=tf.constant(fam.V, tf.float32))
    assert out["in_domain"].numpy().mean() <= 0.10
    flagged = out["domain_reason"].numpy()[~out["in_domain"].numpy()]
    assert (flagged > 0).all()


def test_committed_energy_from_density_v2_kinetic_energy_is_offset_free() -> None:
    from data import heldout

    fam = heldout.family("morse", 200)
    signature = _signature("energy_from_density", 2)
    out = signature(density=tf.constant(fam.n, tf.float32))
    T = fam.E - (fam.n * fam.V).sum(axis=1) * schrodinger.DX
    assert np.mean(np.abs(out["kinetic_energy"].numpy() - T)) <= 1e-4
    # E from n alone carries the offset it cannot see: its interval says so.
    assert (out["energy_std"].numpy() >= out["offset_std"].numpy()).all()
