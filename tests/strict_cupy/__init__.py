"""strict_cupy: a NumPy-backed imitation of CuPy 14.2 that enforces CuPy's rules, for tests without a GPU.

Put it on the import path as ``cupy`` and minidni's ``--backend cupy`` runs through it::

    import strict_cupy
    with strict_cupy.installed() as cupy:       # sys.modules["cupy"] is the stand-in, one faked device
        backend.set_backend("cupy")
        ...
    strict_cupy.SYNCS.events                    # every host sync: kind, call site, region

What it enforces is listed in :mod:`strict_cupy._array` (device arrays are not NumPy
arrays; host arrays refused in device ops, ufuncs, ``out=`` and ``dev[...] = host``;
real CuPy's names and signatures only, from ``cupy_names.json`` made by
``make_names.py``); what counts as a host sync in :mod:`strict_cupy._syncs`.
What it cannot show: speed, memory, and kernels that behave differently on a GPU
(reduction order: results agree with NumPy to rounding, not bit for bit, on real CuPy).
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy

from . import _array, _cuda
from ._array import NAMES, UFUNCS, VERSION, call_numpy, check_call, ndarray, ufunc, unwrap
from ._syncs import SYNCS, Sync, SyncRecorder

__all__ = ["module", "installed", "install", "SYNCS", "Sync", "SyncRecorder", "set_device_count"]


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """Host -> device copy (device arrays pass through unless dtype/order ask for a copy)."""
    if type(a) is ndarray:
        return call_numpy("cupy.asarray", numpy.asarray, (a, dtype, order), {} if copy is None else {"copy": copy})
    return _array._device(numpy.array(unwrap(a, "cupy.asarray", {}) if type(a) in (list, tuple) else a,
                                      dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if type(obj) is ndarray:
        return call_numpy("cupy.array", numpy.array, (obj,), dict(dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    return _array._device(numpy.array(unwrap(obj, "cupy.array", {}) if type(obj) in (list, tuple) else obj,
                                      dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asanyarray(a, dtype=None, order=None, *, blocking=False):
    return asarray(a, dtype, order)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """Device -> host copy (a host sync); host arrays come back as they are."""
    if type(a) is ndarray:
        SYNCS.record("cupy.asnumpy")
        return a._a.copy(order=order) if out is None else (numpy.copyto(out, a._a), out)[1]
    return numpy.asarray(a, order=order)


def get_array_module(*args):
    return module if any(type(a) is ndarray for a in args) else numpy


def _function(name: str, func):
    where = f"cupy.{name}"
    spec = NAMES[""][name].get("signature")

    def wrapper(*args, **kwargs):
        check_call(where, spec, args, kwargs)
        return call_numpy(where, func, args, kwargs)
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__module__ = "cupy"
    wrapper.__doc__ = f"cupy.{name} imitated by numpy.{name} (host arrays refused)."
    return wrapper


def _resolve(name: str):
    """Build ``cupy.<name>`` on first use: NumPy's own object, a ufunc, or a wrapped function."""
    spec = NAMES[""].get(name)
    if spec is None:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (real CuPy {VERSION} has none)")
    if spec.get("numpy") or (spec["kind"] == "constant" and hasattr(numpy, name)):
        return getattr(numpy, name)
    if spec["kind"] == "ufunc" and name in UFUNCS:
        return UFUNCS[name]
    if spec["kind"] == "function" and callable(getattr(numpy, name, None)):
        return _function(name, getattr(numpy, name))
    raise AttributeError(f"strict CuPy does not imitate cupy.{name} (real CuPy has it; add it to tests/strict_cupy)")


def _module_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    value = _resolve(name)
    setattr(module, name, value)
    return value


def _build() -> types.ModuleType:
    cupy = types.ModuleType("cupy", "strict CuPy stand-in (tests/strict_cupy): NumPy inside, CuPy's rules outside")
    cupy.__version__ = VERSION
    cuda, runtime = _cuda.make_modules()
    for name, value in {"ndarray": ndarray, "ufunc": ufunc, "asarray": asarray, "array": array,
                        "asanyarray": asanyarray, "asnumpy": asnumpy, "get_array_module": get_array_module,
                        "cuda": cuda, "__getattr__": _module_getattr}.items():
        setattr(cupy, name, value)
    return cupy


module = _build()
_SUBMODULES = {"cupy": module, "cupy.cuda": module.cuda, "cupy.cuda.runtime": module.cuda.runtime}


def set_device_count(n: int) -> None:
    """How many devices ``cupy.cuda.runtime.getDeviceCount()`` reports (default 1)."""
    _cuda.DEVICE_COUNT[0] = n


def install(monkeypatch) -> types.ModuleType:
    """Put the stand-in into ``sys.modules`` as ``cupy`` for one test (undone by ``monkeypatch``)."""
    for name, mod in _SUBMODULES.items():
        monkeypatch.setitem(sys.modules, name, mod)
    set_device_count(1)
    SYNCS.clear()
    return module


@contextlib.contextmanager
def installed():
    """``with installed() as cupy:`` the stand-in is ``sys.modules["cupy"]`` inside the block."""
    saved = {name: sys.modules.get(name) for name in _SUBMODULES}
    sys.modules.update(_SUBMODULES)
    set_device_count(1)
    SYNCS.clear()
    try:
        yield module
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
