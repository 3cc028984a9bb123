"""Writing results so that an interrupted run loses nothing it already wrote.

Every file is written to a temporary name in the same folder, flushed to disk,
then renamed over the target (``os.replace`` is atomic on POSIX and Windows), so
a reader sees either the old file or the new one, never half of one. Files get
the permissions the user's umask gives (as ``open`` would), not ``mkstemp``'s 0600.

A checkpoint is one file (:func:`save_checkpoint`): its arrays and its JSON
metadata travel together in one ``.npz``, so no interruption can leave arrays
of one step beside metadata of another.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


META_KEY = "__meta__"  # the checkpoint's JSON metadata, stored as a 0-d string array


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or not a minidni checkpoint; names the file."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    """Turn NumPy scalars/arrays and paths into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def portable_paths(obj: Any, start: str | os.PathLike = ".") -> Any:
    """``obj`` (a string, a list of command-line words, a dict of options...) with every absolute path in it
    written relative to ``start``, so that committed tables and JSON name no folder of the machine that made them."""
    if isinstance(obj, dict):
        return {k: portable_paths(v, start) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable_paths(v, start) for v in obj)
    if isinstance(obj, (str, Path)) and os.path.isabs(obj):
        return os.path.relpath(obj, start)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NumPy values converted)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=True) + "\n"
    return _atomic_write(path, lambda f: f.write(text), "w")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file (markdown tables, logs)."""
    return _atomic_write(path, lambda f: f.write(text), "w")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write raw bytes (a file a grid's Ray task returned)."""
    return _atomic_write(path, lambda f: f.write(data), "wb")


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write a dict of host arrays as an ``.npz`` checkpoint."""
    return _atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_arrays` into a dict of host arrays."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed even if np.load fails
        return {k: z[k] for k in z.files}


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Atomically write host ``arrays`` and JSON-able ``meta`` as one ``.npz`` file."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved for the checkpoint's metadata")
    text = json.dumps(_jsonable(meta), sort_keys=True, allow_nan=True)
    return save_arrays(path, {**arrays, META_KEY: np.array(text)})


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``.

    Raises :class:`CheckpointError` (one line naming the file) when it is missing,
    truncated, or has no metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        arrays = load_arrays(path)
        meta = json.loads(str(arrays.pop(META_KEY)))
    except KeyError:
        raise CheckpointError(f"{path} is not a minidni checkpoint (no {META_KEY} entry); "
                              "delete it or choose another --out") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                              "delete it to start again, or choose another --out") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object; delete it or choose another --out")
    return arrays, meta


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Atomically save a matplotlib figure as PNG."""
    return _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"), "wb")
