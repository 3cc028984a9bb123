"""The true future gradient at a window boundary: what a recurrent synthetic gradient stands in for.

At the boundary after window k the trainer carries the state ``s_k = [h_T; c_T]``
(B, 2H) and has injected the synthetic gradient ``sg_scale * p_k / B`` there, where
``p_k = M(s_k)`` is in per-example units (see :mod:`minidni.dni.recurrent`). Full
BPTT would instead have injected the gradient of every future loss. Over the next
K windows of the real stream, with discount ``γ`` per window,

    G_K(γ) = B * ∂/∂s_k [ Σ_{j=1..K} γ^(j-1) L_{k+j}  +  tail ]

where ``tail`` is zero, or (``tail=True``) the synthetic gradient the trainer would
inject at the end of window k+K, ``γ^(K-1) * (sg_scale / B) * <p_{k+K}, s_{k+K}>``
with ``p_{k+K}`` held constant. Two cases matter:

- ``γ = 1``, no tail: the undiscounted gradient of the next K windows' losses, the
  part of the true gradient that truncated BPTT drops (up to the horizon K);
- ``γ = sg_scale``, with the tail: the K-step bootstrapped target. For K = 1 it is
  exactly the target M is regressed on in the next window (tested); M's fixed point
  is the discounted sum of future gradients with discount ``sg_scale`` per window.

:func:`future_gradient` computes ``G_K`` by one BPTT pass through the K windows
(T·K steps, episode resets as in training) with the trainer's current parameters;
it changes nothing in the trainer. Off the hot path: the command runs it only at
log time when asked (``--sg-truth-windows K``).

**λ-returns** (:func:`lambda_return`), the targets of ``sg_target="nstep"`` and
``"lambda"``. Write ``G_n`` for ``G_n(γ)`` with the tail (the n-step
bootstrapped return) and ``p_j = M(s_{k+j})`` for M's prediction at the j-th
boundary after ``s_k``. The λ-return truncated at K windows is

    G^λ = Σ_{n=1..K-1} (1-λ) λ^(n-1) G_n  +  λ^(K-1) G_K,

weights summing to 1; λ = 1 gives ``G_K`` (the K-step target), λ = 0 or K = 1
gives ``G_1`` (the bootstrapped target). Since ``G_n = ℓ_1 + γ G_{n-1}' J_1``
(``ℓ_1``: the first window's own loss gradient at ``s_k``, ``J_1`` its
transition, ``G_{n-1}'`` the (n-1)-step return from the next boundary, ``G_0' =
p_1``), the mixture obeys the recursion of TD(λ),

    G^λ_K = ℓ_1 + γ [ (1-λ) p_1 + λ G^λ_{K-1}' ] J_1,        G^λ_1 = ℓ_1 + γ p_1 J_1,

so ONE backward pass over the K windows computes it: at the far boundary
inject ``γ p_K``, at each boundary j < K inject ``γ (1-λ) p_j`` and scale the
gradient crossing it by ``γ λ`` (a row whose episode ends at a boundary passes
nothing across it and gets no prediction there). Tested against the explicit
weighted sum.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from minidni.backend import get_xp, to_device

__all__ = ["future_gradient", "lambda_return", "compare"]

Window = tuple[Any, Callable, Any]  # (x (T, B, D) on the device, loss_grad(logits) -> (loss, dlogits, ...), episode_end)


def _keep(x, ends):
    """(T, B) LSTM keep mask: 0 at step t for rows whose episode ended at t-1 (as the trainer resets them)."""
    if ends is None:
        return None
    keep = np.ones(ends.shape, x.dtype)
    keep[1:] = ~ends[:-1]
    return to_device(keep, get_xp(x))


def future_gradient(trainer, state, windows: Sequence[Window], *, discount: float = 1.0, tail: bool = False):
    """``G_K(discount)`` (B, 2H) at the boundary whose carried state is ``state = (h, c)``; module docstring.

    ``windows``: the K windows that follow the boundary, in order, each ``(x, loss_grad, episode_end)``
    with the training loss's ``loss_grad`` (its dlogits are of the batch-mean loss, hence the factor B).
    """
    xp = get_xp(state[0])
    T, B, H, K = windows[0][0].shape[0], state[0].shape[0], trainer.hidden, len(windows)
    x = xp.concatenate([w[0] for w in windows])  # (K*T, B, D): the K windows as one sequence
    ends = None
    if trainer.reset == "episode" and windows[0][2] is not None:
        ends = np.concatenate([np.asarray(w[2], bool) for w in windows])
    (hs, cT), cache = trainer.lstm.forward(x, state, keep=_keep(x, ends))
    logits, head_cache = trainer.head.forward(hs.reshape(K * T * B, H))
    logits = logits.reshape(K * T, B, -1)
    dlogits = xp.empty_like(logits)
    for j, (_, loss_grad, _) in enumerate(windows):
        steps = slice(j * T, (j + 1) * T)
        dlogits[steps] = loss_grad(logits[steps])[1] * (discount ** j)  # window k+1+j weighs γ^j
    dflat, _ = trainer.head.backward(dlogits.reshape(K * T * B, -1), head_cache)
    dhs = dflat.reshape(K * T, B, H)
    dcT = None
    if tail and trainer.uses_sg:  # the SG the trainer would inject after the K-th window
        p = trainer.predict_sg(xp.concatenate([hs[-1], cT], axis=1))
        if ends is not None:
            p = p * _carry(x, ends)  # an episode that ended there: no SG
        delta = p * (trainer.sg_scale / B * discount ** (K - 1))
        dhs[-1] += delta[:, :H]
        dcT = delta[:, H:]
    _, dh0, dc0, _ = trainer.lstm.backward(dhs, dcT, cache, input_grad=False)
    return xp.concatenate([dh0, dc0], axis=1) * float(B)


def _carry(x, ends):
    """(B, 1): 0 for rows whose episode ends at the window's last step (nothing crosses), or None."""
    if ends is None:
        return None
    return to_device((~np.asarray(ends, bool)[-1]).astype(x.dtype)[:, None], get_xp(x))


