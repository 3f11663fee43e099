"""MNIST from the four original IDX files, checked byte for byte, in the notebook's split.

The files are read from a directory (argument, else ``$MLDM_MNIST_DIR``, else
``../shared/data/mnist`` next to the repository, else ``data/mnist/``), and downloaded there from
the canonical mirrors when missing and the machine is online. Each file's decompressed content
must have the canonical SHA-256 and a strictly valid IDX header; anything else raises
:class:`~data.errors.DatasetError` naming the file, what was expected, what was found and how to
get the data.

Split (the notebook's): the 60,000 training images; of the 10,000 test images the first 5,000
are the validation set and the last 5,000 the test set (``test_full`` keeps all 10,000).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import shutil
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from data.errors import DatasetError

__all__ = [
    "ENV_VAR",
    "MIRRORS",
    "MNIST_FILES",
    "DatasetError",
    "MnistSplits",
    "Split",
    "default_mnist_dir",
    "load_mnist",
    "read_idx",
]

ENV_VAR: Final = "MLDM_MNIST_DIR"

#: The four files and the SHA-256 of their *decompressed* content (the gzip wrappers may differ).
MNIST_FILES: Final[dict[str, str]] = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Expected IDX shape of each file.
_SHAPES: Final[dict[str, tuple[int, ...]]] = {
    "train-images-idx3-ubyte.gz": (60_000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60_000,),
    "t10k-images-idx3-ubyte.gz": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10_000,),
}

#: Where the files are downloaded from, tried in order (yann.lecun.com no longer serves them).
MIRRORS: Final = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

_DOWNLOAD_TIMEOUT_S = 10.0
_VALIDATION_SIZE = 5_000
_IDX_UINT8 = 0x08

_REPO_ROOT = Path(__file__).resolve().parent.parent

#: ``fetch(url, destination)`` writes the body of ``url`` to the file ``destination``.
Fetcher = Callable[[str, Path], None]


def default_mnist_dir() -> Path:
    """``$MLDM_MNIST_DIR`` if set; else ``<repo>/../shared/data/mnist`` if it exists; else
    ``<repo>/data/mnist`` (git-ignored, where downloads go)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    shared = _REPO_ROOT.parent / "shared" / "data" / "mnist"
    if shared.is_dir():
        return shared
    return _REPO_ROOT / "data" / "mnist"


@dataclass(frozen=True, eq=False)
class Split:
    """One part of MNIST: ``images`` (N, 28, 28, 1), uint8 or float32 in [0, 1]; ``labels``
    int64 (N,) in 0..9."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class MnistSplits:
    """The notebook's split: ``train`` (60,000), ``validation`` (the first 5,000 test images) and
    ``test`` (the last 5,000); ``test_full`` is all 10,000 test images (validation + test), on
    which the classifier's accuracy is usually quoted."""

    train: Split
    validation: Split
    test: Split
    test_full: Split


def _how_to_get(directory: Path) -> str:
    return (
        f"To get the data, put the four original MNIST files ({', '.join(MNIST_FILES)}) in "
        f"{directory}, or set {ENV_VAR} to a folder that has them (on the build machines: "
        "../shared/data/mnist), or call load_mnist(download=True) on a machine with internet "
        "access."
    )


