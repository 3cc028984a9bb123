"""Batch normalisation for (N, D) features and (N, C, H, W) feature maps (per channel).

Shapes: ``x`` (N, D) with ``gamma, beta, running_mean, running_var`` (D,), or
``x`` (N, C, H, W) with all four of shape (C,); statistics are taken over every
axis but the feature/channel axis, i.e. over ``m = N`` or ``m = N*H*W`` values.

    >>> y, cache = batchnorm_forward(x, gamma, beta, running_mean, running_var, train=True)
    >>> running_mean, running_var = cache.running_mean, cache.running_var   # new arrays
    >>> dx, dgamma, dbeta = batchnorm_backward(dy, cache)

**Train mode** normalises with the batch mean and the biased batch variance,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``, and returns *new* running
statistics in the cache (the arrays passed in are never modified):
``running = (1 - momentum) * running + momentum * batch_stat``, where the
variance fed to the running average is the unbiased one, ``var * m / (m - 1)``
(PyTorch's convention). **Inference mode** (``train=False``) normalises with the
running statistics and returns them unchanged in the cache. The backward works
for both modes (in inference mode the normalisation is a fixed affine map).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minidni.backend import get_xp

__all__ = ["BatchNormCache", "batchnorm_forward", "batchnorm_backward"]


class BatchNormCache(NamedTuple):
    """What the backward needs, plus the running statistics after this forward."""

    x_hat: Any  # normalised input, shape of x
    inv_std: Any  # 1 / sqrt(var + eps), broadcastable to x
    gamma: Any  # scale, broadcastable to x
    axes: tuple  # the axes the statistics are taken over
    train: bool  # whether batch statistics were used
    running_mean: Any  # (F,) running mean after this forward
    running_var: Any  # (F,) running variance after this forward


def _layout(x, gamma, beta, running_mean, running_var):
    """The reduction axes and the broadcast shape of per-feature arrays; validates shapes."""
    if x.ndim == 2:
        axes, shape = (0,), (1, x.shape[1])
    elif x.ndim == 4:
        axes, shape = (0, 2, 3), (1, x.shape[1], 1, 1)
    else:
        raise ValueError(f"batchnorm expects x of shape (N, D) or (N, C, H, W), got {x.shape}")
    features = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if a.shape != (features,):
            raise ValueError(f"{name} must have shape ({features},) for x of shape {x.shape}, got {a.shape}")
    return axes, shape


def batchnorm_forward(x, gamma, beta, running_mean, running_var, *, train=True, momentum=0.1, eps=1e-5):
    """Return ``(y, cache)``, y shaped like x; the cache carries the (new) running statistics."""
    xp = get_xp(x, gamma, beta, running_mean, running_var)
    axes, shape = _layout(x, gamma, beta, running_mean, running_var)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if not eps > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    m = x.size // x.shape[1]
    if train:
        if m < 2:
            raise ValueError(f"train-mode batchnorm needs more than 1 value per feature, got x of shape {x.shape}")
        mean = x.mean(axis=axes)
        x_hat = x - mean.reshape(shape)  # centred; normalised in place below
        var = (x_hat * x_hat).mean(axis=axes)  # the biased variance, from the centred values at hand
        new_mean = (1.0 - momentum) * running_mean + momentum * mean
        new_var = (1.0 - momentum) * running_var + momentum * (var * (m / (m - 1)))
    else:
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
        x_hat = x - mean.astype(x.dtype, copy=False).reshape(shape)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False).reshape(shape)
    x_hat *= inv_std
    g = gamma.reshape(shape)
    y = g * x_hat
    y += beta.reshape(shape)
    return y, BatchNormCache(x_hat, inv_std, g, axes, train, new_mean, new_var)


def batchnorm_backward(dy, cache):
    """Gradients ``(dx, dgamma, dbeta)``; dx shaped like x, dgamma and dbeta (F,)."""
    xp = get_xp(dy)
    x_hat, inv_std, g, axes, train = cache.x_hat, cache.inv_std, cache.gamma, cache.axes, cache.train
    dgamma = (dy * x_hat).sum(axis=axes)  # y = gamma x_hat + beta, so dL/dgamma = sum dy x_hat per feature
    dbeta = dy.sum(axis=axes)  # dL/dbeta = sum dy per feature
    if not train:
        return dy * (g * inv_std), dgamma, dbeta  # fixed statistics: x_hat = (x - mu) inv_std is affine in x
    m = x_hat.size // x_hat.shape[1]
    # batch statistics depend on x too: with dx_hat = gamma dy,
    #   dx = inv_std / m * (m dx_hat - sum(dx_hat) - x_hat sum(dx_hat x_hat)),
    # and gamma is per feature, so the two sums are gamma dbeta and gamma dgamma:
    #   dx = gamma inv_std / m * (m dy - dbeta - x_hat dgamma)
    shape = inv_std.shape
    dx = x_hat * dgamma.reshape(shape)
    xp.subtract(m * dy, dx, out=dx)
    dx -= dbeta.reshape(shape)
    dx *= g * (inv_std / m)
    return dx, dgamma, dbeta
