"""Parameter-free elementwise layers: ReLU, Tanh, Sigmoid (any input shape)."""

from __future__ import annotations

from minidni.functional import activations as F
from minidni.layers.base import Layer

__all__ = ["ReLU", "Tanh", "Sigmoid"]


class ReLU(Layer):
    """``y = max(x, 0)``."""

    def forward(self, x, *, train: bool = True):
        return F.relu_forward(x)

    def backward(self, dy, cache):
        return F.relu_backward(dy, cache), {}


class Tanh(Layer):
    """``y = tanh(x)``."""

    def forward(self, x, *, train: bool = True):
        return F.tanh_forward(x)

    def backward(self, dy, cache):
        return F.tanh_backward(dy, cache), {}


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, computed without overflow."""

    def forward(self, x, *, train: bool = True):
        return F.sigmoid_forward(x)

    def backward(self, dy, cache):
        return F.sigmoid_backward(dy, cache), {}
