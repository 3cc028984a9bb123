"""Where the datasets live.

The data folder is, in order: the explicit argument (the ``--data-dir`` option),
then ``$MINIDNI_DATA``, then the user cache folder ``$XDG_CACHE_HOME/minidni``
(``~/.cache/minidni`` when XDG_CACHE_HOME is unset). Inside it::

    mnist/train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
          t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    ptb/ptb.{train,valid,test}.txt    ptb.char.{train,valid,test}.txt
    cifar-10-batches-py/data_batch_1 .. data_batch_5  test_batch  batches.meta

(the layout of ``../shared/data``, so ``--data-dir ../shared/data`` works as is).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MINIDNI_DATA"

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PTB_SPLITS = ("train", "valid", "test")
PTB_WORD_FILES = tuple(f"ptb.{s}.txt" for s in PTB_SPLITS)
PTB_CHAR_FILES = tuple(f"ptb.char.{s}.txt" for s in PTB_SPLITS)
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/minidni`` or ``~/.cache/minidni``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "minidni"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$MINIDNI_DATA`` if set, else :func:`cache_dir`.

    Returns an absolute path (so error messages name full paths); the folder need not
    exist yet (downloads create it).
    """
    if data_dir is not None:
        chosen = Path(data_dir)
    elif os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = cache_dir()
    return Path(os.path.abspath(chosen.expanduser()))


def describe_resolution() -> str:
    """One sentence on how the data folder is chosen (for error messages)."""
    return f"the data folder is --data-dir, else ${ENV_VAR}, else {cache_dir()}"
