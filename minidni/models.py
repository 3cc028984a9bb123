"""The paper's feed-forward networks, as lists of modules (one Sequential per hidden layer).

The output layer belongs to the top module, so a network of ``L`` hidden
layers has ``L`` modules and ``L - 1`` places for a synthetic gradient.

FCN (:func:`fcn`): input (N, D) -> ``L`` x [Linear(width) -> BN -> ReLU] -> Linear(K).
Every module's output is (N, width); the top module's is the logits (N, K).

CNN (:func:`cnn`): input (N, C, H, W) -> ``L`` x [Conv(filters, 5x5, same padding)
-> BN -> ReLU -> pool], the pool being a 3x3 max-pool (stride 2, pad 1) after the
first layer and a 3x3 average-pool (stride 2, pad 1: our choice of stride and
padding, [assumed]) after the others, so each layer halves H and W (rounding
up); the top module ends with Flatten -> Linear(K). For MNIST (1, 28, 28) the
maps are 14, 7, 4, 2 pixels wide; for CIFAR-10 (3, 32, 32) 16, 8, 4, 2.
"""

from __future__ import annotations

import numpy as np

from minidni.layers import AvgPool2d, BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

__all__ = ["fcn", "cnn", "MODELS"]

MODELS = ("fcn", "cnn")


def _check_layers(num_layers) -> int:
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    return int(num_layers)


def fcn(num_layers: int, *, in_dim: int = 784, width: int = 256, num_classes: int = 10,
        rng: np.random.Generator, dtype=np.float32) -> list[Sequential]:
    """``num_layers`` modules of Linear(width) -> BN -> ReLU; the last adds Linear(num_classes).

    Shapes: (N, in_dim) -> (N, width) per module -> (N, num_classes) logits.
    """
    num_layers = _check_layers(num_layers)
    modules, dim = [], in_dim
    for i in range(num_layers):
        layers = [Linear(dim, width, rng=rng, dtype=dtype), BatchNorm(width, dtype=dtype), ReLU()]
        if i == num_layers - 1:
            layers.append(Linear(width, num_classes, rng=rng, dtype=dtype, init="xavier"))
        modules.append(Sequential(layers))
        dim = width
    return modules


def _pooled(size: int) -> int:
    """Side of a map after a 3x3 pool with stride 2 and pad 1: ceil(size / 2)."""
    return (size + 2 - 3) // 2 + 1


def cnn(num_layers: int, *, in_shape: tuple = (3, 32, 32), filters: int = 128, kernel_size: int = 5,
        num_classes: int = 10, rng: np.random.Generator, dtype=np.float32) -> list[Sequential]:
    """``num_layers`` modules of Conv -> BN -> ReLU -> pool; the last adds Flatten -> Linear(num_classes).

    Shapes: (N, C, H, W) -> (N, filters, ceil(H/2), ceil(W/2)) after the first
    module, halving again after each next one -> (N, num_classes) logits.
    """
    num_layers = _check_layers(num_layers)
    channels, height, width = in_shape
    modules = []
    for i in range(num_layers):
        pool = MaxPool2d(3, 2, pad=1) if i == 0 else AvgPool2d(3, 2, pad=1)
        layers = [Conv2d(channels, filters, kernel_size, pad=kernel_size // 2, rng=rng, dtype=dtype),
                  BatchNorm(filters, dtype=dtype), ReLU(), pool]
        channels, height, width = filters, _pooled(height), _pooled(width)
        if i == num_layers - 1:
            layers += [Flatten(), Linear(channels * height * width, num_classes, rng=rng, dtype=dtype, init="xavier")]
        modules.append(Sequential(layers))
    return modules
