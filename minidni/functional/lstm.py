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

Speed: the input projection of all T steps is one matrix product
``x.reshape(T*N, D) @ Wx``; the backward computes dWx, dWh and dx with one
matrix product each over all steps. Only ``h @ Wh`` and ``da @ Wh.T`` stay
inside the time loop, because each step needs the previous one.

    >>> hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b)
    >>> dx, dh0, dc0, dWx, dWh, db = lstm_backward(dhs, dcT, cache)
"""

from __future__ import annotations

from typing import NamedTuple

from minidni.backend import get_xp

__all__ = ["lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward"]


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
    h_prev: object  # (T, N, H): the hidden state entering each step (h0, h1, ..., h_{T-1})
    c_prev: object  # (T, N, H): the cell state entering each step
    ifgo: object    # (T, N, 4H) activated gates
    tanh_c: object  # (T, N, H)
    Wx: object
    Wh: object


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """Run T steps: x (T, N, D), h0 and c0 (N, H) -> (hs (T, N, H), cT (N, H), cache).

    ``hs[t]`` is the hidden state after step t, so ``hs[-1]`` is the final one.
    """
    xp = get_xp(x, h0, c0, Wx, Wh, b)
    T, N, D = x.shape
    H = h0.shape[1]
    if Wx.shape != (D, 4 * H) or Wh.shape != (H, 4 * H) or b.shape != (4 * H,):
        raise ValueError(f"LSTM weights must be Wx (D={D}, 4H={4 * H}), Wh (H={H}, 4H), b (4H,); "
                         f"got Wx {Wx.shape}, Wh {Wh.shape}, b {b.shape}")
    ax = (x.reshape(T * N, D) @ Wx + b).reshape(T, N, 4 * H)  # input projection of every step at once
    hs = xp.empty((T, N, H), dtype=x.dtype)
    h_prev, c_prev = xp.empty_like(hs), xp.empty_like(hs)
    ifgo_all = xp.empty((T, N, 4 * H), dtype=x.dtype)
    tanh_all = xp.empty_like(hs)
    h, c = h0, c0
    for t in range(T):
        h_prev[t], c_prev[t] = h, c
        ifgo = _gates(xp, ax[t] + h @ Wh, H)
        c = ifgo[:, H:2 * H] * c + ifgo[:, :H] * ifgo[:, 2 * H:3 * H]
        tanh_all[t] = xp.tanh(c)
        h = ifgo[:, 3 * H:] * tanh_all[t]
        hs[t], ifgo_all[t] = h, ifgo
    return hs, c, LSTMCache(x, h_prev, c_prev, ifgo_all, tanh_all, Wx, Wh)


def lstm_backward(dhs, dcT, cache):
    """Gradients ``(dx, dh0, dc0, dWx, dWh, db)`` through all T steps.

    dhs (T, N, H): every gradient arriving at the hidden states from outside the
    recurrence (output losses; a gradient injected at the last state is added to
    ``dhs[-1]``). dcT (N, H): the gradient arriving at the final cell state, or None.
    """
    xp = get_xp(dhs, dcT)
    x, h_prev, c_prev, ifgo, tanh_c, Wx, Wh = cache
    T, N, D = x.shape
    H = h_prev.shape[2]
    da = xp.empty_like(ifgo)
    dh = xp.zeros((N, H), dtype=dhs.dtype)  # gradient reaching h_t through the recurrence
    dc = xp.zeros_like(dh) if dcT is None else dcT
    for t in reversed(range(T)):
        da[t], dc = _gate_backward(xp, dhs[t] + dh, dc, c_prev[t], ifgo[t], tanh_c[t], H)
        dh = da[t] @ Wh.T  # h_{t-1} enters a_t through Wh
    da2 = da.reshape(T * N, 4 * H)
    dx = (da2 @ Wx.T).reshape(T, N, D)  # every step's input gradient in one product
    dWx = x.reshape(T * N, D).T @ da2
    dWh = h_prev.reshape(T * N, H).T @ da2
    db = da2.sum(axis=0)
    return dx, dh, dc, dWx, dWh, db
