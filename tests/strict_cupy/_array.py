"""The device array, ufuncs and wrapped functions of the stand-in, each holding NumPy inside.

Rules (those real CuPy enforces, each with a test in tests/test_strict_cupy.py):

- ``ndarray`` is not a ``numpy.ndarray``; ``numpy.asarray``/``numpy.array``/``__array__``
  on it raise TypeError (real CuPy: "Implicit conversion to a NumPy array is not allowed").
- A host ``numpy.ndarray`` given to a device op, a ufunc, a function or ``out=`` raises
  TypeError; so does ``dev[...] = host_array`` (only ``cupy.asarray``/``cupy.array``/
  ``ndarray.set`` take host arrays). Host arrays used as *indices* are copied over, as in CuPy.
- ``dev[idx] = values`` with an index that names an element twice raises (CuPy leaves which
  write lands undefined, and so ``dev[idx] += v`` loses updates): ``cupy.add.at`` is the way.
- An ``out=`` (or an in-place operator) that overlaps an input other than as the same array
  raises: NumPy buffers the overlap, a GPU kernel races (``x[1:] += x[:-1]``, ``x -= x[0]``).
- Reductions and scalar indexing give 0-d device arrays, never host scalars.
- Methods and functions bind their arguments against real CuPy's signatures (cupy_names.json).
- Host syncs are recorded (:mod:`strict_cupy._syncs`); floating-point warnings are not raised
  (a GPU kernel never warns).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy

from ._syncs import SYNCS

_TABLE = json.loads(Path(__file__).with_name("cupy_names.json").read_text())
VERSION = _TABLE["cupy_version"]
NAMES: dict[str, dict] = _TABLE["namespaces"]
_SIGNATURES: dict[str, inspect.Signature | None] = {}


def _signature(qualname: str, spec: list | None) -> inspect.Signature | None:
    if qualname not in _SIGNATURES:
        if spec is None:
            _SIGNATURES[qualname] = None
        else:
            empty = inspect.Parameter.empty
            _SIGNATURES[qualname] = inspect.Signature([
                inspect.Parameter(name, getattr(inspect.Parameter, kind), default=None if has_default else empty)
                for name, kind, has_default in spec])
    return _SIGNATURES[qualname]


def check_call(qualname: str, spec: list | None, args: tuple, kwargs: dict) -> None:
    """Raise TypeError when real CuPy's signature of ``qualname`` would refuse ``args, kwargs``."""
    sig = _signature(qualname, spec)
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"strict CuPy: {qualname}{sig} (real CuPy {VERSION}) refuses this call: {exc}") from None


def host_array_error(where: str, a: numpy.ndarray) -> TypeError:
    return TypeError(f"strict CuPy: a host numpy.ndarray (shape {a.shape}, {a.dtype}) was given to {where}; "
                     "real CuPy refuses it (Unsupported type <class 'numpy.ndarray'>): move it to the device "
                     "first (cupy.asarray / minidni.backend.to_device)")


def unwrap(x, where: str, seen: dict):
    """Device arrays -> their NumPy data (remembered in ``seen``); a host ndarray -> TypeError."""
    if type(x) is ndarray:
        seen[id(x._a)] = x
        return x._a
    if isinstance(x, numpy.ndarray):
        raise host_array_error(where, x)
    if type(x) in (list, tuple):
        return type(x)(unwrap(v, where, seen) for v in x)
    return x


def _unwrap_index(key):
    """Index keys: device arrays unwrapped; host arrays and lists allowed (CuPy copies them over)."""
    if type(key) is ndarray:
        return key._a
    if type(key) is tuple:
        return tuple(_unwrap_index(k) for k in key)
    return key


def _base_of(r: numpy.ndarray, seen: dict):
    """The device array owning the memory of the view ``r``, if it is one of the inputs (or their base)."""
    for w in seen.values():
        for candidate in (w, w._base):
            if candidate is not None and candidate._a is r.base:
                return candidate
    return None


def _repeats_a_target(shape: tuple, key) -> bool:
    """True when an advanced index ``key`` (integer arrays or lists) names some element twice."""
    parts = key if type(key) is tuple else (key,)
    if not any(isinstance(k, (numpy.ndarray, list)) and numpy.asarray(k).dtype.kind in "iu" for k in parts):
        return False
    targets = numpy.arange(numpy.prod(shape, dtype=numpy.int64)).reshape(shape)[key].ravel()
    return numpy.unique(targets).size != targets.size


def wrap(r, seen: dict):
    """NumPy results -> device arrays (the same wrapper where NumPy returned an input, e.g. ``out=``;
    a view's ``base`` is the device array it views, as in CuPy)."""
    if isinstance(r, numpy.ndarray):
        known = seen.get(id(r))
        if known is not None and known._a is r:
            return known
        return _device(r, _base_of(r, seen) if r.base is not None else None)
    if isinstance(r, numpy.generic):
        return _device(numpy.asarray(r))
    if type(r) in (tuple, list):
        return type(r)(wrap(v, seen) for v in r)
    return r


