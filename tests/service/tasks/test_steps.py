"""The tasks' steps called without HTTP: each task against the signatures it wraps."""

from __future__ import annotations

import numpy as np
import pytest

from data.schrodinger import DX, GRID, solve_ground_state
from service.codecs.b64 import b64encode
from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.registry import ModelRegistry
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import codec, digits, energy, model_specs
from service.tasks.energy import GRID as SERVICE_GRID
from tests.service.helpers import images, potentials


def test_service_grid_matches_solver_grid() -> None:
    np.testing.assert_array_equal(SERVICE_GRID, GRID)


async def test_classify_returns_signature_probabilities(service: DataPlane) -> None:
    batch = images(3)
    result = await digits.classify(service, batch.tolist(), "unit")
    model = service.registry.get("digit_classifier")
    expected = model.predict_one(batch.reshape(3, 28, 28, 1).astype(np.float32))
    # Served as a batch padded to a bucket size: TensorFlow's CPU kernels block by batch size, so
    # the last bit may differ from a call of exactly 3 (seen on this 2-core machine).
    np.testing.assert_allclose(result.probabilities, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.digits, expected.argmax(axis=1))


async def test_classify_byte_scale_equals_unit_scale(service: DataPlane) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 28, 28))
    as_bytes = await digits.classify(service, pixels.tolist(), "byte")
    as_unit = await digits.classify(service, (pixels / 255.0).tolist(), "unit")
    np.testing.assert_array_equal(as_bytes.probabilities, as_unit.probabilities)


async def test_classify_accepts_one_image_and_channel_axis(service: DataPlane) -> None:
    one = images(1)[0]
    single = await digits.classify(service, one.tolist(), "unit")
    channel = await digits.classify(service, one.reshape(1, 28, 28, 1).tolist(), "unit")
    assert single.probabilities.shape == (1, 10)
    np.testing.assert_array_equal(single.probabilities, channel.probabilities)


async def test_classify_rejects_unit_pixels_above_one(service: DataPlane) -> None:
    batch = images(1)
    batch[0, 3, 4] = 255.0
    with pytest.raises(InvalidInput, match=r"value out of range: expected pixels") as info:
        await digits.classify(service, batch.tolist(), "unit")
    assert info.value.field == "images[0][3][4]"
    assert info.value.received == "255"


async def test_classify_rejects_fractional_byte_pixels(service: DataPlane) -> None:
    pixels = np.zeros((28, 28))
    pixels[1, 2] = 0.5
    with pytest.raises(InvalidInput, match=r"images\[1\]\[2\]: expected an integer") as info:
        await digits.classify(service, pixels.tolist(), "byte")
    assert info.value.received == "0.5"


async def test_compress_uses_newest_encoder_with_a_decoder(service: DataPlane) -> None:
    result = await codec.compress(service, images(2).tolist(), "unit")
    assert result.model.version == 2
    assert result.bytes_per_image == codec.HEADER_BYTES + 49
    assert all(len(code) == result.bytes_per_image for code in result.codes)
    assert result.codes[0][:3] == b"\x01\x00\x02"


async def test_decompress_reproduces_decoder_output_exactly(service: DataPlane) -> None:
    batch = images(4)
    compressed = await codec.compress(service, batch.tolist(), "unit")
    decompressed = await codec.decompress(service, [b64encode(c) for c in compressed.codes])
    encoder = service.registry.get("digit_encoder", 2)
    decoder = service.registry.get("digit_decoder", 2)
    latent = encoder.predict_one(batch.reshape(4, 28, 28, 1).astype(np.float32))
    expected = decoder.predict_one(latent).reshape(4, 28, 28)
    np.testing.assert_array_equal(decompressed.images, expected)
    assert decompressed.versions == [2, 2, 2, 2]


async def test_decompress_decodes_each_code_with_its_own_version(
    service: DataPlane,
) -> None:
    old = codec.pack(1, np.full(16, 255, np.uint8))
    new = codec.pack(2, np.zeros(49, np.uint8))
    result = await codec.decompress(service, [new, old, new])
    assert result.versions == [2, 1, 2]
    np.testing.assert_array_equal(result.images[1], np.ones((28, 28), np.float32))
    np.testing.assert_array_equal(result.images[0], np.zeros((28, 28), np.float32))


