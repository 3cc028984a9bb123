"""Fused elementwise CUDA kernels for the CuPy backend: the LSTM cell forward and backward, the Adam update.

On a GPU every array operation is a kernel launch and a pass over memory. The
NumPy code of :mod:`minidni.functional.lstm` and :class:`minidni.optim.FlatAdam`
(the readable reference, and what runs on the CPU) makes about ten elementwise
passes per LSTM step and thirteen per Adam step; here each is ONE
``cupy.ElementwiseKernel`` (matrix products stay cuBLAS). The kernels compute the
same formulas in the same dtype, so they agree with the NumPy path to float
rounding (the compiler may fuse a multiply-add), not bit for bit; the parity
tests (``tests/test_optim.py``, ``tests/test_flat_params.py``) skip without a GPU.

This module never imports CuPy: a kernel is built from the array module the
caller already holds (``xp.ElementwiseKernel``) the first time it is needed, and
cached. :func:`available` is False for NumPy and for array modules without
``ElementwiseKernel`` (e.g. the CuPy stand-in of the test suite), where the
callers keep the generic path.

Gate layout as in :mod:`minidni.functional.lstm`: ``a`` (N, 4H) holds the blocks
i, f, g, o, *pre-scaled* (``0.5 z`` on i, f, o and ``z`` on g), so that
``gate = scale * tanh(a) + shift`` is sigmoid or tanh.
"""

from __future__ import annotations

__all__ = ["available", "lstm_cell_forward", "lstm_cell_backward", "adam_update"]

_CACHE: dict = {}

_LSTM_FORWARD = (
    "T c_prev, raw T hWh, int64 H",
    "raw T a, T c, T tanh_c, T h",
    """
    const ptrdiff_t n = i / H, j = i % H, r = n * 4 * H;
    // the pre-activation is the step's input projection (already in a) plus h_{t-1} Wh
    const T gi = tanh(a[r + j] + hWh[r + j]) * (T)0.5 + (T)0.5;               // sigmoid via tanh
    const T gf = tanh(a[r + H + j] + hWh[r + H + j]) * (T)0.5 + (T)0.5;
    const T gg = tanh(a[r + 2 * H + j] + hWh[r + 2 * H + j]);
    const T go = tanh(a[r + 3 * H + j] + hWh[r + 3 * H + j]) * (T)0.5 + (T)0.5;
    a[r + j] = gi; a[r + H + j] = gf; a[r + 2 * H + j] = gg; a[r + 3 * H + j] = go;  // the cache's gates
    c = gf * c_prev + gi * gg;
    tanh_c = tanh(c);
    h = go * tanh_c;
    """,
    "minidni_lstm_cell_forward",
)

_LSTM_BACKWARD = (
    "T dh_out, T dh_next, T dc_next, T c_prev, T tanh_c, raw T gates, int64 H",
    "raw T da, T dc_prev",
    """
    const ptrdiff_t n = i / H, j = i % H, r = n * 4 * H;
    const T gi = gates[r + j], gf = gates[r + H + j], gg = gates[r + 2 * H + j], go = gates[r + 3 * H + j];
    const T dh = dh_out + dh_next;                                  // from outside + from step t+1
    const T dc = dc_next + dh * go * ((T)1 - tanh_c * tanh_c);      // h = o tanh(c)
    da[r + j] = dc * gg * gi * ((T)1 - gi);                         // c = f c_prev + i g; sigmoid'
    da[r + H + j] = dc * c_prev * gf * ((T)1 - gf);
    da[r + 2 * H + j] = dc * gi * ((T)1 - gg * gg);                 // tanh'
    da[r + 3 * H + j] = dh * tanh_c * go * ((T)1 - go);
    dc_prev = dc * gf;                                              // c_prev reaches c through f c_prev
    """,
    "minidni_lstm_cell_backward",
)

_ADAM = (
    "T g, T b1, T b2, T lr_c1, T sqrt_c2, T eps",
    "T p, T m, T v",
    """
    m = b1 * m + ((T)1 - b1) * g;
    v = b2 * v + ((T)1 - b2) * (g * g);
    p -= lr_c1 * m / (sqrt(v) / sqrt_c2 + eps);       // p -= lr m_hat / (sqrt(v_hat) + eps)
    """,
    "minidni_adam",
)


def available(xp) -> bool:
    """True when ``xp`` is an array module that compiles elementwise kernels (real CuPy)."""
    return xp.__name__ != "numpy" and hasattr(xp, "ElementwiseKernel")


def _kernel(xp, spec):
    key = (id(xp), spec[3])
    if key not in _CACHE:
        _CACHE[key] = xp.ElementwiseKernel(*spec)
    return _CACHE[key]


def lstm_cell_forward(xp, a, hWh, c_prev, c, tanh_c, h) -> None:
    """One LSTM step in place: ``a`` (N, 4H) pre-scaled input projection -> activated gates.

    ``hWh`` (N, 4H): ``h_{t-1} @ Wh_scaled``; ``c_prev`` (N, H); writes ``c``,
    ``tanh_c``, ``h`` (N, H). All C-contiguous.
    """
    _kernel(xp, _LSTM_FORWARD)(c_prev, hWh, a.shape[1] // 4, a, c, tanh_c, h)


def lstm_cell_backward(xp, dh_out, dh_next, dc_next, c_prev, tanh_c, gates, da, dc_prev) -> None:
    """Backward of one step: writes ``da`` (N, 4H) (gradient at the pre-activation) and ``dc_prev`` (N, H).

    ``dh_out`` (N, H): the gradient at h_t from outside; ``dh_next``, ``dc_next``:
    from step t+1 (zeros at the last step); ``gates`` (N, 4H): the forward's activated gates.
    """
    _kernel(xp, _LSTM_BACKWARD)(dh_out, dh_next, dc_next, c_prev, tanh_c, gates, gates.shape[1] // 4, da, dc_prev)


def adam_update(xp, p, g, m, v, *, b1: float, b2: float, lr_c1: float, sqrt_c2: float, eps: float) -> None:
    """One Adam step in place on 1-D buffers ``p``, ``m``, ``v`` from ``g`` (:class:`minidni.optim.Adam`'s formula)."""
    dt = p.dtype.type
    _kernel(xp, _ADAM)(g, dt(b1), dt(b2), dt(lr_c1), dt(sqrt_c2), dt(eps), p, m, v)
