"""Affine layer: ``y = x @ W + b``.

Shapes: ``x`` (N, D), ``W`` (D, M), ``b`` (M,), ``y`` (N, M).

    >>> y, cache = linear_forward(x, W, b)
    >>> dx, dW, db = linear_backward(dy, cache)
    >>> dW, db = linear_param_grads(dy, cache)   # when nobody needs dx (a net's input)
"""

from __future__ import annotations

from minidni.backend import get_xp

__all__ = ["linear_forward", "linear_backward", "linear_param_grads"]


def linear_forward(x, W, b):
    """Return ``(y, cache)`` with ``y = x @ W + b``: x (N, D), W (D, M), b (M,) -> y (N, M)."""
    get_xp(x, W, b)  # raises BackendError if NumPy and CuPy arrays are mixed
    y = x @ W
    y += b  # in place: no second (N, M) array
    return y, (x, W)


def linear_backward(dy, cache):
    """Gradients ``(dx, dW, db)`` of the loss given ``dy`` (N, M), the gradient at ``y``."""
    _, W = cache
    dx = dy @ W.T  # dL/dx = dL/dy W^T: (N, M) @ (M, D) -> (N, D)
    return (dx, *linear_param_grads(dy, cache))


def linear_param_grads(dy, cache):
    """``(dW, db)`` of :func:`linear_backward` without ``dx`` (saves its ``2 N D M`` FLOPs)."""
    x, _ = cache
    dW = x.T @ dy  # dL/dW = x^T dL/dy, summed over the batch: (D, N) @ (N, M) -> (D, M)
    db = dy.sum(axis=0)  # b is broadcast over the batch, so its gradient sums over N: (M,)
    return dW, db
