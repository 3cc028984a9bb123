"""``Sequential``: a chain of layers, with params and buffers flattened as ``"i.name"``.

    >>> net = Sequential([Linear(784, 256, rng=rng), ReLU(), Linear(256, 10, rng=rng)])
    >>> y, caches = net.forward(x)          # caches: one per layer, returned not stored
    >>> dx, grads = net.backward(dy, caches) # grads keys "0.W", "0.b", "2.W", "2.b"

``params`` and ``buffers`` are built on each access from the sub-layers; their
values are the sub-layers' own arrays, so in-place optimiser updates reach them.
"""

from __future__ import annotations

from collections.abc import Sequence

from minidni.layers.base import Layer

__all__ = ["Sequential"]


class Sequential(Layer):
    """Apply ``layers`` in order; ``backward`` runs them in reverse with the list of caches."""

    def __init__(self, layers: Sequence[Layer]):
        # no Layer.__init__: params and buffers are read-only views derived from the layers
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential item {i} is a {type(layer).__name__}, not a minidni Layer")

    @property
    def params(self) -> dict:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def buffers(self) -> dict:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    def forward(self, x, *, train: bool = True):
        """Return ``(y, caches)`` with one cache per layer."""
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x, train=train)
            caches.append(cache)
        return x, caches

    def backward(self, dy, caches):
        """Return ``(dx, grads)``; grads flattened as ``"i.name"`` like ``params``."""
        if len(caches) != len(self.layers):
            raise ValueError(f"got {len(caches)} caches for {len(self.layers)} layers")
        grads = {}
        for i in reversed(range(len(self.layers))):
            dy, layer_grads = self.layers[i].backward(dy, caches[i])
            grads.update({f"{i}.{k}": g for k, g in layer_grads.items()})
        return dy, {k: grads[k] for k in self.params}  # same key order as params

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"
