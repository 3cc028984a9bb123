"""Losses, each returning ``(loss, dlogits)``: the loss as a 0-d array and its gradient.

The loss stays on the device as a 0-d array (no host sync); call ``float(loss)``
only at the edges (logging). Everything is computed in the dtype of the logits
(float32 in, float32 out); float targets are cast to it.

- ``softmax_cross_entropy(logits, labels)``: logits (N, K), integer labels (N,) in
  ``[0, K)``; mean over the batch of ``-log softmax(logits)[label]`` (natural log).
  Label *values* are not range-checked here (that would need a host sync): a
  label >= K raises the backend's IndexError and a negative one wraps around,
  so check labels where the data are loaded.
- ``sigmoid_cross_entropy(logits, targets)``: logits and targets (N, ...) with
  targets in [0, 1]; mean over the batch of each example's *sum* over outputs of
  the binary cross-entropy ``-t log s - (1 - t) log(1 - s)``, ``s = sigmoid(logits)``.
- ``mse(pred, target)``: pred and target (N, ...); mean over the batch of *half
  the squared Euclidean distance*, ``sum((pred - target)**2) / (2 N)``, so that
  ``dpred = (pred - target) / N``.

All three are stable for logits of any size (tested at +-1e4): softmax shifts
by the row maximum, and the binary cross-entropy uses
``max(z, 0) - z t + log1p(exp(-|z|))``, whose ``exp`` never overflows.
"""

from __future__ import annotations

from minidni.backend import get_xp
from minidni.functional.activations import sigmoid

__all__ = ["softmax_cross_entropy", "sigmoid_cross_entropy", "mse"]


def _check_same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match")
    if a.ndim < 1 or a.shape[0] < 1:
        raise ValueError(f"{name_a} must have a batch axis of length >= 1, got shape {a.shape}")


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy; returns ``(loss, dlogits)``, loss 0-d, dlogits (N, K)."""
    xp = get_xp(logits, labels)
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape (N, K) with N >= 1, got {logits.shape}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match logits {logits.shape}, got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices in [0, {logits.shape[1]}), got dtype {labels.dtype}")
    n = logits.shape[0]
    rows = xp.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)  # largest logit per row is 0: exp cannot overflow
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1)
    log_prob_label = shifted[rows, labels] - xp.log(sum_exp)
    loss = xp.asarray(-log_prob_label.sum() / n)
    # d(-log softmax_y)/dlogits = softmax - onehot(y); divided by N for the batch mean
    dlogits = exp / sum_exp[:, None]
    dlogits[rows, labels] -= 1.0
    dlogits /= n
    return loss, dlogits


def sigmoid_cross_entropy(logits, targets):
    """Binary cross-entropy summed over outputs, mean over the batch; returns ``(loss, dlogits)``."""
    xp = get_xp(logits, targets)
    _check_same_shape("logits", logits, "targets", targets)
    t = targets.astype(logits.dtype, copy=False)
    n = logits.shape[0]
    # -t log s(z) - (1 - t) log(1 - s(z)) = max(z, 0) - z t + log(1 + exp(-|z|))
    per_element = xp.maximum(logits, 0.0) - logits * t + xp.log1p(xp.exp(-xp.abs(logits)))
    loss = xp.asarray(per_element.sum() / n)
    dlogits = (sigmoid(logits) - t) / n  # d/dz = s(z) - t, divided by N for the batch mean
    return loss, dlogits


def mse(pred, target):
    """``sum((pred - target)**2) / (2 N)``; returns ``(loss, dpred)`` with ``dpred = (pred - target) / N``."""
    xp = get_xp(pred, target)
    _check_same_shape("pred", pred, "target", target)
    n = pred.shape[0]
    diff = pred - target.astype(pred.dtype, copy=False)
    loss = xp.asarray((diff * diff).sum() / (2 * n))
    return loss, diff / n
