"""Fully connected layer: ``y = x @ W + b``; x (N, in_dim), W (in_dim, out_dim), b (out_dim,)."""

from __future__ import annotations

import numpy as np

from minidni.backend import get_xp, to_device
from minidni.functional.linear import linear_backward, linear_forward, linear_param_grads
from minidni.layers.base import Layer, check_positive_int, init_weight

__all__ = ["Linear"]


class Linear(Layer):
    """``Linear(in_dim, out_dim, *, rng, dtype=float32, init="he"|"xavier"|"zeros")``; b starts at 0."""

    def __init__(self, in_dim: int, out_dim: int, *, rng: np.random.Generator, dtype=np.float32, init: str = "he"):
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        W = init_weight((self.in_dim, self.out_dim), self.in_dim, self.out_dim, init, rng, dtype)
        self.params = to_device({"W": W, "b": np.zeros(self.out_dim, dtype=dtype)})

    def forward(self, x, *, train: bool = True):
        """x (N, in_dim) -> y (N, out_dim), cache."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"Linear({self.in_dim}, {self.out_dim}) expects x of shape (N, {self.in_dim}), got {x.shape}")
        return linear_forward(x, self.params["W"], self.params["b"])

    def backward(self, dy, cache):
        """dy (N, out_dim) -> dx (N, in_dim), {"W": (in_dim, out_dim), "b": (out_dim,)}."""
        dx, dW, db = linear_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    def param_grads(self, dy, cache, *, out: dict | None = None) -> dict:
        """:meth:`backward`'s ``{"W", "b"}`` without ``dx``, for a layer whose input gradient nobody needs.

        ``out``: a dict like ``params`` (e.g. views of a flat gradient buffer) that the
        gradients are written into, without temporaries, and returned.
        """
        if out is None:
            dW, db = linear_param_grads(dy, cache)
            return {"W": dW, "b": db}
        x, _ = cache
        xp = get_xp(x, dy)
        xp.matmul(x.T, dy, out=out["W"])  # linear_param_grads' x^T dy, written in place
        dy.sum(axis=0, out=out["b"])
        return out

    def __repr__(self) -> str:
        return f"Linear({self.in_dim}, {self.out_dim})"
