"""Long short-term memory: one step and a whole time-major sequence, forward and backward.

Shapes: x (T, N, D) time-major; h, c (N, H); Wx (D, 4H); Wh (H, 4H); b (4H,).
The pre-activation ``a = x_t Wx + h_{t-1} Wh + b`` (N, 4H) holds the gates as
contiguous blocks of H columns in the order **i, f, g, o**:

    i = sigmoid(a[:, 0:H])      input gate
    f = sigmoid(a[:, H:2H])     forget gate
    g = tanh(a[:, 2H:3H])       cell candidate
    o = sigmoid(a[:, 3H:4H])    output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

The step functions are the readable reference; the sequence functions compute
the same thing fast. The input projection of all T steps is one matrix product
``x.reshape(T*N, D) @ Wx``; the backward computes dWx, dWh and dx with one
matrix product each over all steps. Only ``h @ Wh`` and ``da @ Wh.T`` stay
inside the time loop, because each step needs the previous one. The gates are
activated in place with a single tanh over (N, 4H) (sigmoid(z) = tanh(z/2)/2 +
1/2, stable for any z), and the backward's elementwise work writes into
preallocated blocks, so about three quarters of the time is matrix products.
With a :class:`minidni.workspace.Workspace` every array is reused from call to
call (nothing is allocated after the first); on CuPy each step's elementwise
work is one fused kernel (:mod:`minidni.kernels`), the code here the reference.

    >>> hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b)
    >>> dx, dh0, dc0, dWx, dWh, db = lstm_backward(dhs, dcT, cache)
"""

from __future__ import annotations

from typing import NamedTuple

from minidni import kernels
from minidni.backend import get_xp
from minidni.workspace import Workspace

__all__ = ["lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward", "lstm_first_output_backward"]


def _sigmoid(xp, z):
    """Stable logistic function: no overflow for large |z|."""
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def _gates(xp, a, H):
    """Split the pre-activation (N, 4H) into activated gates, written into one (N, 4H) array.

    Returns ``ifgo`` with ``ifgo[:, :H]=i``, ``[H:2H]=f``, ``[2H:3H]=g``, ``[3H:]=o``.
    """
    ifgo = _sigmoid(xp, a)  # i, f, o blocks are sigmoids ...
    ifgo[:, 2 * H:3 * H] = xp.tanh(a[:, 2 * H:3 * H])  # ... and g is a tanh
    return ifgo


def _gate_backward(xp, dh, dc_next, c_prev, ifgo, tanh_c, H):
    """Backward through one cell update; returns (da (N, 4H), dc_prev (N, H)).

    ``dh`` is the gradient at h_t, ``dc_next`` the gradient arriving at c_t from
    step t+1 (or from outside at the last step).
    """
    i, f, g, o = ifgo[:, :H], ifgo[:, H:2 * H], ifgo[:, 2 * H:3 * H], ifgo[:, 3 * H:]
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)  # h = o*tanh(c): tanh' = 1 - tanh^2
    da = xp.empty_like(ifgo)
    da[:, :H] = dc * g * i * (1.0 - i)  # c = f*c_prev + i*g, sigmoid' = s(1-s)
    da[:, H:2 * H] = dc * c_prev * f * (1.0 - f)
    da[:, 2 * H:3 * H] = dc * i * (1.0 - g * g)  # g = tanh(.)
    da[:, 3 * H:] = dh * tanh_c * o * (1.0 - o)
    return da, dc * f  # c_prev reaches c only through f*c_prev


class LSTMStepCache(NamedTuple):
    x: object       # (N, D)
    h_prev: object  # (N, H)
    c_prev: object  # (N, H)
    ifgo: object    # (N, 4H) activated gates
    tanh_c: object  # (N, H)
    Wx: object
    Wh: object


def lstm_step_forward(x, h, c, Wx, Wh, b):
    """One step: x (N, D), h and c (N, H) -> (h_next (N, H), c_next (N, H), cache)."""
    xp = get_xp(x, h, c, Wx, Wh, b)
    H = h.shape[1]
    ifgo = _gates(xp, x @ Wx + h @ Wh + b, H)
    c_next = ifgo[:, H:2 * H] * c + ifgo[:, :H] * ifgo[:, 2 * H:3 * H]
    tanh_c = xp.tanh(c_next)
    h_next = ifgo[:, 3 * H:] * tanh_c
    return h_next, c_next, LSTMStepCache(x, h, c, ifgo, tanh_c, Wx, Wh)


