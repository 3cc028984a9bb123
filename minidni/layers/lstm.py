"""LSTM layer: owns Wx, Wh, b and runs :func:`minidni.functional.lstm_forward` over a window.

Unlike the other layers its forward takes and returns a recurrent state, so a
trainer can carry ``(h, c)`` from one window to the next (truncated BPTT):

    >>> lstm = LSTM(10, 64, rng=np.random.default_rng(0))
    >>> (hs, cT), cache = lstm.forward(x, (h0, c0))       # x (T, N, D); hs (T, N, H); cT (N, H)
    >>> dx, dh0, dc0, grads = lstm.backward(dhs, dcT, cache)   # grads: {"Wx", "Wh", "b"}
    >>> (hs, cT), cache = lstm.forward(x, state, workspace=ws)  # a trainer's loop: arrays reused
    >>> _, dh0, dc0, grads = lstm.backward(dhs, dcT, cache, input_grad=False, out=flat_grads)

This differs from the plain layer contract (``forward(x) -> (y, cache)``,
``backward(dy, cache) -> (dx, grads)``) because of the state: the backward takes
the gradient arriving at the final cell state (``dcT``, e.g. a synthetic
gradient, or None) and returns the gradients w.r.t. the initial state, which a
recurrent DNI uses as the bootstrapped target of the previous window's SG.

Initialisation: Wx and Wh are Xavier-normal per gate block (fan_in D or H, fan_out
H), b is zero except the forget-gate block, which starts at ``forget_bias``
(default 1.0, Gers et al. 2000; Jozefowicz et al. 2015): the cell then keeps most
of its content from the first step, so gradients reach further back before the
forget gate has learned anything.
"""

from __future__ import annotations

import math

import numpy as np

from minidni.backend import get_xp, to_device
from minidni.functional.lstm import lstm_backward, lstm_forward
from minidni.layers.base import Layer, check_positive_int

__all__ = ["LSTM"]


class LSTM(Layer):
    """``LSTM(input_dim, hidden, *, rng, dtype=float32, forget_bias=1.0)``; gates i, f, g, o."""

    def __init__(self, input_dim: int, hidden: int, *, rng: np.random.Generator, dtype=np.float32,
                 forget_bias: float = 1.0):
        super().__init__()
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
                            f"got {type(rng).__name__}")
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.hidden = H = check_positive_int("hidden", hidden)
        Wx = rng.standard_normal((input_dim, 4 * H)) * math.sqrt(2.0 / (input_dim + H))
        Wh = rng.standard_normal((H, 4 * H)) * math.sqrt(2.0 / (2 * H))
        b = np.zeros(4 * H)
        b[H:2 * H] = forget_bias
        self.params = to_device({"Wx": Wx.astype(dtype), "Wh": Wh.astype(dtype), "b": b.astype(dtype)})

    def zero_state(self, batch: int):
        """``(h, c)`` of zeros, (batch, H) each, on the parameters' backend and dtype."""
        xp = get_xp(self.params["Wh"])
        shape = (batch, self.hidden)
        return xp.zeros(shape, self.params["Wh"].dtype), xp.zeros(shape, self.params["Wh"].dtype)

    def forward(self, x, state=None, *, keep=None, workspace=None):
        """x (T, N, input_dim), state ``(h0, c0)`` (N, H) each or None (zeros) -> ``((hs, cT), cache)``.

        ``hs`` (T, N, H) are the hidden states after each step, ``cT`` (N, H) the
        final cell state (the final hidden state is ``hs[-1]``). Both are views into
        the cache: read them, do not write into them. ``keep`` (T, N), optional:
        a 0 at ``keep[t, n]`` resets row n's state to zero before step t (a new
        episode), cutting the gradient there too (see :func:`minidni.functional.lstm_forward`).
        ``workspace``: a :class:`minidni.workspace.Workspace` whose arrays this call and
        its backward reuse (the next call with it overwrites this one's results).
        """
        if x.ndim != 3 or x.shape[2] != self.input_dim:
            raise ValueError(f"LSTM({self.input_dim}, {self.hidden}) expects x of shape (T, N, {self.input_dim}), "
                             f"got {x.shape}")
        h0, c0 = self.zero_state(x.shape[1]) if state is None else state
        if h0.shape != (x.shape[1], self.hidden) or c0.shape != h0.shape:
            raise ValueError(f"state must be (h0, c0), each of shape (N, H) = {(x.shape[1], self.hidden)}, "
                             f"got {h0.shape} and {c0.shape}")
        p = self.params
        hs, cT, cache = lstm_forward(x, h0, c0, p["Wx"], p["Wh"], p["b"], keep=keep, workspace=workspace)
        return (hs, cT), cache

    def backward(self, dhs, dcT, cache, *, input_grad: bool = True, out: dict | None = None):
        """dhs (T, N, H), dcT (N, H) or None -> ``(dx (T, N, D), dh0 (N, H), dc0 (N, H), grads)``.

        ``input_grad=False`` skips dx (None). ``out``: a dict like ``params`` (e.g. views
        of a flat gradient buffer) that the gradients are written into and returned as.
        """
        targets = None if out is None else (out["Wx"], out["Wh"], out["b"])
        dx, dh0, dc0, dWx, dWh, db = lstm_backward(dhs, dcT, cache, input_grad=input_grad, out=targets)
        return dx, dh0, dc0, {"Wx": dWx, "Wh": dWh, "b": db}

    def __repr__(self) -> str:
        return f"LSTM({self.input_dim}, {self.hidden})"
