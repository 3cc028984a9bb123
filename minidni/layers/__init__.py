"""Layers: thin objects owning ``params`` (and ``buffers``), with returned caches.

    >>> y, cache = layer.forward(x, train=True)
    >>> dx, grads = layer.backward(dy, cache)   # grads.keys() == layer.params.keys()

See :mod:`minidni.layers.base` for the conventions (host init from an explicit
``rng``, in-place updates, ``state_dict``/``load_state_dict`` for checkpoints).
"""

from minidni.layers.activations import ReLU, Sigmoid, Tanh
from minidni.layers.base import Layer
from minidni.layers.batchnorm import BatchNorm
from minidni.layers.container import Sequential
from minidni.layers.conv import AvgPool2d, Conv2d, MaxPool2d
from minidni.layers.flatten import Flatten
from minidni.layers.linear import Linear
from minidni.layers.lstm import LSTM

__all__ = [
    "Layer", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm",
    "ReLU", "Tanh", "Sigmoid", "Flatten", "Sequential", "LSTM",
]
