"""Elementwise activations: ReLU, tanh, sigmoid.

Every op keeps the shape and dtype of its input (any shape):

    >>> y, cache = relu_forward(x)
    >>> dx = relu_backward(dy, cache)

The sigmoid is computed as ``tanh(x / 2) / 2 + 1 / 2``, which equals
``1 / (1 + exp(-x))`` but never overflows (``exp(-x)`` does for x < -709 in
float64 and x < -88 in float32).
"""

from __future__ import annotations

from minidni.backend import get_xp

__all__ = [
    "relu_forward", "relu_backward",
    "tanh_forward", "tanh_backward",
    "sigmoid_forward", "sigmoid_backward",
    "sigmoid",
]


def relu_forward(x):
    """``y = max(x, 0)``; the cache is the mask ``x > 0``. (A NaN in x stays NaN in y.)

    ``maximum`` and a multiply by the mask, not ``where``: NumPy 2.4's ``where`` takes
    about 300 µs on a 256 x 256 float32 array, ``maximum`` 16 µs.
    """
    xp = get_xp(x)
    return xp.maximum(x, x.dtype.type(0)), x > 0


def relu_backward(dy, mask):
    """``dx = dy`` where the input was positive, else 0 (the subgradient at 0 is taken as 0; a NaN in dy stays NaN)."""
    return dy * mask


def tanh_forward(x):
    """``y = tanh(x)``; the cache is ``y``."""
    xp = get_xp(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """``dx = dy * (1 - y^2)``, since d tanh(x)/dx = 1 - tanh(x)^2."""
    return dy * (1.0 - y * y)


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))`` in the overflow-free form ``tanh(x/2)/2 + 1/2``."""
    xp = get_xp(x)
    return xp.tanh(x * 0.5) * 0.5 + 0.5


def sigmoid_forward(x):
    """``y = sigmoid(x)``; the cache is ``y``."""
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    """``dx = dy * y * (1 - y)``, since d sigmoid(x)/dx = sigmoid(x) (1 - sigmoid(x))."""
    return dy * y * (1.0 - y)