def _device(a: numpy.ndarray, base: "ndarray | None" = None) -> "ndarray":
    obj = ndarray.__new__(ndarray)
    obj._a, obj._base = a, base
    return obj


def _from_pickle(a: numpy.ndarray) -> "ndarray":
    return _device(a)


def _arrays(x) -> list:
    if isinstance(x, numpy.ndarray):
        return [x]
    return [a for v in x for a in _arrays(v)] if type(x) in (list, tuple) else []


def _check_overlap(where: str, args: tuple, out, elementwise: bool) -> None:
    """An ``out=`` that shares memory with an input, other than as the very same view of an
    elementwise op (``a += b``), is a data race on a GPU: NumPy buffers it, CuPy does not."""
    for o in _arrays(out):
        for a in _arrays(args):
            if numpy.may_share_memory(o, a) and numpy.shares_memory(o, a):  # (bounds first: cheap)
                same = (elementwise and a.shape == o.shape and a.strides == o.strides
                        and a.__array_interface__["data"][0] == o.__array_interface__["data"][0])
                if not same:
                    raise ValueError(f"strict CuPy: the output of {where} overlaps an input (shape {a.shape} "
                                     f"in {o.shape}) other than as the same array: NumPy buffers this, CuPy "
                                     "races (e.g. x[1:] += x[:-1], x -= x[0]); write into a new array")


def call_numpy(where: str, func, args: tuple, kwargs: dict, *, elementwise: bool = False):
    seen: dict = {}
    a = unwrap(args, where, seen)
    k = {key: unwrap(v, f"{where} ({key}=)", seen) for key, v in kwargs.items()}
    if k.get("out") is not None:
        _check_overlap(where, a, k["out"], elementwise)
    with numpy.errstate(all="ignore"):
        return wrap(func(*a, **k), seen)


