"""`mldm_client`, installed by one pip command into a TensorFlow-free virtualenv, against the real
server on the committed models: every task endpoint, .npy, V2 infer and the errors."""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path

import mldm_client
import numpy as np
import pytest
from mldm_client import AsyncClient, Client, InvalidRequest, NotFound

MNIST = Path(os.environ.get("MLDM_MNIST_DIR", Path(__file__).parents[3] / "shared/data/mnist"))


def _idx(name: str, count: int) -> np.ndarray:
    """The first `count` items of an MNIST idx file (the format: 4-byte big-endian header)."""
    raw = gzip.decompress((MNIST / name).read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    return data[:count]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found in {MNIST}: set MLDM_MNIST_DIR")
    return _idx("t10k-images-idx3-ubyte.gz", 20), _idx("t10k-labels-idx1-ubyte.gz", 20)


def _potentials(count: int) -> np.ndarray:
    """Smooth wells on the 64-point grid, like the training systems (a sum of Gaussians)."""
    rng = np.random.default_rng(5)
    x = np.linspace(0, 1, 64)
    wells = [
        -sum(
            rng.uniform(1, 10)
            * np.exp(-((x - rng.uniform(0.4, 0.6)) ** 2) / (2 * rng.uniform(0.03, 0.1) ** 2))
            for _ in range(3)
        )
        for _ in range(count)
    ]
    return np.array(wells)


def test_install_has_no_tensorflow_and_ships_its_types() -> None:
    assert importlib.util.find_spec("tensorflow") is None
    assert "service" not in sys.modules
    assert (Path(mldm_client.__file__).parent / "py.typed").is_file()


def test_classify_reads_real_digits(server_url: str, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    with Client(server_url) as client:
        assert client.ready() and client.health()
        as_json = client.classify(images)
        np.testing.assert_array_equal(as_json.digits, labels)
        assert as_json.model is not None and as_json.model.name == "digit_classifier"
    with Client(server_url, binary=True) as client:
        as_npy = client.classify(images)
    np.testing.assert_array_equal(as_npy.digits, labels)
    np.testing.assert_allclose(as_npy.probabilities, as_json.probabilities, atol=1e-6)


def test_codec_round_trip_keeps_the_digit(
    server_url: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    with Client(server_url) as client:
        codes = client.compress(images)
        restored = client.decompress(codes)
        assert restored.shape == (20, 28, 28) and all(isinstance(c, bytes) for c in codes)
        again = client.classify(restored, scale="unit").digits
    assert (again == labels).mean() >= 0.9


def test_energy_against_the_servers_exact_solution(server_url: str) -> None:
    V = _potentials(4)
    with Client(server_url) as client:
        energies = client.energy_from_potential(V, include_exact=True)
        exact = client.exact(V)
        assert energies.exact is not None and energies.errors is not None
        np.testing.assert_allclose(energies.exact, exact.energies, rtol=1e-9)
        assert exact.densities.shape == (4, 64)
        from_density = client.energy_from_density(exact.densities)
        assert from_density.energies.shape == (4,)


def test_v2_infer_json(server_url: str, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    batch = (images / np.float32(255)).astype(np.float32)[..., np.newaxis]
    with Client(server_url) as client:
        answer = client.infer("digit_classifier", {"images": batch}, binary=False)
    assert answer.model_name == "digit_classifier"
    np.testing.assert_array_equal(answer.outputs["probabilities"].argmax(axis=1), labels)


def test_v2_infer_binary_when_the_server_offers_it(
    server_url: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    import httpx

    extensions = httpx.get(f"{server_url}/v2").json().get("extensions", [])
    if "binary_tensor_data" not in extensions:
        pytest.skip(f"this server does not offer binary_tensor_data (extensions: {extensions})")
    images, labels = digits
    batch = (images / np.float32(255)).astype(np.float32)[..., np.newaxis]
    with Client(server_url) as client:
        answer = client.infer("digit_classifier", {"images": batch}, binary=True)
        as_json = client.infer("digit_classifier", {"images": batch}, binary=False)
    np.testing.assert_array_equal(answer.outputs["probabilities"].argmax(axis=1), labels)
    np.testing.assert_array_equal(answer.outputs["probabilities"], as_json.outputs["probabilities"])


def test_errors_are_typed(server_url: str) -> None:
    with Client(server_url) as client:
        with pytest.raises(InvalidRequest) as wrong:
            client.energy_from_potential(np.zeros((2, 63)))
        assert wrong.value.status_code == 422 and wrong.value.request_id
        with pytest.raises(NotFound):
            client.infer("no_such_model", {"x": np.zeros((1, 2), np.float32)})


async def test_async_client(server_url: str, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    async with AsyncClient(server_url) as client:
        assert await client.ready()
        result = await client.classify(images)
        models = {m.name for m in await client.models()}
    np.testing.assert_array_equal(result.digits, labels)
    assert {"digit_classifier", "energy_from_potential"} <= models
