"""2-D convolution (cross-correlation, as in PyTorch) by im2col and one GEMM.

Shapes: ``x`` (N, C, H, W), ``W`` (F, C, KH, KW), ``b`` (F,), ``y`` (N, F, OH, OW) with

    y[n, f, oy, ox] = b[f] + sum_{c, i, j} W[f, c, i, j] * xpad[n, c, oy*stride + i, ox*stride + j],
    OH = (H + 2 pad - KH) // stride + 1,   OW = (W + 2 pad - KW) // stride + 1,

where ``xpad`` is ``x`` with ``pad`` zeros on every side of both spatial axes.
The kernel is *not* flipped (cross-correlation, like ``torch.nn.functional.conv2d``).
"Same" padding for an odd kernel ``K`` at stride 1 is ``pad = (K - 1) // 2``.

    >>> y, cache = conv2d_forward(x, W, b, stride=1, pad=2)
    >>> dx, dW, db = conv2d_backward(dy, cache)

The windows are unrolled into a matrix ``col`` (KH*KW*C, N*OH*OW) by
:func:`~minidni.functional._im2col.im2col`; then the forward is the single GEMM
``W2 @ col`` with ``W2`` the kernel as an (F, KH*KW*C) matrix, and the backward is two GEMMs
(``dW2 = dy2 @ col.T`` and ``dcol = W2.T @ dy2``) plus ``col2im``.
"""

from __future__ import annotations

from minidni.backend import get_xp
from minidni.functional._im2col import col2im, im2col, out_size

__all__ = ["conv2d_forward", "conv2d_backward"]


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _validate(x, W, b, stride, pad) -> None:
    _check_int("stride", stride, 1)
    _check_int("pad", pad, 0)
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"conv2d: x must have shape (N, C, H, W), got shape {getattr(x, 'shape', type(x).__name__)}")
    if getattr(W, "ndim", None) != 4:
        raise ValueError(f"conv2d: W must have shape (F, C, KH, KW), got shape {getattr(W, 'shape', type(W).__name__)}")
    f, c, kh, kw = W.shape
    if getattr(b, "shape", None) != (f,):
        raise ValueError(f"conv2d: b must have shape (F,) = ({f},) to match W {W.shape}, "
                         f"got shape {getattr(b, 'shape', type(b).__name__)}")
    if x.shape[1] != c:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels (shape {x.shape}) but W expects C = {c} "
                         f"(shape {W.shape})")
    if x.dtype.kind != "f" or W.dtype != x.dtype or b.dtype != x.dtype:
        raise ValueError(f"conv2d: x, W, b must share one floating dtype, got {x.dtype}, {W.dtype}, {b.dtype}; "
                         "cast them with .astype(x.dtype)")
    h, w = x.shape[2:]
    if kh < 1 or kw < 1 or kh > h + 2 * pad or kw > w + 2 * pad:
        raise ValueError(f"conv2d: kernel {kh}x{kw} must fit the padded input {h + 2 * pad}x{w + 2 * pad} "
                         f"(H, W = {h}, {w} plus pad {pad} each side): accepted 1 <= KH <= {h + 2 * pad}, "
                         f"1 <= KW <= {w + 2 * pad}")


def _kernel_matrix(W):
    """W (F, C, KH, KW) as the GEMM operand W2 (F, KH*KW*C), columns ordered like im2col's rows."""
    f, c, kh, kw = W.shape
    return W.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)


def conv2d_forward(x, W, b, *, stride: int = 1, pad: int = 0):
    """Return ``(y, cache)``: x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW).

    ``stride`` >= 1 and ``pad`` >= 0 are integers applied to both spatial axes;
    the kernel must fit the padded input. x, W, b share one floating dtype, which
    y keeps. The cache holds the unrolled input (KH*KW*C x N*OH*OW entries).
    """
    _validate(x, W, b, stride, pad)
    xp = get_xp(x, W, b)
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    oh, ow = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    # Channels-first view, so im2col gives (KH, KW, C, N, OH, OW): a free reshape to (KH*KW*C, P), P = N*OH*OW.
    col = im2col(x.transpose(1, 0, 2, 3), kh, kw, stride, pad).reshape(kh * kw * c, n * oh * ow)
    W2 = _kernel_matrix(W)
    yt = (W2 @ col).reshape(f, n, oh, ow)  # the one GEMM: (F, KH*KW*C) @ (KH*KW*C, P)
    y = xp.empty((n, f, oh, ow), dtype=x.dtype)
    xp.add(yt.transpose(1, 0, 2, 3), b.reshape(1, f, 1, 1), out=y)  # bias add and (F, N) -> (N, F) in one pass
    return y, (x.shape, W, col, stride, pad)


def conv2d_backward(dy, cache):
    """Gradients ``(dx, dW, db)`` given ``dy`` (N, F, OH, OW), the gradient at ``y``."""
    (n, c, h, w), W, col, stride, pad = cache
    xp = get_xp(dy, W)
    f, _, kh, kw = W.shape
    oh, ow = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    if dy.shape != (n, f, oh, ow):
        raise ValueError(f"conv2d_backward: dy must have the output's shape {(n, f, oh, ow)}, got {dy.shape}")
    dy2 = dy.transpose(1, 0, 2, 3).reshape(f, n * oh * ow)  # (F, N*OH*OW), matching col's columns
    db = dy2.sum(axis=1)  # b is added at every (n, oy, ox): (F,)
    dW2 = dy2 @ col.T  # dL/dW2 = dy2 col^T: (F, P) @ (P, KH*KW*C)
    dW = xp.ascontiguousarray(dW2.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))  # W2's column order back to W's
    dcol = _kernel_matrix(W).T @ dy2  # dL/dcol = W2^T dy2: (KH*KW*C, F) @ (F, P)
    dcol = dcol.reshape(kh, kw, c, n, oh, ow)
    dx = col2im(dcol, h, w, stride, pad)  # each input cell sums the entries of every window it fed: (C, N, H, W)
    return xp.ascontiguousarray(dx.transpose(1, 0, 2, 3)), dW, db
