"""The digit task routes with the committed classifier (v2: `ood_score`, `is_digit`): uploads
unlike MNIST (lighting, noise, alpha, orientation, polarity), the debug image, the not-a-digit
flag on each kind of non-digit, and `POST /api/v1/digits/read` on rows of digits."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from data import mnist
from service import imaging
from service.app import create_app
from service.registry import ModelRegistry
from service.settings import Settings
from tests.service.conftest import REPO_MODELS
from tests.service.helpers import assert_error, encode
from training import digit_sets

CLASSIFIER = REPO_MODELS / "digit_classifier" / "2" / "saved_model.pb"

pytestmark = pytest.mark.skipif(
    not CLASSIFIER.exists(), reason="models/digit_classifier/2 is not committed"
)


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    registry = ModelRegistry(REPO_MODELS, ("digit_classifier",))
    registry.load()
    return registry


@pytest.fixture(scope="module")
def test_digits() -> tuple[np.ndarray, np.ndarray]:
    """The last 40 MNIST test digits (not the first 5,000, which fitted the temperature)."""
    try:
        splits = mnist.load_mnist(download=False)
    except mnist.DatasetError as exc:
        pytest.skip(f"MNIST is not available (MLDM_MNIST_DIR): {exc}")
    images = splits.test_full.images[-40:, :, :, 0]
    return images, splits.test_full.labels[-40:]


async def _client(registry: ModelRegistry, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False, **settings), registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(registry: ModelRegistry) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(registry):
        yield client


def _png(pixels: np.ndarray | Image.Image, **save: object) -> dict[str, tuple[str, bytes, str]]:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return {"file": ("upload.png", buffer.getvalue(), "image/png")}


def _dark_on_light(image: np.ndarray, pad: int = 20, scale: int = 4) -> np.ndarray:
    """An MNIST image (light on dark, [0, 1]) as a bigger dark-on-light uint8 picture."""
    big = np.kron(np.pad(image, pad // scale), np.ones((scale, scale)))
    return np.clip(np.rint(255 * (1 - big)), 0, 255).astype(np.uint8)


async def _classify_upload(
    client: httpx.AsyncClient, files: dict[str, tuple[str, bytes, str]]
) -> dict[str, object]:
    response = await client.post("/api/v1/digits/classify/image", files=files)
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    return prediction  # type: ignore[no-any-return]


# Extra outputs ---------------------------------------------------------------------------------


async def test_classify_digits_returns_ood_fields_per_item(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    batch = np.stack([images[0], np.zeros((28, 28)), np.ones((28, 28))]).tolist()
    response = await client.post("/api/v1/digits/classify", json={"images": batch, "scale": "unit"})
    assert response.status_code == 200, response.text
    digit, zeros, ones = response.json()["predictions"]
    assert digit["digit"] == labels[0] and digit["is_digit"] is True
    assert zeros["is_digit"] is False and ones["is_digit"] is False
    assert digit["ood_score"] < zeros["ood_score"] and digit["ood_score"] < ones["ood_score"]


# Uploads unlike MNIST ----------------------------------------------------------------------------


async def test_classify_digit_image_reads_photo_on_ramped_lighting(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    photos = digit_sets.mnist_photos(images[:6], seed=1, ramp=(90.0, 255.0), noise=12.0)
    for photo, label in zip(photos, labels[:6], strict=True):
        prediction = await _classify_upload(client, _png(photo))
        assert (prediction["digit"], prediction["is_digit"]) == (label, True)


async def test_classify_digit_image_reads_noisy_picture(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    rng = np.random.default_rng(2)
    for image, label in zip(images[6:10], labels[6:10], strict=True):
        clean = _dark_on_light(image).astype(np.float64)
        noisy = clean + rng.normal(0, 20, clean.shape)
        prediction = await _classify_upload(client, _png(np.clip(noisy, 0, 255).astype(np.uint8)))
        assert prediction["digit"] == label


async def test_classify_digit_image_composites_alpha_on_white(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    # Black everywhere, the digit opaque and the rest transparent: only alpha draws it.
    alpha = 255 - _dark_on_light(images[10])
    rgba = np.zeros((*alpha.shape, 4), np.uint8)
    rgba[..., 3] = alpha
    prediction = await _classify_upload(client, _png(Image.fromarray(rgba, "RGBA")))
    assert prediction["digit"] == labels[10]


async def test_classify_digit_image_follows_exif_orientation(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    upright = Image.fromarray(_dark_on_light(images[11]))
    # Stored turned 90 degrees, with the EXIF tag (6 = rotate 90 CW to view) that undoes it.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    files = {"file": ("photo.jpg", buffer.getvalue(), "image/jpeg")}
    assert (await _classify_upload(client, files))["digit"] == labels[11]


async def test_classify_digit_image_detects_polarity(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    dark = _dark_on_light(images[12])
    for picture in (dark, 255 - dark):
        assert (await _classify_upload(client, _png(picture)))["digit"] == labels[12]


# Debug -----------------------------------------------------------------------------------------


async def test_classify_digit_image_debug_returns_model_input(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = test_digits
    files = _png(_dark_on_light(images[13]))
    prediction = await _classify_upload(client, files)
    assert "model_input_png" not in prediction
    response = await client.post(
        "/api/v1/digits/classify/image", files=files, data={"debug": "true"}
    )
    assert response.status_code == 200, response.text
    [debugged] = response.json()["predictions"]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(debugged["model_input_png"]))))
    expected = imaging.preprocess_upload(files["file"][1], 10**7)
    assert seen.shape == (28, 28)
    np.testing.assert_array_equal(seen, np.rint(expected * 255).astype(np.uint8))
    assert debugged["probabilities"] == prediction["probabilities"]
    query = await client.post("/api/v1/digits/classify/image?debug=1", files=files)
    assert query.json()["predictions"][0]["model_input_png"] == debugged["model_input_png"]


async def test_classify_digit_image_debug_rejects_non_boolean(client: httpx.AsyncClient) -> None:
    files = _png(np.full((64, 64), 255, np.uint8))
    response = await client.post("/api/v1/digits/classify/image?debug=yes", files=files)
    assert_error(response, 422, "debug: expected true or false", field="debug")


# Not a digit -----------------------------------------------------------------------------------


async def _rejected(client: httpx.AsyncClient, pictures: list[np.ndarray]) -> float:
    """The share refused: 'no digit found' (422) or `is_digit` false."""
    rejected = 0
    for picture in pictures:
        response = await client.post("/api/v1/digits/classify/image", files=_png(picture))
        if response.status_code == 422:
            assert_error(response, 422, "no digit found", field="file")
            rejected += 1
        else:
            assert response.status_code == 200, response.text
            rejected += not response.json()["predictions"][0]["is_digit"]
    return rejected / len(pictures)


@pytest.mark.parametrize(
    "kind", ["uniform noise", "gaussian noise", "blank and nearly blank", "paper without ink"]
)
async def test_classify_digit_image_rejects_non_digit(client: httpx.AsyncClient, kind: str) -> None:
    pictures = digit_sets.NON_DIGIT_SETS[kind](8, 21)
    assert await _rejected(client, pictures) == 1.0


def _fonts(family: str) -> list[Path]:
    fonts = [f for f in digit_sets.fonts() if family in f.name]
    if not fonts:
        pytest.skip(f"no {family} font installed (fonts-dejavu, fonts-liberation)")
    return fonts


async def test_classify_digit_image_flags_most_letters(client: httpx.AsyncClient) -> None:
    letters = "AHKMNPRWXYachkmnprwx"  # no digit look-alikes (O, l, S, Z, B, ...)
    # Liberation: a family the not-a-digit rule was not fitted on (it saw DejaVu's letters).
    pictures = [
        digit_sets.render_text(c, font, 40) for font in _fonts("Liberation")[:2] for c in letters
    ]
    # training.digit_flag measures 80% of Liberation letters flagged; a bound below that.
    assert await _rejected(client, pictures) >= 0.7


# Squares, triangles, circles (`digit_sets.shapes` kinds 0, 2, 3): all squares and circles; a
# triangle can pass for a 4 or a 7 (3 of these 4 are flagged; the bench measures the rest).
@pytest.mark.parametrize(("kind", "share"), [(0, 1.0), (2, 0.75), (3, 1.0)])
async def test_classify_digit_image_rejects_shapes(
    client: httpx.AsyncClient, kind: int, share: float
) -> None:
    # Seed 21: neither the rule's fit (1, 2) nor the bench (11) drew these.
    pictures = [p for i, p in enumerate(digit_sets.shapes(28, 21)) if i % 7 == kind]
    assert await _rejected(client, pictures) >= share


async def test_classify_digit_image_accepts_font_digits(client: httpx.AsyncClient) -> None:
    fonts = _fonts("Liberation")[:4]
    pictures = [digit_sets.render_text(str(d), font, 40) for font in fonts for d in range(10)]
    for picture, digit in zip(pictures, [d for _ in fonts for d in range(10)], strict=True):
        prediction = await _classify_upload(client, _png(picture))
        assert (prediction["digit"], prediction["is_digit"]) == (digit, True)
        assert 0.0 <= float(prediction["not_digit_score"]) <= 1.0  # type: ignore[arg-type]


async def test_classify_digits_accepts_mnist_digits(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    response = await client.post(
        "/api/v1/digits/classify", json={"images": images.tolist(), "scale": "unit"}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert sum(p["is_digit"] for p in predictions) >= 39  # 99.5% accepted on validation
    assert sum(p["digit"] == label for p, label in zip(predictions, labels, strict=True)) >= 39


# Reading a number ------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [(3, 5), (8, 14), (20, 40)])
async def test_read_digits_reads_mnist_row(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray], gap: tuple[int, int]
) -> None:
    images, labels = test_digits
    rng = np.random.default_rng(gap[0])
    idx = rng.choice(len(images), 5, replace=False)
    picture, spans = digit_sets.mnist_row(images[idx], rng, gap=gap)
    response = await client.post("/api/v1/digits/read", files=_png(picture))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "digit_classifier", "version": 2}
    assert body["text"] == "".join(str(labels[i]) for i in idx)
    for digit, (left, right) in zip(body["digits"], spans, strict=True):
        assert abs(digit["box"]["left"] - left) <= 2 and abs(digit["box"]["right"] - right) <= 2
        assert digit["is_digit"] is True and 0.5 < digit["probability"] <= 1.0


async def test_read_digits_reads_rendered_number(client: httpx.AsyncClient) -> None:
    fonts = [f for f in digit_sets.fonts() if "DejaVuSans." in f.name or "Liberation" in f.name]
    if not fonts:
        pytest.skip("no DejaVu Sans or Liberation font installed (fonts-dejavu, fonts-liberation)")
    picture = digit_sets.render_text("90210", fonts[0], 48, dark_on_light=False)
    response = await client.post("/api/v1/digits/read", files=_png(picture))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "90210"


async def test_read_digits_reads_dejavu_sixes(client: httpx.AsyncClient) -> None:
    # Issue 20: the DejaVu "6" was flagged not a digit, and "3366" read "33??".
    picture = digit_sets.render_text("3366", _fonts("DejaVuSans.ttf")[0], 48)
    response = await client.post("/api/v1/digits/read", files=_png(picture))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "3366"


async def test_read_digits_marks_non_digit_segment(
    client: httpx.AsyncClient, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_digits
    rng = np.random.default_rng(3)
    noise = (rng.random((28, 20)) > 0.5).astype(np.float32)  # a patch of salt and pepper
    picture, _ = digit_sets.mnist_row(np.stack([images[0], images[1]]), rng, gap=(10, 10))
    canvas = np.full((40, picture.shape[1] + 40), 255, np.uint8)
    canvas[:, : picture.shape[1]] = picture
    canvas[6:34, picture.shape[1] + 8 : picture.shape[1] + 28] = np.rint(255 * (1 - noise))
    response = await client.post("/api/v1/digits/read", files=_png(canvas))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == f"{labels[0]}{labels[1]}?"
    assert body["digits"][2]["is_digit"] is False
    flags = [d["is_digit"] for d in body["digits"]]
    assert body["text"] == "".join(
        str(d["digit"]) if ok else "?" for d, ok in zip(body["digits"], flags, strict=True)
    )


async def test_read_digits_refuses_more_than_max_read_digits(
    registry: ModelRegistry, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = test_digits
    picture, _ = digit_sets.mnist_row(images[:4], np.random.default_rng(4))
    async for client in _client(registry, max_read_digits=3):
        response = await client.post("/api/v1/digits/read", files=_png(picture))
        body = assert_error(response, 422, "too many digits", field="file")
        assert body["expected"] == "at most 3 digits (the server's max_read_digits)"
        assert body["received"] == "4 digits"


async def test_read_digits_rejects_blank_picture(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/digits/read", files=_png(np.full((60, 200), 250, "u1")))
    assert_error(response, 422, "no digit found", field="file")


async def test_read_digits_rejects_bad_files(registry: ModelRegistry) -> None:
    async for client in _client(registry, max_image_pixels=100_000):
        response = await client.post(
            "/api/v1/digits/read", files={"file": ("x.png", b"not a picture", "image/png")}
        )
        assert_error(response, 422, "not a readable PNG or JPEG image", field="file")
        empty = await client.post(
            "/api/v1/digits/read", files={"file": ("x.png", b"", "image/png")}
        )
        assert_error(empty, 422, "an empty file", field="file")
        big = encode(np.full((400, 400), 255, np.uint8))
        response = await client.post("/api/v1/digits/read", files={"file": ("x.png", big, "i/png")})
        assert_error(response, 413, "image too large: 400x400", field="file")
        response = await client.post("/api/v1/digits/read", json={"file": "x"})
        assert_error(response, 415, "content type 'application/json'")


async def test_python_client_returns_the_not_a_digit_score(
    registry: ModelRegistry, test_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """The Python client (JSON and .npz) carries `is_digit` and the rule's `not_digit_score`."""
    from service.client import AsyncClient

    images, _ = test_digits
    square = np.zeros((28, 28), images.dtype)
    square[6:22, 6:22] = 1
    square[9:19, 9:19] = 0
    batch = np.concatenate([images[:4], square[None]])
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False), registry)
    async with app.router.lifespan_context(app):
        for binary in (False, True):
            transport = httpx.ASGITransport(app=app)
            async with AsyncClient("http://test", transport=transport, binary=binary) as api:
                result = await api.classify(batch)
            assert result.not_digit_score is not None and result.not_digit_score.shape == (5,)
            assert ((result.not_digit_score >= 0) & (result.not_digit_score <= 1)).all()
            assert result.is_digit is not None
            assert result.is_digit.tolist() == [True, True, True, True, False], binary
            assert result.not_digit_score[4] > result.not_digit_score[:4].max()