def lstm_step_backward(dh_next, dc_next, cache):
    """Gradients ``(dx, dh, dc, dWx, dWh, db)`` of one step given dh_next, dc_next (N, H)."""
    xp = get_xp(dh_next, dc_next)
    H = cache.h_prev.shape[1]
    da, dc = _gate_backward(xp, dh_next, dc_next, cache.c_prev, cache.ifgo, cache.tanh_c, H)
    dx = da @ cache.Wx.T  # a = x Wx + h Wh + b: (N, 4H) @ (4H, D)
    dh = da @ cache.Wh.T
    dWx = cache.x.T @ da  # summed over the batch: (D, N) @ (N, 4H)
    dWh = cache.h_prev.T @ da
    db = da.sum(axis=0)
    return dx, dh, dc, dWx, dWh, db


class LSTMCache(NamedTuple):
    x: object       # (T, N, D)
    hs: object      # (T+1, N, H): h0, h1, ..., hT (the forward returns the view hs[1:])
    cs: object      # (T+1, N, H): c0, c1, ..., cT
    h_in: object    # (T, N, H): the hidden state entering each step (keep * h_{t-1})
    c_in: object    # (T, N, H): the cell state entering each step
    ifgo: object    # (T, N, 4H) activated gates
    tanh_c: object  # (T, N, H)
    keep: object    # (T, N, 1) or None
    Wx: object
    Wh: object
    workspace: object  # the Workspace the backward takes its arrays from


def _sigmoid_as_tanh(xp, H, dtype, ws):
    """Per-column ``(scale, shift)`` (4H,) with ``gate = scale * tanh(scale * a) + shift``.

    sigmoid(z) = 0.5 tanh(z/2) + 0.5 on the i, f, o blocks (scale 0.5, shift 0.5) and
    tanh(z) on the g block (scale 1, shift 0): all four gates with one tanh call.
    """
    scale, shift = ws.array(xp, "scale", (4 * H,), dtype), ws.array(xp, "shift", (4 * H,), dtype)
    scale.fill(0.5)
    scale[2 * H:3 * H] = 1.0
    shift.fill(0.5)
    shift[2 * H:3 * H] = 0.0
    return scale, shift


def lstm_forward(x, h0, c0, Wx, Wh, b, *, keep=None, workspace=None):
    """Run T steps: x (T, N, D), h0 and c0 (N, H) -> (hs (T, N, H), cT (N, H), cache).

    ``hs[t]`` is the hidden state after step t, so ``hs[-1]`` is the final one.
    ``hs`` and ``cT`` are views into the cache: read them, do not write into them.

    ``keep`` (T, N), optional: step t starts from ``keep[t] * h_{t-1}`` and
    ``keep[t] * c_{t-1}`` (h_{-1} = h0). A 0 resets a batch row's state to zero
    before step t (a new episode starts there) and stops every gradient from
    flowing back across that point; ``keep[0]`` applies to h0 and c0. None means
    all ones (and skips the masking work).

    ``workspace`` (a :class:`minidni.workspace.Workspace`), optional: every array
    of the forward and of :func:`lstm_backward` comes from it and is reused by the
    next call with the same workspace and shapes, which overwrites this call's
    cache, ``hs`` and ``cT`` (copy what must outlive it). None: fresh arrays.
    """
    xp = get_xp(x, h0, c0, Wx, Wh, b, keep)
    T, N, D = x.shape
    H = h0.shape[1]
    if Wx.shape != (D, 4 * H) or Wh.shape != (H, 4 * H) or b.shape != (4 * H,):
        raise ValueError(f"LSTM weights must be Wx (D={D}, 4H={4 * H}), Wh (H={H}, 4H), b (4H,); "
                         f"got Wx {Wx.shape}, Wh {Wh.shape}, b {b.shape}")
    if T < 1:
        raise ValueError(f"x must hold at least one time step, got shape {x.shape}")
    if keep is not None and keep.shape != (T, N):
        raise ValueError(f"keep must have shape (T, N) = {(T, N)}, got {keep.shape}")
    ws = Workspace() if workspace is None else workspace
    dtype = x.dtype
    scale, shift = _sigmoid_as_tanh(xp, H, dtype, ws)
    Wx_scaled = xp.multiply(Wx, scale, out=ws.array(xp, "Wx_scaled", Wx.shape, dtype))
    Wh_scaled = xp.multiply(Wh, scale, out=ws.array(xp, "Wh_scaled", Wh.shape, dtype))
    # scale * a for every step: the input projection of all T steps is one product
    ifgo = ws.array(xp, "ifgo", (T, N, 4 * H), dtype)
    ifgo2 = ifgo.reshape(T * N, 4 * H)
    xp.matmul(x.reshape(T * N, D), Wx_scaled, out=ifgo2)
    ifgo2 += xp.multiply(b, scale, out=ws.array(xp, "b_scaled", b.shape, dtype))
    hs = ws.array(xp, "hs", (T + 1, N, H), dtype)
    cs = ws.array(xp, "cs", (T + 1, N, H), dtype)
    hs[0], cs[0] = h0, c0
    if keep is None:
        h_in, c_in = hs[:-1], cs[:-1]  # views: each step starts from the previous one's state
    else:
        keep = keep.astype(dtype, copy=False)[:, :, None]
        h_in, c_in = ws.array(xp, "h_in", (T, N, H), dtype), ws.array(xp, "c_in", (T, N, H), dtype)
    tanh_c = ws.array(xp, "tanh_c", (T, N, H), dtype)
    ig = ws.array(xp, "ig", (N, H), dtype)
    hWh = ws.array(xp, "hWh", (N, 4 * H), dtype)
    fused = kernels.available(xp)  # CuPy: the cell's elementwise work as one kernel per step
    for t in range(T):
        if keep is not None:
            xp.multiply(hs[t], keep[t], out=h_in[t])
            xp.multiply(cs[t], keep[t], out=c_in[t])
        a = ifgo[t]  # (N, 4H), overwritten in place by the activated gates
        xp.matmul(h_in[t], Wh_scaled, out=hWh)
        if fused:
            kernels.lstm_cell_forward(xp, a, hWh, c_in[t], cs[t + 1], tanh_c[t], hs[t + 1])
            continue
        a += hWh
        xp.tanh(a, out=a)
        a *= scale
        a += shift
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        xp.multiply(f, c_in[t], out=cs[t + 1])  # c_t = f * c_{t-1} + i * g
        xp.multiply(i, g, out=ig)
        cs[t + 1] += ig
        xp.tanh(cs[t + 1], out=tanh_c[t])
        xp.multiply(o, tanh_c[t], out=hs[t + 1])  # h_t = o * tanh(c_t)
    return hs[1:], cs[T], LSTMCache(x, hs, cs, h_in, c_in, ifgo, tanh_c, keep, Wx, Wh, ws)