def read_idx(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Parse a gzip-compressed IDX file of unsigned bytes strictly; return a read-only uint8
    array. The checksum is not checked here (see :func:`load_mnist`)."""
    path = Path(path)
    return _parse_idx(path, _decompress(path), expected_shape)


def _decompress(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            compressed = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    try:
        return gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: expected a gzip-compressed IDX file, found {len(compressed)} bytes that "
            f"do not decompress ({type(exc).__name__}: {exc}); the file is truncated or corrupted"
        ) from None


def _parse_idx(path: Path, raw: bytes, expected_shape: tuple[int, ...] | None) -> np.ndarray:
    if len(raw) < 4:
        raise DatasetError(
            f"{path}: expected an IDX header (at least 4 bytes), found {len(raw)} bytes"
        )
    zero, dtype_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    expected_ndim = len(expected_shape) if expected_shape is not None else ndim
    expected_magic = (_IDX_UINT8 << 8) | expected_ndim
    magic = int.from_bytes(raw[0:4], "big")
    if zero != 0 or dtype_code != _IDX_UINT8 or ndim != expected_ndim or ndim == 0:
        raise DatasetError(
            f"{path}: expected IDX magic 0x{expected_magic:08x} (unsigned bytes, "
            f"{expected_ndim} dimensions), found 0x{magic:08x}"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(
            f"{path}: expected a {header_size}-byte IDX header, found only {len(raw)} bytes"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and shape != expected_shape:
        raise DatasetError(
            f"{path}: expected dimensions {_dims(expected_shape)} in the IDX header, "
            f"found {_dims(shape)}"
        )
    expected_bytes = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected_bytes:
        raise DatasetError(
            f"{path}: the IDX header declares {_dims(shape)} -> {expected_bytes} bytes in all, "
            f"found {len(raw)} decompressed bytes ("
            + ("truncated" if len(raw) < expected_bytes else "trailing data")
            + ")"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
    return array  # frombuffer on bytes: read-only


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape)


def _load_file(directory: Path, name: str) -> np.ndarray:
    """Parse and verify one file; cached per process on (path, size, mtime)."""
    path = directory / name
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file. {_how_to_get(directory)}") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    raw = _decompress(path)
    array = _parse_idx(path, raw, _SHAPES[name])
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_FILES[name]:
        raise DatasetError(
            f"{path}: expected decompressed content with SHA-256 {MNIST_FILES[name]}, found "
            f"{digest} ({len(raw)} bytes); the file is altered or not the original MNIST. "
            f"Replace it with the original. {_how_to_get(directory)}"
        )
    with _CACHE_LOCK:
        _CACHE[key] = array
    return array


_CACHE: dict[tuple[str, int, int], np.ndarray] = {}
_CACHE_LOCK = threading.Lock()


def _urllib_fetch(url: str, destination: Path) -> None:
    with (
        urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        destination.open("wb") as f,
    ):
        shutil.copyfileobj(response, f)


def _download(directory: Path, name: str, fetch: Fetcher) -> None:
    """Fetch ``name`` from the first mirror that serves a verified copy, into ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"{directory / name}: missing, and cannot create {directory} to download it ({exc}). "
            + _how_to_get(directory)
        ) from None
    failures = []
    for mirror in MIRRORS:
        url = mirror + name
        tmp = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        try:
            fetch(url, tmp)
            raw = _decompress(tmp)
            _parse_idx(tmp, raw, _SHAPES[name])
            digest = hashlib.sha256(raw).hexdigest()
            if digest != MNIST_FILES[name]:
                raise DatasetError(f"SHA-256 {digest}, expected {MNIST_FILES[name]}")
            os.replace(tmp, directory / name)
            return
        except (OSError, urllib.error.URLError, ValueError, TimeoutError) as exc:
            # DatasetError is an OSError: a bad download just moves on to the next mirror.
            failures.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"{directory / name}: missing, and the download failed ("
        + "; ".join(failures)
        + "). "
        + _how_to_get(directory)
    )


def load_mnist(
    directory: str | Path | None = None,
    *,
    as_float: bool = True,
    download: bool = True,
    fetch: Fetcher | None = None,
) -> MnistSplits:
    """Load MNIST in the notebook's split, verified against the canonical checksums.

    ``directory``: where the four ``.gz`` files are (default :func:`default_mnist_dir`).
    ``as_float``: images as float32 in [0, 1] (pixel / 255); else the raw uint8.
    ``download``: fetch missing files from :data:`MIRRORS` into ``directory`` (verified before
    they are kept); ``fetch`` replaces the HTTP download (tests pass a fake).
    Images have shape (N, 28, 28, 1), labels are int64 (N,). Raises :class:`DatasetError`.
    """
    directory = Path(directory) if directory is not None else default_mnist_dir()
    for name in MNIST_FILES:
        if download and not (directory / name).exists():
            _download(directory, name, fetch or _urllib_fetch)
    arrays = {name: _load_file(directory, name) for name in MNIST_FILES}

    def images(name: str) -> np.ndarray:
        raw = arrays[name][..., np.newaxis]
        if as_float:
            scaled = raw.astype(np.float32)
            scaled /= np.float32(255)  # in place: no second 200 MB temporary
            return scaled
        return raw.copy()

    def labels(name: str) -> np.ndarray:
        return arrays[name].astype(np.int64)

    train = Split(images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"))
    test_full = Split(images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))
    return MnistSplits(
        train=train,
        validation=Split(test_full.images[:_VALIDATION_SIZE], test_full.labels[:_VALIDATION_SIZE]),
        test=Split(test_full.images[_VALIDATION_SIZE:], test_full.labels[_VALIDATION_SIZE:]),
        test_full=test_full,
    )