class ufunc:
    """A CuPy ufunc: NumPy's of the same name, refusing host arrays (``out=`` included)."""

    __module__ = "cupy"

    def __init__(self, np_ufunc: numpy.ufunc) -> None:
        self._u = np_ufunc
        self.name = self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs, self.types = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs, np_ufunc.types

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        return call_numpy(f"cupy.{self.name}", self._u, args, kwargs, elementwise=self.name != "matmul")

    def reduce(self, *args, **kwargs):
        return call_numpy(f"cupy.{self.name}.reduce", self._u.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return call_numpy(f"cupy.{self.name}.accumulate", self._u.accumulate, args, kwargs)

    def reduceat(self, *args, **kwargs):
        return call_numpy(f"cupy.{self.name}.reduceat", self._u.reduceat, args, kwargs)

    def outer(self, *args, **kwargs):
        return call_numpy(f"cupy.{self.name}.outer", self._u.outer, args, kwargs)

    def at(self, a, indices, b=None):
        """Unbuffered in-place ``a[indices] op= b``; ``a`` and ``b`` on the device, indices as for ``[]``."""
        if type(a) is not ndarray:
            raise TypeError(f"strict CuPy: cupy.{self.name}.at needs a cupy.ndarray to update, got {type(a)}")
        idx = _unwrap_index(indices)
        args = () if b is None else (unwrap(b, f"cupy.{self.name}.at", {}),)
        with numpy.errstate(all="ignore"):
            self._u.at(a._a, idx, *args)


def _binary(name: str):
    def op(self, other):
        return UFUNCS[name](self, other)
    return op


def _reflected(name: str):
    def op(self, other):
        return UFUNCS[name](other, self)
    return op


def _inplace(name: str):
    def op(self, other):
        return UFUNCS[name](self, other, out=self)
    return op


def _unary(name: str):
    def op(self):
        return UFUNCS[name](self)
    return op


def _synced(kind: str, convert):
    def method(self, *args):
        SYNCS.record(kind)
        return convert(self._a, *args)
    return method


class ndarray:
    """A CuPy device array imitated on NumPy (``_a`` holds the data; views share it as in CuPy)."""

    __module__ = "cupy"
    __slots__ = ("_a", "_base", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = numpy.empty(shape, dtype, order=order)  # uninitialised, as cudaMalloc'd memory
        self._base = None

    # -- the rules at the host boundary --------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("strict CuPy: Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly (minidni.backend.to_numpy).")

    def __array_ufunc__(self, np_ufunc, method, *inputs, **kwargs):
        u = UFUNCS.get(np_ufunc.__name__)
        if u is None:
            return NotImplemented
        return u(*inputs, **kwargs) if method == "__call__" else getattr(u, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import module  # noqa: PLC0415  (the cupy module object, built after this class)

        target = module
        try:
            for part in func.__module__.split(".")[1:]:
                target = getattr(target, part)
            cupy_func = getattr(target, func.__name__)
        except AttributeError:
            return NotImplemented
        return cupy_func(*args, **kwargs)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """Copy to the host (a host sync)."""
        SYNCS.record(".get()")
        if out is not None:
            numpy.copyto(out, self._a)
            return out
        return numpy.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        """Copy the host array ``arr`` (same shape and dtype) into this array."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError(f"strict CuPy: ndarray.set needs a numpy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError(f"strict CuPy: ndarray.set: shape/dtype {arr.shape} {arr.dtype} differ from "
                             f"{self._a.shape} {self._a.dtype}")
        numpy.copyto(self._a, arr)

    def fill(self, value):
        if isinstance(value, (numpy.ndarray, list, tuple)):
            raise TypeError(f"strict CuPy: ndarray.fill takes a scalar, got {type(value).__name__}")
        self._a.fill(value._a if type(value) is ndarray else value)

    def item(self):
        SYNCS.record(".item()")
        return self._a.item()

    def tolist(self):
        SYNCS.record(".tolist()")
        return self._a.tolist()

    __float__ = _synced("float()", float)
    __int__ = _synced("int()", int)
    __bool__ = _synced("bool()", bool)
    __complex__ = _synced("complex()", complex)
    __repr__ = _synced("repr()", repr)
    __str__ = _synced("str()", str)
    __format__ = _synced("format()", format)

    # -- shape and indexing --------------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: wrap(self._a.T, {id(self._a): self}))
    mT = property(lambda self: wrap(self._a.mT, {id(self._a): self}))
    real = property(lambda self: wrap(self._a.real, {id(self._a): self}))
    imag = property(lambda self: wrap(self._a.imag, {id(self._a): self}))
    base = property(lambda self: self._base)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        seen = {id(self._a): self}
        return wrap(self._a[_unwrap_index(key)], seen)

    def __setitem__(self, key, value):
        if isinstance(value, (numpy.ndarray, list, tuple)):
            what = f"a host numpy.ndarray (shape {value.shape})" if isinstance(value, numpy.ndarray) else "a list"
            raise TypeError(f"strict CuPy: dev[...] = {what}: real CuPy refuses host values in "
                            "__setitem__; move the value to the device first (cupy.asarray / "
                            "minidni.backend.to_device)")
        key = _unwrap_index(key)
        if type(value) is ndarray and value.size > 1 and _repeats_a_target(self._a.shape, key):
            raise ValueError("strict CuPy: dev[idx] = array with repeated indices: which write lands is "
                             "undefined on CuPy (so is dev[idx] += v); use cupy.add.at(dev, idx, v)")
        with numpy.errstate(all="ignore"):
            self._a[key] = value._a if type(value) is ndarray else value

    def __reduce__(self):
        SYNCS.record("pickle")  # CuPy pickles the host copy: .get()
        return (_from_pickle, (numpy.array(self._a),))

    def __copy__(self):
        return _device(self._a.copy())

    def __deepcopy__(self, memo):
        return _device(self._a.copy())

    def __getattr__(self, name):
        spec = NAMES["ndarray"].get(name)
        if spec is None or name.startswith("__"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}"
                                 + (" (real CuPy has none)" if spec is None else " (not imitated)"))
        try:
            target = getattr(self._a, name)
        except AttributeError:
            raise AttributeError(f"strict CuPy does not imitate cupy.ndarray.{name}") from None
        if not callable(target):
            return wrap(target, {})
        where = f"cupy.ndarray.{name}"

        def method(*args, **kwargs):
            check_call(where, spec.get("signature"), args, kwargs)
            seen = {id(self._a): self}
            a = unwrap(args, where, seen)
            k = {key: unwrap(v, f"{where} ({key}=)", seen) for key, v in kwargs.items()}
            with numpy.errstate(all="ignore"):
                return wrap(target(*a, **k), seen)
        return method


_OPS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide", "floordiv": "floor_divide",
        "mod": "remainder", "pow": "power", "matmul": "matmul", "and": "bitwise_and", "or": "bitwise_or",
        "xor": "bitwise_xor", "lshift": "left_shift", "rshift": "right_shift"}
for _op, _name in _OPS.items():
    setattr(ndarray, f"__{_op}__", _binary(_name))
    setattr(ndarray, f"__r{_op}__", _reflected(_name))
    if f"__i{_op}__" in NAMES["ndarray"]:
        setattr(ndarray, f"__i{_op}__", _inplace(_name))
for _op, _name in {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                   "ge": "greater_equal"}.items():
    setattr(ndarray, f"__{_op}__", _binary(_name))
for _op, _name in {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}.items():
    setattr(ndarray, f"__{_op}__", _unary(_name))
ndarray.__divmod__ = lambda self, other: (self // other, self % other)

# every ufunc real CuPy has and NumPy has too
UFUNCS: dict[str, ufunc] = {name: ufunc(getattr(numpy, name)) for name, spec in NAMES[""].items()
                            if spec["kind"] == "ufunc" and isinstance(getattr(numpy, name, None), numpy.ufunc)}
