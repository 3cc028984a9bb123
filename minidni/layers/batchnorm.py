"""Batch normalisation layer for (N, D) features or (N, C, H, W) maps (per channel).

Params ``gamma`` (F,) (starts at 1) and ``beta`` (F,) (starts at 0); buffers
``running_mean`` (starts at 0) and ``running_var`` (starts at 1). A train-mode
forward normalises with batch statistics and updates the buffers in place
(``running = (1 - momentum) running + momentum batch``, unbiased variance); an
inference forward (``train=False``) uses the buffers. See
:mod:`minidni.functional.batchnorm` for the maths.
"""

from __future__ import annotations

import numpy as np

from minidni.backend import to_device
from minidni.functional.batchnorm import batchnorm_backward, batchnorm_forward
from minidni.layers.base import Layer, check_positive_int

__all__ = ["BatchNorm"]


class BatchNorm(Layer):
    """``BatchNorm(num_features, *, momentum=0.1, eps=1e-5, dtype=float32)``; no random init, so no rng."""

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.params = to_device({"gamma": np.ones(num_features, dtype=dtype), "beta": np.zeros(num_features, dtype=dtype)})
        self.buffers = to_device({"running_mean": np.zeros(num_features, dtype=dtype),
                                  "running_var": np.ones(num_features, dtype=dtype)})

    def forward(self, x, *, train: bool = True):
        """x (N, F) or (N, F, H, W) -> y of the same shape, cache; train mode updates the buffers."""
        y, cache = batchnorm_forward(x, self.params["gamma"], self.params["beta"], self.buffers["running_mean"],
                                     self.buffers["running_var"], train=train, momentum=self.momentum, eps=self.eps)
        if train:
            self.buffers["running_mean"][...] = cache.running_mean
            self.buffers["running_var"][...] = cache.running_var
        return y, cache

    def backward(self, dy, cache):
        """dy shaped like x -> dx, {"gamma": (F,), "beta": (F,)}."""
        dx, dgamma, dbeta = batchnorm_backward(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    def __repr__(self) -> str:
        return f"BatchNorm({self.num_features})"
