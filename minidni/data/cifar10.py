"""CIFAR-10 from the official "python version" batch files.

Each batch (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``) is a pickled dict
with ``b"data"`` (N, 3072) uint8 (1024 red, then green, then blue values, row-major
32x32) and ``b"labels"`` (N ints in 0..9); ``batches.meta`` holds ``b"label_names"``.
The pickles were written by Python 2, so they are read with ``encoding="bytes"``.

Unpickling can run arbitrary code, so the reader only lets through the few NumPy
objects an array needs; anything else is a :class:`DataError`. The batch files are not
checksummed (the tarball's MD5 is checked when downloading); their structure is.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from minidni.data import DataError
from minidni.data.download import ensure_files
from minidni.data.paths import CIFAR10_DIR, CIFAR10_FILES, resolve_data_dir

_RECONSTRUCT = np.zeros(1).__reduce_ex__(2)[0]   # NumPy's array-unpickling functions (protocol 2
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]    # as in the official files, and protocol 5)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class CIFAR10(NamedTuple):
    """x_* (N, 3, 32, 32) float in [0, 1], y_* (N,) int64 in 0..9 (class names: LABEL_NAMES)."""
    x_train: np.ndarray   # (50000, 3, 32, 32)
    y_train: np.ndarray   # (50000,)
    x_test: np.ndarray    # (10000, 3, 32, 32)
    y_test: np.ndarray    # (10000,)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({exc or type(exc).__name__}); "
                        f"replace it with the original") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return obj


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 3, 32, 32) uint8 and labels (N,) int64, structure-checked."""
    path = Path(path)
    d = _unpickle(path)
    data, labels = d.get(b"data"), d.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' is {what}, expected a uint8 array (N, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' is not a list of integers") from None
    if y.shape != (len(data),):
        raise DataError(f"{path}: {y.shape} labels for {len(data)} images")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels must be 0..9, found {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y


def read_label_names(path: str | os.PathLike) -> tuple[str, ...]:
    """``batches.meta`` -> the 10 class names."""
    path = Path(path)
    names = _unpickle(path).get(b"label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"{path}: b'label_names' is not a list of 10 names")
    return tuple(n.decode("ascii", "replace") for n in names)


def load_cifar10(data_dir: str | os.PathLike | None = None, *, dtype=np.float32,
                 download: bool = True) -> CIFAR10:
    """Load CIFAR-10 as channel-first images in [0, 1].

    Args:
        data_dir: the data folder (None: ``$MINIDNI_DATA``, then the user cache folder);
            the batches are read from ``data_dir/cifar-10-batches-py/``.
        dtype: floating dtype of the images (float32: 50000 x 3072 x 4 bytes = 614 MB).
        download: fetch the 170 MB tarball when files are missing (MD5-checked).

    Returns:
        :class:`CIFAR10` with x_train (50000, 3, 32, 32), y_train (50000,) int64,
        x_test (10000, 3, 32, 32), y_test (10000,) int64. ``batches.meta`` must name the
        classes as :data:`LABEL_NAMES` (the label order the ids follow).
    """
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype={np.dtype(dtype)} is not a floating dtype (use float32 or float64)")
    root = resolve_data_dir(data_dir)
    ensure_files(root, [f"{CIFAR10_DIR}/{n}" for n in CIFAR10_FILES], download=download)
    folder = root / CIFAR10_DIR
    train = [read_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = read_batch(folder / "test_batch")
    names = read_label_names(folder / "batches.meta")
    if names != LABEL_NAMES:
        raise DataError(f"{folder / 'batches.meta'} names the classes {names}, expected {LABEL_NAMES}")

    def scale(x: np.ndarray) -> np.ndarray:
        out = x.astype(dtype)
        out /= 255
        return out

    return CIFAR10(scale(np.concatenate([x for x, _ in train])), np.concatenate([y for _, y in train]),
                   scale(x_test), y_test)
