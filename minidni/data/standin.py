"""MNIST when a folder has it, else a synthetic stand-in of the same shape (for notebooks and demos).

    x_train, y_train, x_test, y_test = mnist_or_standin(6000, 2000, folders=[os.environ.get("MINIDNI_DATA")])

The stand-in lets a notebook run anywhere: 10 classes, each a random binary
28x28 template with ``flip`` of its pixels flipped per image. Error rates on it
are not MNIST's; the function prints which data it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from minidni.data import DataError
from minidni.data.mnist import load_mnist

__all__ = ["mnist_or_standin"]


def mnist_or_standin(n_train: int, n_test: int, *, folders: Iterable[str | Path | None], flip: float = 0.43,
                     seed: int = 1):
    """``(x_train (n_train, 784) float32 in [0, 1], y_train (n_train,) int64, x_test, y_test)``.

    The first of ``folders`` (``None`` entries skipped) holding a usable
    ``mnist/`` (checksums verified, never downloaded) gives the first
    ``n_train`` / ``n_test`` MNIST images; if none does, the stand-in does.
    """
    if not (0.0 <= flip < 0.5):
        raise ValueError(f"flip must be in [0, 0.5) (the share of pixels flipped per image), got {flip!r}")
    for folder in folders:
        if folder and (Path(folder) / "mnist").is_dir():
            try:
                d = load_mnist(folder, download=False)
            except DataError as err:
                print(f"MNIST in {folder} is not usable ({err})")
                continue
            print(f"MNIST from {folder}: {n_train} training and {n_test} test images")
            return d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test]
    print("NOTE: MNIST not found (set MINIDNI_DATA); using a synthetic 10-class stand-in of the same shape: each "
          f"class is a random binary 28x28 template with {flip:.0%} of its pixels flipped. Error rates differ from MNIST.")
    gen = np.random.default_rng(seed)
    templates = gen.random((10, 784)) < 0.3
    labels = gen.integers(0, 10, n_train + n_test)
    images = (templates[labels] ^ (gen.random((n_train + n_test, 784)) < flip)).astype(np.float32)
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]
