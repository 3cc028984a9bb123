"""Flatten all axes but the batch axis: (N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

from __future__ import annotations

from minidni.layers.base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """Reshape (N, ...) to (N, -1); the backward reshapes the gradient back."""

    def forward(self, x, *, train: bool = True):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dy, cache):
        return dy.reshape(cache), {}
