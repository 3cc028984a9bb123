"""Convolution and pooling layers over (N, C, H, W) maps, wrapping :mod:`minidni.functional.conv` and ``pool``.

``Conv2d``: W (out_ch, in_ch, KH, KW), b (out_ch,); cross-correlation with zero
padding ``pad`` and step ``stride`` (PyTorch's convention), so
``H_out = (H + 2 pad - KH) // stride + 1``. ``MaxPool2d`` and ``AvgPool2d``
take ``size`` x ``size`` windows every ``stride`` pixels (overlapping when
``stride < size``) and have no params.
"""

from __future__ import annotations

import numpy as np

from minidni.backend import to_device
from minidni.functional import conv as conv_ops
from minidni.functional import pool as pool_ops
from minidni.layers.base import Layer, check_positive_int, init_weight

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d"]


def _check_nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (0 or more), got {value!r}")
    return int(value)


def _check_maps(layer: Layer, x, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        wanted = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{layer!r} expects x of shape {wanted}, got {x.shape}")


class Conv2d(Layer):
    """``Conv2d(in_ch, out_ch, kernel_size, *, stride=1, pad=0, rng, dtype=float32, init="he")``.

    ``kernel_size`` is an int or a (KH, KW) pair; He/Xavier fans are
    ``in_ch*KH*KW`` and ``out_ch*KH*KW``; b starts at 0.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size, *, stride: int = 1, pad: int = 0,
                 rng: np.random.Generator, dtype=np.float32, init: str = "he"):
        super().__init__()
        self.in_ch = check_positive_int("in_ch", in_ch)
        self.out_ch = check_positive_int("out_ch", out_ch)
        kh, kw = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        self.kernel_size = (check_positive_int("kernel height", kh), check_positive_int("kernel width", kw))
        self.stride = check_positive_int("stride", stride)
        self.pad = _check_nonnegative_int("pad", pad)
        area = self.kernel_size[0] * self.kernel_size[1]
        W = init_weight((self.out_ch, self.in_ch, *self.kernel_size), self.in_ch * area, self.out_ch * area,
                        init, rng, dtype)
        self.params = to_device({"W": W, "b": np.zeros(self.out_ch, dtype=dtype)})

    def forward(self, x, *, train: bool = True):
        """x (N, in_ch, H, W) -> y (N, out_ch, H_out, W_out), cache."""
        _check_maps(self, x, self.in_ch)
        return conv_ops.conv2d_forward(x, self.params["W"], self.params["b"], stride=self.stride, pad=self.pad)

    def backward(self, dy, cache):
        """dy (N, out_ch, H_out, W_out) -> dx, {"W": (out_ch, in_ch, KH, KW), "b": (out_ch,)}."""
        dx, dW, db = conv_ops.conv2d_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad})")


class _Pool2d(Layer):
    """Shared constructor and checks of the pooling layers."""

    def __init__(self, size: int, stride: int, pad: int = 0):
        super().__init__()
        self.size = check_positive_int("size", size)
        self.stride = check_positive_int("stride", stride)
        self.pad = _check_nonnegative_int("pad", pad)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, stride={self.stride}, pad={self.pad})"


class MaxPool2d(_Pool2d):
    """``MaxPool2d(size, stride, pad=0)``: the maximum of each window (padding never wins)."""

    def forward(self, x, *, train: bool = True):
        """x (N, C, H, W) -> y (N, C, H_out, W_out), cache."""
        _check_maps(self, x)
        return pool_ops.maxpool2d_forward(x, size=self.size, stride=self.stride, pad=self.pad)

    def backward(self, dy, cache):
        return pool_ops.maxpool2d_backward(dy, cache), {}


class AvgPool2d(_Pool2d):
    """``AvgPool2d(size, stride, pad=0)``: the mean of each window."""

    def forward(self, x, *, train: bool = True):
        """x (N, C, H, W) -> y (N, C, H_out, W_out), cache."""
        _check_maps(self, x)
        return pool_ops.avgpool2d_forward(x, size=self.size, stride=self.stride, pad=self.pad)

    def backward(self, dy, cache):
        return pool_ops.avgpool2d_backward(dy, cache), {}
