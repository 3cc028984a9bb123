"""MNIST from the four original IDX files.

IDX format (big-endian): bytes 0-1 are zero, byte 2 the element type (0x08 = uint8),
byte 3 the number of dimensions d, then d uint32 sizes, then the data. Images have
magic 2051 (0x00000803: uint8, 3 dims N x 28 x 28), labels 2049 (0x00000801: N).

Decoding all four files takes about a second, so nothing is cached on disk; the
SHA-256 verification is cached per process (:mod:`minidni.data.checksums`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minidni.data import DataError
from minidni.data.checksums import SHA256, verify_file
from minidni.data.download import ensure_files
from minidni.data.paths import MNIST_FILES, resolve_data_dir

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class MNIST(NamedTuple):
    """x_* (N, 784) float in [0, 1] (row-major 28x28 pixels), y_* (N,) int64 in 0..9."""
    x_train: np.ndarray   # (60000, 784)
    y_train: np.ndarray   # (60000,)
    x_test: np.ndarray    # (10000, 784)
    y_test: np.ndarray    # (10000,)


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Decode an IDX file (gzipped if the name ends in .gz) whose magic number must be ``magic``.

    Returns a uint8 array with the file's dimensions. Raises a one-line
    :class:`DataError` naming the file for a bad gzip stream, a wrong magic number,
    or a data section shorter or longer than the header says.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); replace it with the original") from None
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, too short for an IDX header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path} has magic number {got}, expected {magic} "
                        f"({'images' if magic == IMAGES_MAGIC else 'labels'} IDX file)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        raise DataError(f"{path} is {'truncated' if found < expected else 'too long'}: header says "
                        f"{'x'.join(map(str, dims))} = {expected} bytes of data, found {found}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _split(folder: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(folder / images, IMAGES_MAGIC)
    y = read_idx(folder / labels, LABELS_MAGIC)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{folder / images} holds images of shape {x.shape[1:]}, expected (28, 28)")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{folder / labels} has {y.shape} labels for {len(x)} images in {folder / images}")
    if y.size and y.max() > 9:
        raise DataError(f"{folder / labels} holds label {y.max()}, expected 0..9")
    return x, y


def load_mnist(data_dir: str | os.PathLike | None = None, *, dtype=np.float32, download: bool = True,
               verify: bool = True) -> MNIST:
    """Load MNIST as flat vectors in [0, 1].

    Args:
        data_dir: the data folder (None: ``$MINIDNI_DATA``, then the user cache folder);
            the files are read from ``data_dir/mnist/``.
        dtype: floating dtype of the images (float32 default; float64 for gradient checks).
        download: fetch missing files (see :mod:`minidni.data.download`; ``$MINIDNI_OFFLINE``
            turns it off).
        verify: check each file's SHA-256 against :data:`minidni.data.checksums.SHA256`
            (cached per process); False skips it (e.g. for generated test files).

    Returns:
        :class:`MNIST` with x_train (60000, 784), y_train (60000,) int64, x_test (10000, 784),
        y_test (10000,) int64.
    """
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype={np.dtype(dtype)} is not a floating dtype (use float32 or float64)")
    root = resolve_data_dir(data_dir)
    ensure_files(root, [f"mnist/{n}" for n in MNIST_FILES], download=download)
    folder = root / "mnist"
    if verify:
        for name in MNIST_FILES:
            verify_file(folder / name, SHA256[f"mnist/{name}"])
    arrays = []
    for images, labels in (MNIST_FILES[0:2], MNIST_FILES[2:4]):
        x, y = _split(folder, images, labels)
        x = x.reshape(len(x), -1).astype(dtype)
        x /= 255
        arrays += [x, y.astype(np.int64)]
    return MNIST(*arrays)
