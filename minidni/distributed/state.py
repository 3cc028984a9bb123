"""Flat checkpoints of a trainer's pieces: every array a run needs to resume, keyed by owner.

A pipeline's stages each hold part of a :class:`~minidni.dni.feedforward.FeedForwardTrainer`;
their states are merged into one flat ``dict[str, numpy array]`` (what
:func:`minidni.io.save_arrays` writes) with keys that name the owner by its
GLOBAL module index, so a stage's keys never clash with another's and the
single-process trainer's state has exactly the same keys
(:func:`trainer_state`):

``m{i}.{k}``
    module ``f_i``: params and buffers (BatchNorm running statistics) of its
    :class:`~minidni.layers.Sequential`, keys ``"layer.name"``;
``m{i}.opt.{k}``
    its optimiser: Adam ``t`` (0-d), ``m.{param}``, ``v.{param}``; SGD ``velocity.{param}``;
``s{i}.*`` / ``in{i}.*``
    the synthesizer ``S_i`` on ``h_i`` / the synthetic-input model of module
    ``i`` (complete unlock): net, optimiser as above, and ``fits`` (0-d, the
    number of regressions so far, which decides warm-up).

Learning rates are not state: the run sets them from its schedule each step.

:func:`pack`/:func:`unpack` send a whole stage (or any object holding NumPy
arrays) to a worker and, there, onto its array module, keeping shared arrays
shared and views (the flat parameter buffers' views that layers hold) views;
:func:`on_backend` does both in one process.
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
from types import ModuleType

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.optim import SGD, Adam, Optimizer

__all__ = ["optimizer_state", "load_optimizer_state", "module_state", "load_module_state",
           "regressor_state", "load_regressor_state", "trainer_state", "subset", "pack", "unpack", "on_backend"]


def optimizer_state(opt: Optimizer | None) -> dict[str, np.ndarray]:
    """Host copies of an optimiser's moments (Adam ``t``, ``m.*``, ``v.*``; SGD ``velocity.*``)."""
    if opt is None:
        return {}
    if isinstance(opt, Adam):
        out = {"t": np.array(opt.t, dtype=np.int64)}
        out.update({f"m.{k}": np.array(to_numpy(v)) for k, v in opt.m.items()})
        out.update({f"v.{k}": np.array(to_numpy(v)) for k, v in opt.v.items()})
        return out
    if isinstance(opt, SGD):
        return {f"velocity.{k}": np.array(to_numpy(v)) for k, v in opt.velocity.items()}
    raise TypeError(f"no checkpoint format for optimiser {type(opt).__name__} (Adam and SGD have one)")


def _copy_into(target: dict, state: dict, prefix: str, what: str) -> None:
    missing, unexpected = target.keys() - state.keys(), state.keys() - target.keys()
    if missing or unexpected:
        raise ValueError(f"checkpoint of {what} does not match: missing {sorted(prefix + k for k in missing)}, "
                         f"unexpected {sorted(prefix + k for k in unexpected)}")
    for k, arr in target.items():
        value = state[k]
        if tuple(value.shape) != tuple(arr.shape):
            raise ValueError(f"checkpoint entry {prefix}{k} has shape {tuple(value.shape)}, expected {tuple(arr.shape)}")
        arr[...] = to_device(to_numpy(value), get_xp(arr)).astype(arr.dtype, copy=False)


def load_optimizer_state(opt: Optimizer | None, state: dict, *, prefix: str = "") -> None:
    """Copy :func:`optimizer_state` output back into ``opt`` (in place; keys and shapes must match)."""
    if opt is None:
        if state:
            raise ValueError(f"checkpoint has optimiser entries {sorted(prefix + k for k in state)} for a frozen module")
        return
    if isinstance(opt, Adam):
        if "t" not in state:
            raise ValueError(f"checkpoint entry {prefix}t (Adam's step count) is missing")
        moments = {k: v for k, v in state.items() if k != "t"}
        _copy_into({**{f"m.{k}": v for k, v in opt.m.items()}, **{f"v.{k}": v for k, v in opt.v.items()}},
                   moments, prefix, "an Adam optimiser")
        opt.t = int(state["t"])
    else:
        _copy_into({f"velocity.{k}": v for k, v in opt.velocity.items()}, state, prefix, "an SGD optimiser")


def _split(state: dict, prefix: str) -> tuple[dict, dict]:
    """(net entries, optimiser entries) of the keys under ``prefix``, with the prefix removed."""
    net, opt = {}, {}
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if rest.startswith("opt."):
                opt[rest[4:]] = value
            elif rest != "fits":
                net[rest] = value
    return net, opt


def module_state(i: int, module) -> dict[str, np.ndarray]:
    """State of module ``i`` (a :class:`~minidni.dni.feedforward.Module`) under ``m{i}.``."""
    out = {f"m{i}.{k}": v for k, v in module.net.state_dict().items()}
    out.update({f"m{i}.opt.{k}": v for k, v in optimizer_state(module.optimizer).items()})
    return out


def load_module_state(i: int, module, state: dict) -> None:
    net, opt = _split(state, f"m{i}.")
    module.net.load_state_dict(net)
    load_optimizer_state(module.optimizer, opt, prefix=f"m{i}.opt.")