def lstm_backward(dhs, dcT, cache, *, input_grad=True, out=None):
    """Gradients ``(dx, dh0, dc0, dWx, dWh, db)`` through all T steps.

    dhs (T, N, H): every gradient arriving at the hidden states from outside the
    recurrence (output losses; a gradient injected at the last state is added to
    ``dhs[-1]``). dcT (N, H): the gradient arriving at the final cell state, or None.
    dh0 and dc0 are the gradients w.r.t. h0 and c0 as passed in (before ``keep[0]``).

    ``input_grad=False``: skip dx (returned as None; its (T*N, 4H) @ (4H, D) product
    is wasted when x is data). ``out``: optional ``(dWx, dWh, db)`` arrays the weight
    gradients are written into (e.g. views of a flat gradient buffer) and returned.
    The other results live in the forward's workspace (see :func:`lstm_forward`).
    """
    xp = get_xp(dhs, dcT)
    x, hs, cs, h_in, c_in, ifgo, tanh_c, keep, Wx, Wh, ws = cache
    T, N, D = x.shape
    H = hs.shape[2]
    if dhs.shape != (T, N, H):
        raise ValueError(f"dhs must have the shape of hs, (T, N, H) = {(T, N, H)}, got {dhs.shape}")
    dtype = ifgo.dtype
    da = ws.array(xp, "da", ifgo.shape, dtype)
    if kernels.available(xp):
        dh, dc = _backward_steps_fused(xp, dhs, dcT, cache, da)
    else:
        dh, dc = _backward_steps(xp, dhs, dcT, cache, da)
    da2 = da.reshape(T * N, 4 * H)
    dx = None
    if input_grad:  # every step's input gradient in one product
        dx = xp.matmul(da2, Wx.T, out=ws.array(xp, "dx", (T * N, D), dtype)).reshape(T, N, D)
    dWx, dWh, db = out if out is not None else (xp.empty_like(Wx), xp.empty_like(Wh), xp.empty(4 * H, dtype))
    xp.matmul(x.reshape(T * N, D).T, da2, out=dWx)  # summed over steps and batch: (D, T*N) @ (T*N, 4H)
    xp.matmul(h_in.reshape(T * N, H).T, da2, out=dWh)  # the hidden state entering every step, stacked
    da2.sum(axis=0, out=db)
    return dx, dh, dc, dWx, dWh, db


def lstm_first_output_backward(dh1, cache):
    """``(dh0, dc0)`` (N, H): the gradient at the initial state of a gradient ``dh1`` (N, H) that arrives at
    the first hidden state ``hs[0]`` only, i.e. :func:`lstm_backward` with every other gradient zero.

    One step back instead of T: by linearity, the share of a loss on ``hs[0]`` (DNI+Aux's auxiliary
    loss) in the state gradient of a whole window, which can then be taken back out of it.
    """
    xp = get_xp(dh1)
    x, hs, cs, h_in, c_in, ifgo, tanh_c, keep, Wx, Wh, ws = cache
    H = hs.shape[2]
    da, dc0 = _gate_backward(xp, dh1, xp.zeros_like(dh1), c_in[0], ifgo[0], tanh_c[0], H)
    dh0 = da @ Wh.T  # h0 enters the first step's pre-activation through Wh
    if keep is not None:  # the first step started from keep[0] * state
        dh0 *= keep[0]
        dc0 *= keep[0]
    return dh0, dc0


