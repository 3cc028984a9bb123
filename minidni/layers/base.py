"""The layer convention: parameters in dicts, caches returned, gradients as dicts.

A layer owns ``params`` (trainable arrays) and ``buffers`` (other state saved in
checkpoints, e.g. BatchNorm's running statistics), both ``dict[str, array]`` on
the selected backend. It never stores per-call state, so several minibatches
can be in flight at once (as DNI needs):

    >>> y, cache = layer.forward(x, train=True)
    >>> dx, grads = layer.backward(dy, cache)     # grads.keys() == layer.params.keys()
    >>> opt.step(grads)                            # updates layer.params in place

Parameters are initialised on the host from a ``numpy.random.Generator`` and
then moved with :func:`minidni.backend.to_device`, so NumPy and CuPy runs start
from identical weights. Optimisers and containers hold references to the
parameter arrays, so every update (including :meth:`Layer.load_state_dict`)
writes into the existing arrays instead of replacing them. A trainer may move a
layer's params into one flat buffer (:class:`minidni.flat.FlatParams`), which
rebinds ``params[name]`` to a view of it; the layer code is the same either way.
"""

from __future__ import annotations

import math

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy

__all__ = ["Layer", "init_weight", "INITS"]

INITS = ("he", "xavier", "zeros")


def init_weight(shape: tuple, fan_in: int, fan_out: int, init: str, rng: np.random.Generator, dtype) -> np.ndarray:
    """A host weight array: ``"he"`` N(0, 2/fan_in), ``"xavier"`` N(0, 2/(fan_in+fan_out)), or ``"zeros"``."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), got {type(rng).__name__}")
    if init == "zeros":
        return np.zeros(shape, dtype=dtype)
    std = math.sqrt(2.0 / fan_in) if init == "he" else math.sqrt(2.0 / (fan_in + fan_out))
    return (rng.standard_normal(shape) * std).astype(dtype)


def check_positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (1 or more), got {value!r}")
    return int(value)


class Layer:
    """Base class: empty ``params``/``buffers``; subclasses implement forward and backward."""

    def __init__(self) -> None:
        self.params: dict = {}
        self.buffers: dict = {}

    def forward(self, x, *, train: bool = True):
        """Return ``(y, cache)``; ``train`` selects training behaviour (batch statistics)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy, cache):
        """Return ``(dx, grads)`` with ``grads.keys() == self.params.keys()``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def num_params(self) -> int:
        """Number of trainable scalars (buffers not counted)."""
        return sum(int(p.size) for p in self.params.values())

    def _state(self) -> dict:
        clash = self.params.keys() & self.buffers.keys()
        if clash:
            raise ValueError(f"{type(self).__name__} has names that are both params and buffers: {sorted(clash)}")
        return {**self.params, **self.buffers}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host (NumPy) copies of every param and buffer, e.g. for :func:`minidni.io.save_arrays`."""
        return {k: np.array(to_numpy(v)) for k, v in self._state().items()}

    def load_state_dict(self, state: dict) -> None:
        """Copy host or device arrays into the existing params and buffers, in place.

        Keys must match :meth:`state_dict` exactly and shapes must agree; values
        are cast to each array's dtype and moved to its backend.
        """
        own = self._state()
        missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match {type(self).__name__}: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for key, target in own.items():
            value = state[key]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"state dict entry {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        for key, target in own.items():
            target[...] = to_device(to_numpy(state[key]), get_xp(target)).astype(target.dtype, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
