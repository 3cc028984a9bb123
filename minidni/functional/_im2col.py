"""Sliding windows as a matrix (im2col) and back (col2im), shared by conv and pooling.

A window of ``kh x kw`` cells moves over the last two axes of an image with
stride ``stride`` after padding both sides of each spatial axis by ``pad``.
``im2col`` copies every window position into a column array

    img (..., H, W)  ->  col (kh, kw, ..., OH, OW),
    col[i, j, ..., oy, ox] = padded[..., oy * stride + i, ox * stride + j],
    OH = (H + 2 pad - kh) // stride + 1,  OW = (W + 2 pad - kw) // stride + 1,

where the leading axes ``...`` (batch and channel, in whatever order the caller
chose) are carried through unchanged. ``col2im`` is its adjoint: it adds every
column entry back onto the cell it was copied from, so cells shared by
overlapping windows (kernel larger than stride) receive the sum.

Both loop over the ``kh * kw`` kernel offsets only; each step is one strided
slice covering the whole batch (Chainer's formulation), and a slice never holds
the same cell twice, so the ``+=`` in ``col2im`` is exact on NumPy and CuPy.
"""

from __future__ import annotations

from minidni.backend import get_xp


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    """Number of window positions along an axis of length ``size`` (floor mode)."""
    return (size + 2 * pad - k) // stride + 1


def im2col(img, kh: int, kw: int, stride: int, pad: int, *, fill: float = 0.0):
    """Windows of ``img`` (..., H, W) as ``col`` (kh, kw, ..., OH, OW); padding cells hold ``fill``."""
    xp = get_xp(img)
    *lead, h, w = img.shape
    oh, ow = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    if pad:
        widths = [(0, 0)] * len(lead) + [(pad, pad), (pad, pad)]
        img = xp.pad(img, widths, mode="constant", constant_values=fill)
    col = xp.empty((kh, kw, *lead, oh, ow), dtype=img.dtype)
    for i in range(kh):
        for j in range(kw):
            # Window offset (i, j) for every output position at once: rows i, i+s, ..., i+s(OH-1).
            col[i, j] = img[..., i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
    return col


def col2im(col, h: int, w: int, stride: int, pad: int):
    """Adjoint of :func:`im2col`: sum ``col`` (kh, kw, ..., OH, OW) back into an image (..., H, W).

    Entries that came from padding cells are dropped; cells covered by several
    windows get the sum of their entries.
    """
    xp = get_xp(col)
    kh, kw, *lead, oh, ow = col.shape
    img = xp.zeros((*lead, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            # Within one offset the output positions hit distinct cells, so slice += is exact.
            img[..., i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride] += col[i, j]
    return img[..., pad:pad + h, pad:pad + w]