async def test_decompress_rejects_unknown_version(service: DataPlane) -> None:
    code = b64encode(codec.pack(9, np.zeros(16, np.uint8)))
    with pytest.raises(InvalidInput, match="unknown model version 9") as info:
        await codec.decompress(service, [code])
    assert info.value.field == "codes[0]"
    assert info.value.expected == "a code from a loaded encoder version (1, 2)"


async def test_decompress_rejects_code_of_wrong_length(service: DataPlane) -> None:
    code = codec.pack(1, np.zeros(15, np.uint8))
    with pytest.raises(InvalidInput, match="corrupt code: wrong length") as info:
        await codec.decompress(service, [codec.pack(1, np.zeros(16, np.uint8)), code])
    assert info.value.field == "codes[1]"
    assert info.value.expected == "19 bytes for version 1"


async def test_energy_from_potential_adds_exact_and_error(service: DataPlane) -> None:
    V = potentials(3)
    result = await energy.from_potential(service, V.tolist(), include_exact=True)
    model = service.registry.get("energy_from_potential")
    predicted = model.predict_one(V.astype(np.float32))
    exact, _ = solve_ground_state(V)
    np.testing.assert_array_equal(result.energies, predicted)
    assert result.exact is not None and result.errors is not None
    np.testing.assert_allclose(result.exact, exact, rtol=1e-12)
    np.testing.assert_allclose(result.errors, predicted.astype(np.float64) - exact, rtol=1e-12)


async def test_energy_from_density_checks_exact_against_potentials(
    service: DataPlane,
) -> None:
    V = potentials(2)
    exact, densities = solve_ground_state(V)
    result = await energy.from_density(service, densities.tolist(), V.tolist())
    assert result.exact is not None
    np.testing.assert_allclose(result.exact, exact, rtol=1e-12)


async def test_energy_from_density_rejects_unnormalised_density(
    service: DataPlane,
) -> None:
    _, densities = solve_ground_state(potentials(2))
    densities[1] *= 2
    with pytest.raises(InvalidInput, match="density not normalised") as info:
        await energy.from_density(service, densities.tolist())
    assert info.value.field == "densities[1]"
    assert info.value.received == f"sum(n) * dx = {densities[1].sum() * DX:.6g}"


async def test_exact_solution_matches_solver(service: DataPlane) -> None:
    V = potentials(2)
    result = await energy.exact(service, V.tolist())
    energies, densities = solve_ground_state(V)
    np.testing.assert_array_equal(result.energies, energies)
    np.testing.assert_array_equal(result.densities, densities)


async def test_energy_from_potential_validates_big_batch_in_thread(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    # over _OFFLOAD_ITEMS items: validated in a worker thread, same answers and same errors
    tuned = settings.model_copy(update={"max_items_per_request": 500})
    runner = ModelRunner(tuned)
    service = DataPlane(tiny_registry, tuned, runner, model_specs())
    V = potentials(300)
    result = await energy.from_potential(service, V.tolist())
    expected = tiny_registry.get("energy_from_potential").predict_one(V.astype(np.float32))
    np.testing.assert_allclose(result.energies, expected, rtol=1e-6)
    bad = V.tolist()
    bad[250][3] = "x"
    with pytest.raises(InvalidInput, match=r"potentials\[250\]\[3\]: expected a number"):
        await energy.from_potential(service, bad)
    await runner.aclose()


async def test_energy_auto_without_domain_check_is_solved(service: DataPlane) -> None:
    # The tiny model has no domain outputs and no domain in its card: it cannot say whether an
    # input is inside what it knows, so `model` says "unknown" and `auto` asks the solver.
    V = potentials(3)
    exact, _ = solve_ground_state(V)
    model = await energy.from_potential(service, V.tolist())
    auto = await energy.from_potential(service, V.tolist(), mode="auto")
    assert model.answer is not None and auto.answer is not None
    assert model.answer.answered_by == ["model"] * 3
    assert not model.answer.domain.inside.any() and np.isnan(model.answer.domain.score).all()
    assert model.answer.domain.reason[0].startswith("unknown")
    assert auto.answer.answered_by == ["exact solver"] * 3
    np.testing.assert_allclose(auto.energies, exact, rtol=1e-12)


async def test_energy_unknown_mode_is_invalid_input(service: DataPlane) -> None:
    with pytest.raises(InvalidInput) as caught:
        await energy.from_potential(service, potentials(1).tolist(), mode="fastest")
    assert caught.value.field == "mode" and "'auto'" in str(caught.value)