def regressor_state(prefix: str, reg) -> dict[str, np.ndarray]:
    """State of a synthesizer or input model (net, optimiser, ``fits``) under ``prefix`` (e.g. ``"s0."``)."""
    out = {f"{prefix}{k}": v for k, v in reg.net.state_dict().items()}
    out.update({f"{prefix}opt.{k}": v for k, v in optimizer_state(reg.optimizer).items()})
    out[f"{prefix}fits"] = np.array(reg.fits, dtype=np.int64)
    return out


def load_regressor_state(prefix: str, reg, state: dict) -> None:
    if f"{prefix}fits" not in state:
        raise ValueError(f"checkpoint entry {prefix}fits is missing")
    net, opt = _split(state, prefix)
    reg.net.load_state_dict(net)
    load_optimizer_state(reg.optimizer, opt, prefix=f"{prefix}opt.")
    reg.fits = int(state[f"{prefix}fits"])


def trainer_state(trainer) -> dict[str, np.ndarray]:
    """The whole single-process trainer's state, with the same keys as a pipeline's checkpoint."""
    out = {}
    for i, m in enumerate(trainer.modules):
        out.update(module_state(i, m))
    for i, s in enumerate(trainer.synthesizers):
        out.update(regressor_state(f"s{i}.", s))
    for i, im in enumerate(trainer.input_models or [], start=1):
        out.update(regressor_state(f"in{i}.", im))
    return out


def subset(state: dict, prefixes) -> dict:
    """Entries of ``state`` whose key starts with one of ``prefixes``."""
    prefixes = tuple(prefixes)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}




def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory (``a`` itself if it owns it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _Packer(pickle.Pickler):
    """Pickles an object graph with its NumPy arrays set aside: each memory-owning array once, each view as
    (owner, element offset, shape), and every module (a ``FlatParams``' ``xp``) by name."""

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.owners: list = []
        self._index: dict = {}
        self._views: dict = {}  # id -> (number, the view: kept alive so that its id stays its own)

    def _owner_index(self, a: np.ndarray) -> int:
        if id(a) not in self._index:
            if not a.flags.c_contiguous:
                raise ValueError(f"cannot move an array that owns non-contiguous memory (shape {a.shape})")
            self._index[id(a)] = len(self.owners)
            self.owners.append(a)
        return self._index[id(a)]

    def persistent_id(self, obj):
        if isinstance(obj, ModuleType):
            return ("module", obj.__name__)
        if not isinstance(obj, np.ndarray):
            return None
        owner = _owner(obj)
        if owner is obj:
            return ("array", self._owner_index(obj))
        if not obj.flags.c_contiguous or obj.dtype != owner.dtype:
            raise ValueError(f"cannot move a non-contiguous or re-typed view (shape {obj.shape}) and keep it a view")
        offset = (obj.__array_interface__["data"][0] - owner.__array_interface__["data"][0]) // obj.itemsize
        number = self._views.setdefault(id(obj), (len(self._views), obj))[0]
        return ("view", number, self._owner_index(owner), int(offset), obj.shape)


class _Unpacker(pickle.Unpickler):
    """Rebuilds what :class:`_Packer` wrote with the owning arrays on ``xp`` and every view a view of its owner
    there; the module ``numpy`` (the array module a ``FlatParams`` keeps) becomes ``xp``."""

    def __init__(self, file, owners: list, xp: ModuleType):
        super().__init__(file)
        self.owners, self.xp, self.moved, self.views = owners, xp, {}, {}

    def _owner(self, i: int):
        if i not in self.moved:
            self.moved[i] = np.array(self.owners[i]) if self.xp is np else to_device(self.owners[i], self.xp)
        return self.moved[i]

    def persistent_load(self, pid):
        kind = pid[0]
        if kind == "module":
            return self.xp if pid[1] == "numpy" else importlib.import_module(pid[1])
        if kind == "array":
            return self._owner(pid[1])
        _, number, i, offset, shape = pid
        if number not in self.views:  # one view object per original view, as one array per original array
            self.views[number] = self._owner(i).reshape(-1)[offset:offset + math.prod(shape)].reshape(shape)
        return self.views[number]


def pack(obj) -> bytes:
    """``obj`` (a :class:`~minidni.distributed.stage.Stage`, a trainer, ...) as bytes for :func:`unpack`.

    Unlike plain pickling, arrays that are views (the flat parameter buffers of
    :mod:`minidni.flat`, whose views the layers hold) stay views of one buffer.
    """
    buffer = io.BytesIO()
    packer = _Packer(buffer)
    packer.dump(obj)
    return pickle.dumps((buffer.getvalue(), packer.owners), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes, xp: ModuleType = np):
    """The object :func:`pack` made, its arrays copied onto ``xp`` (``numpy`` or ``cupy``): an array that
    several owners share (a layer's param and its optimiser's view) is ONE array, a view stays a view."""
    graph, owners = pickle.loads(payload)
    return _Unpacker(io.BytesIO(graph), owners, xp).load()


def on_backend(obj, xp: ModuleType):
    """A copy of ``obj`` with every NumPy array copied onto ``xp``, sharing and views kept (:func:`unpack`)."""
    return unpack(pack(obj), xp)