def _window_forward(trainer, state, window):
    """One window from ``state``: ``(lstm cache, head cache, dlogits, s = [h_T; c_T] (B, 2H), carry (B, 1) or None)``."""
    x, loss_grad, ends = window
    T, B, _ = x.shape
    ends = ends if trainer.reset == "episode" else None
    (hs, cT), lstm_cache = trainer.lstm.forward(x, state, keep=_keep(x, ends))
    logits, head_cache = trainer.head.forward(hs.reshape(T * B, trainer.hidden))
    dlogits = loss_grad(logits.reshape(T, B, -1))[1]
    s = get_xp(x).concatenate([hs[-1], cT], axis=1)
    return lstm_cache, head_cache, dlogits, s, _carry(x, ends)


def _window_backward(trainer, forward, inject):
    """``B * d/d(start state)`` (B, 2H) of the window's loss plus ``<inject, s> / B`` (inject: per-example units)."""
    lstm_cache, head_cache, dlogits, s, _ = forward
    T, B = dlogits.shape[:2]
    H = trainer.hidden
    dflat, _ = trainer.head.backward(dlogits.reshape(T * B, -1), head_cache)
    dhs = dflat.reshape(T, B, H)
    dhs[-1] += inject[:, :H] * (1.0 / B)  # per-example units -> gradient of the batch-mean loss
    _, dh0, dc0, _ = trainer.lstm.backward(dhs, inject[:, H:] * (1.0 / B), lstm_cache, input_grad=False)
    return get_xp(s).concatenate([dh0, dc0], axis=1) * float(B)


def lambda_return(trainer, state, windows: Sequence[Window], *, lam: float, discount: float, predict=None):
    """``G^λ`` (B, 2H) truncated at ``K = len(windows)`` at the boundary whose carried state is ``state``.

    Module docstring: one forward pass through the K windows with the trainer's current
    parameters (the states at the K boundaries), then one backward pass. ``predict(j, s)``
    -> (B, 2H) is M's prediction at boundary j = 1..K from ``s = [h_T; c_T]`` (default: the
    trainer's M; a test passes an oracle). Windows as in :func:`future_gradient`.
    """
    predict = predict or (lambda j, s: trainer.predict_sg(s))
    K = len(windows)
    forwards, (h, c) = [], state
    for window in windows:
        f = _window_forward(trainer, (h, c), window)
        forwards.append(f)
        s, carry = f[3], f[4]
        h, c = s[:, :trainer.hidden], s[:, trainer.hidden:]
        if carry is not None:
            h, c = h * carry, c * carry  # a row whose episode ended starts the next window from zero
    ret = None
    for j in reversed(range(K)):
        s, carry = forwards[j][3], forwards[j][4]
        if j == K - 1:
            inject = predict(K, s) * discount  # the far end: γ p_K
        else:
            inject = ret * (discount * lam)  # the return from the next boundary crosses with weight γλ ...
            if lam < 1.0:
                inject += predict(j + 1, s) * (discount * (1.0 - lam))  # ... plus γ(1-λ) p_j
        if carry is not None:
            inject = inject * carry  # no credit across an episode end
        ret = _window_backward(trainer, forwards[j], inject)
    return ret


def compare(p, g, keep=None) -> tuple[float, float]:
    """``(cos(p, g), |p| / |g|)`` over the rows where ``keep`` (B, 1) is 1 (all rows when None), on the host."""
    xp = get_xp(p)
    if keep is not None:
        p, g = p * keep, g * keep
    dot, pp, gg = (float(v) for v in (xp.vdot(p, g), xp.vdot(p, p), xp.vdot(g, g)))
    if pp == 0.0 or gg == 0.0:
        return float("nan"), (0.0 if gg else float("nan"))
    return dot / (pp * gg) ** 0.5, (pp / gg) ** 0.5
