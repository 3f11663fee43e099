"""The MNIST loader: the real files when present, and clear errors on broken copies."""

from __future__ import annotations

import gzip
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from data import mnist
from data.errors import DatasetError

REAL_DIR = mnist.default_mnist_dir()
HAVE_REAL = all((REAL_DIR / name).is_file() for name in mnist.MNIST_FILES)
needs_real = pytest.mark.skipif(not HAVE_REAL, reason=f"the MNIST files are not in {REAL_DIR}")

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def write_idx(
    path: Path, shape: tuple[int, ...], *, magic: int | None = None, data: bytes | None = None
) -> Path:
    """A gzip-compressed IDX file of unsigned bytes (zeros unless ``data`` is given)."""
    magic = (0x08 << 8) | len(shape) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    body = bytes(int(np.prod(shape))) if data is None else data
    path.write_bytes(gzip.compress(header + body, compresslevel=1))
    return path


def real_copy(tmp_path: Path, *, except_: str) -> Path:
    """``tmp_path`` with links to the real files, all but ``except_``."""
    for name in mnist.MNIST_FILES:
        if name != except_:
            (tmp_path / name).symlink_to(REAL_DIR / name)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------------


@needs_real
def test_load_mnist_split_sizes_and_label_ranges() -> None:
    splits = mnist.load_mnist(REAL_DIR, download=False)
    sizes = {name: len(getattr(splits, name)) for name in ("train", "validation", "test")}
    assert sizes == {"train": 60_000, "validation": 5_000, "test": 5_000}
    assert len(splits.test_full) == 10_000
    for split in (splits.train, splits.validation, splits.test, splits.test_full):
        assert split.images.shape == (len(split), 28, 28, 1)
        assert split.images.dtype == np.float32
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert split.labels.dtype == np.int64
        assert set(np.unique(split.labels)) == set(range(10))
    # validation is the first half of the test file, test the second
    np.testing.assert_array_equal(splits.validation.labels, splits.test_full.labels[:5000])
    np.testing.assert_array_equal(splits.test.images, splits.test_full.images[5000:])


@needs_real
def test_load_mnist_uint8_matches_float() -> None:
    raw = mnist.load_mnist(REAL_DIR, as_float=False, download=False)
    scaled = mnist.load_mnist(REAL_DIR, download=False)
    assert raw.train.images.dtype == np.uint8
    assert raw.train.images.max() == 255
    np.testing.assert_array_equal(scaled.test.images, raw.test.images.astype(np.float32) / 255)
    # Known first labels of the canonical files.
    assert raw.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert raw.validation.labels[:5].tolist() == [7, 2, 1, 0, 4]


@needs_real
def test_load_mnist_altered_copy_raises_checksum_error(tmp_path: Path) -> None:
    directory = real_copy(tmp_path, except_=TEST_LABELS)
    labels = bytearray(gzip.decompress((REAL_DIR / TEST_LABELS).read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one altered label, header intact
    (directory / TEST_LABELS).write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*SHA-256 ff7bcfd4") as err:
        mnist.load_mnist(directory, download=False)
    assert "found" in str(err.value) and mnist.ENV_VAR in str(err.value)


@needs_real
def test_load_mnist_downloads_missing_file_with_verification(tmp_path: Path) -> None:
    directory = real_copy(tmp_path, except_=TEST_LABELS)
    urls = []

    def fetch(url: str, destination: Path) -> None:
        urls.append(url)
        shutil.copyfile(REAL_DIR / TEST_LABELS, destination)

    splits = mnist.load_mnist(directory, download=True, fetch=fetch)
    assert urls == [mnist.MIRRORS[0] + TEST_LABELS]
    assert (directory / TEST_LABELS).is_file()
    assert len(splits.test) == 5_000


# ---------------------------------------------------------------------------------------------
# Broken or missing files (synthetic, always run)
# ---------------------------------------------------------------------------------------------


def test_load_mnist_missing_file_without_download_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        mnist.load_mnist(tmp_path, download=False)
    message = str(err.value)
    assert TRAIN_IMAGES in message and "no such file" in message
    assert mnist.ENV_VAR in message and "download=True" in message


def test_load_mnist_offline_download_raises_dataset_error(tmp_path: Path) -> None:
    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("Network is unreachable")

    with pytest.raises(DatasetError, match=r"download failed.*Network is unreachable"):
        mnist.load_mnist(tmp_path, fetch=offline)
    assert list(tmp_path.iterdir()) == []  # no partial files left behind


def test_load_mnist_rejects_a_bad_download(tmp_path: Path) -> None:
    def garbage(url: str, destination: Path) -> None:
        destination.write_bytes(b"<html>not found</html>")

    with pytest.raises(DatasetError, match=r"download failed.*gzip"):
        mnist.load_mnist(tmp_path, fetch=garbage)
    assert not (tmp_path / TRAIN_IMAGES).exists()


def test_load_mnist_valid_header_wrong_content_raises_checksum_error(tmp_path: Path) -> None:
    write_idx(tmp_path / TRAIN_IMAGES, (60_000, 28, 28))  # all-black images
    with pytest.raises(DatasetError) as err:
        mnist.load_mnist(tmp_path, download=False)
    message = str(err.value)
    assert TRAIN_IMAGES in message
    assert mnist.MNIST_FILES[TRAIN_IMAGES] in message  # expected
    assert "found" in message and "47040016 bytes" in message  # found


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", (10,), magic=0x00000803)
    with pytest.raises(
        DatasetError, match=r"labels\.gz: expected IDX magic 0x00000801.*0x00000803"
    ):
        mnist.read_idx(path, expected_shape=(10,))


def test_read_idx_wrong_dimensions(tmp_path: Path) -> None:
    path = write_idx(tmp_path / TRAIN_IMAGES, (10, 28, 28))
    with pytest.raises(
        DatasetError, match=r"expected dimensions 60000 x 28 x 28.*found 10 x 28 x 28"
    ):
        mnist.read_idx(path, expected_shape=(60_000, 28, 28))


def test_read_idx_truncated_content(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.gz", (10, 28, 28), data=bytes(10 * 28 * 28 - 5))
    with pytest.raises(DatasetError, match=r"declares 10 x 28 x 28 -> 7856 bytes.*7851.*truncated"):
        mnist.read_idx(path, expected_shape=(10, 28, 28))


def test_read_idx_trailing_data(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", (10,), data=bytes(11))
    with pytest.raises(DatasetError, match="trailing data"):
        mnist.read_idx(path, expected_shape=(10,))


def test_read_idx_short_header(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00"))
    with pytest.raises(DatasetError, match="expected a 16-byte IDX header, found only 6 bytes"):
        mnist.read_idx(path, expected_shape=(1, 28, 28))


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "labels.gz", (1000,), data=bytes(range(256)) * 3 + bytes(232))
    good.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"labels\.gz: expected a gzip-compressed IDX file"):
        mnist.read_idx(good, expected_shape=(1000,))


def test_read_idx_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.gz"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(DatasetError, match="do not decompress"):
        mnist.read_idx(path)


def test_read_idx_parses_a_valid_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "ok.gz", (2, 3), data=bytes([1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(mnist.read_idx(path, (2, 3)), [[1, 2, 3], [4, 5, 6]])


def test_default_mnist_dir_honours_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path))
    assert mnist.default_mnist_dir() == tmp_path
    monkeypatch.delenv(mnist.ENV_VAR)
    assert mnist.default_mnist_dir().parts[-2:] == ("data", "mnist")