@pytest.mark.parametrize("scale", ["byte", "unit"])
async def test_classify_digits_flags_the_pixels_the_model_saw(
    client: httpx.AsyncClient,
    registry: ModelRegistry,
    test_digits: tuple[np.ndarray, np.ndarray],
    scale: str,
) -> None:
    """The not-a-digit rule scores the validated, scaled pixels (0-255 divided by 255 in
    float32): the score of each answer is the rule's on those pixels."""
    from service.tasks import digits

    images = np.round(np.asarray(test_digits[0][:6], np.float64) * 255.0).astype(np.uint8)
    pixels = images.astype(np.float32) / np.float32(255.0)
    sent = images.tolist() if scale == "byte" else pixels.tolist()
    response = await client.post("/api/v1/digits/classify", json={"images": sent, "scale": scale})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    rule = digits.flag_rule(registry.get("digit_classifier").path)
    assert rule is not None
    probabilities = np.array([p["probabilities"] for p in predictions], np.float32)
    ood = np.array([p["ood_score"] for p in predictions], np.float32).reshape(-1)
    is_digit, score = digits._flags(rule, pixels, probabilities, ood)
    assert [p["is_digit"] for p in predictions] == is_digit.tolist()
    np.testing.assert_allclose([p["not_digit_score"] for p in predictions], score, atol=1e-6)