def _backward_steps(xp, dhs, dcT, cache, da):
    """The time loop of :func:`lstm_backward`: fills ``da`` (T, N, 4H); returns (dh0, dc0)."""
    x, hs, cs, h_in, c_in, ifgo, tanh_c, keep, Wx, Wh, ws = cache
    T, N, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dtype = ifgo.dtype
    # Each gate's derivative w.r.t. its pre-activation, all steps at once (T, N, 4H):
    # sigmoid' = s (1 - s) on i, f, o; tanh' = 1 - g^2 on g.
    deriv = xp.subtract(1.0, ifgo, out=ws.array(xp, "deriv", ifgo.shape, dtype))
    deriv *= ifgo
    g_all, d_g = ifgo[:, :, 2 * H:3 * H], deriv[:, :, 2 * H:3 * H]
    xp.multiply(g_all, g_all, out=d_g)
    xp.subtract(1.0, d_g, out=d_g)
    # dc_t/dh_t through h = o * tanh(c): o * (1 - tanh(c)^2), all steps at once (T, N, H)
    o_dtanh = xp.multiply(tanh_c, tanh_c, out=ws.array(xp, "o_dtanh", tanh_c.shape, dtype))
    xp.subtract(1.0, o_dtanh, out=o_dtanh)
    o_dtanh *= ifgo[:, :, 3 * H:]
    dh_sum, dc_t, dc_buf, dh_buf = (ws.array(xp, name, (N, H), dtype) for name in ("dh_sum", "dc_t", "dc", "dh"))
    dh, dc = None, dcT  # gradients reaching h_t and c_t from step t+1 (None: nothing arrives)
    for t in reversed(range(T)):
        dh_t = dhs[t] if dh is None else xp.add(dhs[t], dh, out=dh_sum)
        xp.multiply(dh_t, o_dtanh[t], out=dc_t)
        if dc is not None:
            dc_t += dc
        gates, d = ifgo[t], da[t]
        xp.multiply(dc_t, gates[:, 2 * H:3 * H], out=d[:, :H])  # c = f c_prev + i g: dL/di = dc g
        xp.multiply(dc_t, c_in[t], out=d[:, H:2 * H])  # dL/df = dc c_prev
        xp.multiply(dc_t, gates[:, :H], out=d[:, 2 * H:3 * H])  # dL/dg = dc i
        xp.multiply(dh_t, tanh_c[t], out=d[:, 3 * H:])  # h = o tanh(c): dL/do = dh tanh(c)
        d *= deriv[t]  # through the gate nonlinearities to the pre-activation a_t
        dc = xp.multiply(dc_t, gates[:, H:2 * H], out=dc_buf)  # c_prev reaches c only through f * c_prev
        dh = xp.matmul(d, Wh.T, out=dh_buf)  # h_{t-1} enters a_t through Wh: (N, 4H) @ (4H, H)
        if keep is not None:  # the step started from keep * state: a reset row passes nothing back
            dh *= keep[t]
            dc *= keep[t]
    return dh, dc


def _backward_steps_fused(xp, dhs, dcT, cache, da):
    """:func:`_backward_steps` with each step's elementwise work as one CuPy kernel (:mod:`minidni.kernels`)."""
    x, hs, cs, h_in, c_in, ifgo, tanh_c, keep, Wx, Wh, ws = cache
    T, N, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dtype = ifgo.dtype
    zeros = ws.array(xp, "zeros", (N, H), dtype)
    zeros.fill(0)
    dh_buf = ws.array(xp, "dh", (N, H), dtype)
    dc_bufs = ws.array(xp, "dc", (N, H), dtype), ws.array(xp, "dc_t", (N, H), dtype)  # alternate: read one, write one
    dh, dc = zeros, zeros if dcT is None else dcT
    for t in reversed(range(T)):
        dc_prev = dc_bufs[t % 2]
        kernels.lstm_cell_backward(xp, dhs[t], dh, dc, c_in[t], tanh_c[t], ifgo[t], da[t], dc_prev)
        dh = xp.matmul(da[t], Wh.T, out=dh_buf)  # h_{t-1} enters a_t through Wh: (N, 4H) @ (4H, H)
        dc = dc_prev
        if keep is not None:  # a reset row passes nothing back
            dh *= keep[t]
            dc *= keep[t]
    return dh, dc
