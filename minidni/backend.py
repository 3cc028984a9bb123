"""The array-module switch: the only module in minidni that imports CuPy.

Every op takes its array module from its inputs (``xp = get_xp(x, W)``), so one
code path runs on NumPy (CPU) and CuPy (NVIDIA GPU). Which module *new* arrays
are made on is the selected backend, chosen by name:

    >>> from minidni import backend
    >>> backend.set_backend("numpy")          # or "cupy", or MINIDNI_BACKEND=cupy
    >>> W = backend.to_device(host_array)     # host -> selected backend
    >>> backend.to_numpy(W)                   # any backend -> host

Data crosses between host and device only at the edges (loaders, logging,
checkpoints) through ``to_device``/``to_numpy``. Mixing NumPy and CuPy arrays in
one op raises :class:`BackendError`; nothing is ever copied silently.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

import numpy

BACKENDS = ("numpy", "cupy")
ENV_VAR = "MINIDNI_BACKEND"
CUPY_INSTALL_HINT = (
    'install it with `pip install -e ".[gpu]"` (CUDA 12, cupy-cuda12x) or '
    '`pip install cupy-cuda13x` (CUDA 13) on a machine with an NVIDIA GPU'
)


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used, or arrays from two backends met."""


_selected: ModuleType | None = None


def _import_cupy() -> ModuleType:
    """Return the cupy module if it is installed and sees a GPU, else raise BackendError."""
    try:
        import cupy  # noqa: PLC0415  (the one place cupy is imported)
    except ImportError:
        raise BackendError(f"backend 'cupy' is not installed: {CUPY_INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver/runtime errors have several types
        raise BackendError(f"backend 'cupy' is installed but no GPU is usable ({exc}); {CUPY_INSTALL_HINT}") from None
    if count < 1:
        raise BackendError(f"backend 'cupy' is installed but no GPU is visible; {CUPY_INSTALL_HINT}")
    return cupy


def cupy_available() -> bool:
    """True when CuPy is installed and at least one GPU is visible."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def set_backend(name: str) -> ModuleType:
    """Select the backend new arrays are made on; returns its array module.

    ``name`` is ``"numpy"`` or ``"cupy"``. Asking for CuPy where it is missing or
    no GPU is visible raises a one-line :class:`BackendError` with the install hint.
    """
    global _selected
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _selected = numpy if name == "numpy" else _import_cupy()
    return _selected


def get_backend() -> ModuleType:
    """The selected array module (first use reads ``MINIDNI_BACKEND``, default numpy)."""
    if _selected is None:
        return set_backend(os.environ.get(ENV_VAR, "numpy") or "numpy")
    return _selected


def backend_name(xp: ModuleType | None = None) -> str:
    """``"numpy"`` or ``"cupy"`` for ``xp`` (default: the selected backend)."""
    return "numpy" if (xp or get_backend()) is numpy else "cupy"


def _is_cupy_array(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def get_xp(*arrays: Any) -> ModuleType:
    """The array module of ``arrays`` (``None`` and Python scalars are ignored).

    NumPy arrays give ``numpy``, CuPy arrays give ``cupy``; a NumPy array mixed with
    CuPy arrays raises :class:`BackendError` (a NumPy scalar, e.g. ``numpy.float32(2)``,
    is a scalar to CuPy too). With no arrays at all, the selected backend.
    """
    has_cupy = has_numpy = has_numpy_scalar = False
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool)):
            continue
        if _is_cupy_array(a):
            has_cupy = True
        elif isinstance(a, numpy.ndarray):
            has_numpy = True
        elif isinstance(a, numpy.generic):
            has_numpy_scalar = True
    if has_cupy and has_numpy:
        raise BackendError(
            "arrays from NumPy and CuPy were mixed in one op; move them to one backend "
            "with minidni.backend.to_device or to_numpy first"
        )
    if has_cupy:
        return sys.modules.get("cupy") or _import_cupy()  # no device query per op: the array exists
    if has_numpy or has_numpy_scalar:
        return numpy
    return get_backend()


def to_device(a: Any, xp: ModuleType | None = None) -> Any:
    """Copy a host array (or nested dict/list of them) onto ``xp`` (default: selected backend)."""
    xp = xp or get_backend()
    if isinstance(a, dict):
        return {k: to_device(v, xp) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(to_device(v, xp) for v in a)
    if a is None:
        return None
    if xp is numpy:
        return to_numpy(a)
    return xp.asarray(a)


def to_numpy(a: Any) -> Any:
    """Copy any array (or nested dict/list of them) to a NumPy array on the host."""
    if isinstance(a, dict):
        return {k: to_numpy(v) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(to_numpy(v) for v in a)
    if a is None:
        return None
    if _is_cupy_array(a):
        return a.get()
    return numpy.asarray(a)


def synchronize(xp: ModuleType | None = None) -> None:
    """Wait for the GPU work queued on the current stream (a no-op on NumPy): a host sync,
    so only where the host needs a result anyway (log, evaluation, checkpoint), never per step."""
    xp = xp or get_backend()
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()
