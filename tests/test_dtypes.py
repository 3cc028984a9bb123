"""Every functional op keeps its input's dtype: float32 in -> float32 out (and float64 -> float64).

Under NumPy 2 a stray float64 constant (``np.sqrt(n)``, ``np.zeros(3)``) silently
promotes float32 arrays, doubling memory and time, so each op is run forward and
backward on each backend and every floating output is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from minidni import functional as F
from minidni.backend import to_device


def _linear(r):
    y, cache = F.linear_forward(r((4, 3)), r((3, 2)), r((2,)))
    return [y, *F.linear_backward(r(y.shape), cache)]


def _activation(forward, backward):
    def run(r):
        y, cache = forward(r((2, 3, 4)))
        return [y, backward(r(y.shape), cache)]
    return run


def _batchnorm(train, shape):
    def run(r):
        f = shape[1]
        y, cache = F.batchnorm_forward(r(shape), r((f,)), r((f,)), r((f,)), r((f,)) ** 2, train=train)
        return [y, cache.running_mean, cache.running_var, *F.batchnorm_backward(r(shape), cache)]
    return run


def _losses(r):
    logits = r((4, 5))
    labels = to_device(np.array([0, 4, 2, 1]), r.xp)
    float64_targets = to_device(np.random.default_rng(1).random((4, 5)), r.xp)  # cast to the logits' dtype
    return [*F.softmax_cross_entropy(logits, labels), *F.sigmoid_cross_entropy(logits, float64_targets),
            *F.mse(logits, float64_targets)]


def _conv(r):
    y, cache = F.conv2d_forward(r((2, 3, 6, 5)), r((4, 3, 3, 3)), r((4,)), stride=2, pad=1)
    return [y, *F.conv2d_backward(r(y.shape), cache)]


def _pool(forward, backward):
    def run(r):
        y, cache = forward(r((2, 3, 7, 6)), size=3, stride=2, pad=1)
        return [y, backward(r(y.shape), cache)]
    return run


OPS = {
    "linear": _linear,
    "relu": _activation(F.relu_forward, F.relu_backward),
    "tanh": _activation(F.tanh_forward, F.tanh_backward),
    "sigmoid": _activation(F.sigmoid_forward, F.sigmoid_backward),
    "batchnorm-2d-train": _batchnorm(True, (5, 3)),
    "batchnorm-4d-train": _batchnorm(True, (2, 3, 4, 4)),
    "batchnorm-4d-inference": _batchnorm(False, (2, 3, 4, 4)),
    "losses": _losses,
    "conv2d": _conv,
    "maxpool2d": _pool(F.maxpool2d_forward, F.maxpool2d_backward),
    "avgpool2d": _pool(F.avgpool2d_forward, F.avgpool2d_backward),
}


class RandomArrays:
    """``r(shape)``: standard-normal arrays of one dtype on one backend."""

    def __init__(self, xp, dtype):
        self.xp, self.dtype, self.rng = xp, dtype, np.random.default_rng(0)

    def __call__(self, shape):
        return to_device(self.rng.standard_normal(shape).astype(self.dtype), self.xp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", list(OPS))
def test_dtype_is_kept(xp, op, dtype):
    outputs = OPS[op](RandomArrays(xp, dtype))
    assert outputs
    for i, a in enumerate(outputs):
        assert a.dtype == dtype, f"{op}: output {i} has dtype {a.dtype}, expected {np.dtype(dtype)}"
