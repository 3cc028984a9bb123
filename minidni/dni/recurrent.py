"""Recurrent DNI: truncated BPTT of an LSTM with a synthetic gradient at each window's end.

The model is an LSTM core (:class:`minidni.layers.LSTM`) and a linear output head
applied to every hidden state. A stream (Copy, PTB, ...) is cut into windows of T
steps; the state ``(h, c)`` (B, H) each is carried from one window to the next and
only the backward pass is cut at the window boundary (PAPER.md §2).

Modes (``mode=``):

- ``"bptt"``: truncated BPTT, nothing flows into the window from the future (δ_T = 0).
- ``"dni"``: a synthetic gradient ``δ̂_T = M([h_T; c_T])`` is injected at the last
  state (added to ``dhs[-1]`` for h, passed as ``dcT`` for c). M is a linear map
  (2H -> 2H), weights and bias zero at the start, so the first SGs are exactly 0.
- ``"dni-aux"``: as ``"dni"``, plus an auxiliary linear head on the window's first
  hidden state ``hs[0]`` (the output of the window's first step) that predicts the
  synthetic gradient M produces at the end of the same window; its L2 loss,
  weighted by ``aux_weight``, flows back through the core (PAPER.md §2, DNI + Aux).
  The prediction's horizon is therefore T-1 steps, not T: the head could read the
  carried state instead (T steps ahead), but that state comes from the previous
  window, so the aux loss's gradient would train nothing of this window's core.
  M's bootstrapped target is the gradient of the task loss and the injected SG
  only: the aux loss's share of ``(dh0, dc0)`` is taken back out
  (:func:`minidni.functional.lstm_first_output_backward`), so M does not regress on
  the aux head's own error. ``aux_in_target=True`` keeps it in, for comparison.

**Units of M.** The task loss of a window is the sum over its steps of the mean over
the batch, so a row's gradient carries a factor 1/B. M predicts the *per-example*
gradient, ``p = B * ∂L/∂[h_T; c_T]``, so its targets do not shrink as the batch grows;
the gradient injected is ``sg_scale * p / B`` (``sg_scale`` default 0.1, PAPER.md
§2 [impl]). M's regression target is ``B * (dh0, dc0)``: the gradient that reaches
the first state of the *next* window when that window is trained, which includes
that window's own (scaled) synthetic gradient (bootstrapping). Because the
future beyond the next window enters the target with the factor ``sg_scale``, M
learns a discounted sum of future gradients, discount ``sg_scale`` per window.

**Targets** (``sg_target=``, PAPER.md §3, Appendix A and Pemberton & Costa 2024):

- ``"bootstrap"`` (default): the target above, ``G_1``: one window of true losses, then M.
- ``"nstep"`` with ``sg_horizon=n``: ``G_n``, the true losses of the next n windows
  (window j discounted by ``γ^(j-1)``, ``γ = sg_scale``) plus the SG after them,
  backpropagated to ``s_k`` (:func:`minidni.dni.future.future_gradient` with the tail).
  n = 1 is ``"bootstrap"``.
- ``"lambda"`` with ``sg_horizon=K`` and ``sg_lambda=λ``: the λ-return
  ``Σ_{n<K} (1-λ) λ^(n-1) G_n + λ^(K-1) G_K`` (:func:`minidni.dni.future.lambda_return`,
  one backward pass). λ = 0 or K = 1 is ``"bootstrap"``, λ = 1 is ``"nstep"`` with n = K.

A K-window target for ``s_k`` exists only once window k+K has run, so M's fit
lags K windows behind its prediction. The trainer keeps a ring of the last K
boundaries (``s``, the prediction, the reset mask) and of the windows after the
oldest one (inputs, episode ends and a replayable loss: ``train_window``'s
``replay``), and after window k+K's own backward recomputes the K windows
from the carried ``s_k`` with the CURRENT core and M (like ``future_gradient``), so the
cost per window is about K extra forward and backward passes of a window (one
training window costs one). Chosen over the eligibility traces of Pemberton & Costa,
which give the untruncated λ-return online but carry, per row, a trace of M's
parameters for each of M's outputs (B · 2H · |θ_M| numbers, ~2 GB at H = 128,
B = 32 for a linear M) updated through the (2H, 2H) Jacobian of each window. The
targets are exact (for the current parameters), honour episode resets (no
credit crosses an episode end) and reduce to ``"bootstrap"`` exactly where they
should (the trainer then takes the bootstrap path: n = 1, K = 1 or λ = 0).
The recomputation drops the aux loss, as M's bootstrapped target does by default.

**Order of operations** (window k): forward from the carried state; predict
``p_k = M(s_k)``, ``s_k = [h_T; c_T]``; backward with the injected SG (and the aux
loss); the gradient ``(dh0, dc0)`` at the window's first state is the target for
``p_{k-1}``: M takes one optimiser step on ``0.5 |M(s_{k-1}) - target|^2`` (mean over
rows); the core, head (and aux head) take one optimiser step, after clipping their
gradients by global norm. ``s_k`` waits (``pending``) until window k+1 brings its target.

**Episode resets** (``reset="episode"``): after a step where ``episode_end[t, b]`` is
True, row b's state is zeroed before step t+1, so neither state nor gradient
crosses an episode boundary. Inside a window this is the ``keep`` mask of
:func:`minidni.functional.lstm_forward` (one fast call per window whatever the
rows' phases); at the window's end the carried state is multiplied by
``1 - episode_end[-1]``. A row whose episode ends at the window's last step gets
no synthetic gradient (it has no future) and its M prediction gets no regression
target. ``reset="never"`` carries the state across episodes. :meth:`reset_state`
zeroes every row and drops the pending SG input (e.g. at the start of a PTB pass).

**Diagnostics** are device arrays collected every window and copied to the host only
by :meth:`collect_diagnostics` (at log time): the task loss, ``|p_{k-1}| / |target|``
and ``cos(p_{k-1}, target)`` over all rows that have a target, the cell state's RMS,
the aux loss and the core's gradient norm before clipping.

    >>> tr = RecurrentTrainer(10, 9, 64, mode="dni", rng=np.random.default_rng(0))
    >>> loss = tr.train_window(x, lambda logits: copy_loss(logits, target, mask), episode_end=ends)
    >>> diag = tr.collect_diagnostics()     # host dict, once per log interval
"""

from __future__ import annotations

import math
from collections import deque
from functools import partial
from typing import Any, Callable

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.dni.future import lambda_return
from minidni.functional.losses import softmax_cross_entropy
from minidni.functional.lstm import lstm_first_output_backward
from minidni.layers.linear import Linear
from minidni.layers.lstm import LSTM
from minidni.flat import FlatParams
from minidni.optim import FlatAdam, FlatSGD
from minidni.tasks.copy import sequence_bits
from minidni.workspace import Workspace

__all__ = ["MODES", "RESETS", "SG_TARGETS", "DIAG_FIELDS", "RecurrentTrainer", "TargetRing", "copy_loss", "char_loss"]

MODES = ("bptt", "dni", "dni-aux")
SG_TARGETS = ("bootstrap", "nstep", "lambda")  # M's regression target (module docstring: Targets)
RESETS = ("episode", "never")
OPTIMIZERS = ("adam", "sgd")
# one (len(DIAG_FIELDS),) vector per window; sg_* are 0 and has_target 0 without a target
DIAG_FIELDS = ("loss", "sg_norm", "target_norm", "sg_dot", "cell_rms", "aux_loss", "grad_norm", "has_target")
QUANTITY = {
    "loss": "the training loss",
    "sg_norm": "the synthetic gradient's norm",
    "target_norm": "the norm of the synthetic gradient's regression target",
    "sg_dot": "the synthetic gradient's dot product with its target",
    "cell_rms": "the LSTM cell state's RMS",
    "aux_loss": "the auxiliary loss",
    "grad_norm": "the core's gradient norm",
}


def copy_loss(logits, target, mask):
    """Copy / Repeat Copy loss of a window: ``(loss, dlogits, step_bits)``.

    logits, target (T, B, C), mask (T, B). ``step_bits`` (T, B) is
    :func:`minidni.tasks.sequence_bits` (masked sigmoid cross-entropy in bits);
    ``loss`` (0-d, nats) is its sum over steps and channels, mean over the batch.
    """
    xp = get_xp(logits, target, mask)
    B = logits.shape[1]
    step_bits = sequence_bits(logits, target, mask)
    loss = step_bits.sum() * (math.log(2.0) / B)
    probs = 0.5 * xp.tanh(0.5 * logits) + 0.5  # stable sigmoid
    dlogits = (probs - target) * (mask[..., None] * (1.0 / B))  # d(softplus(z) - t z)/dz = sigmoid(z) - t
    return loss, dlogits, step_bits


def char_loss(logits, labels):
    """Next-symbol loss of a window: logits (T, B, V), labels (T, B) int -> ``(loss, dlogits)``.

    ``loss`` (0-d, nats) is the sum over steps of the mean over the batch, like
    :func:`copy_loss`; the mean per character is ``loss / T``.
    """
    T, B, V = logits.shape
    mean, dflat = softmax_cross_entropy(logits.reshape(T * B, V), labels.reshape(T * B))
    return mean * T, dflat.reshape(T, B, V) * T  # mean over T*B -> sum over T of the batch means


LOSSES = {"copy_loss": copy_loss, "char_loss": char_loss}  # the losses a checkpointed ring can replay


def _check_choice(name: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _check_nonneg(name: str, value) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _loss_parts(replay) -> tuple[str, dict]:
    """``(name in LOSSES, keyword arrays)`` of a replayable loss, for a checkpoint (ValueError otherwise)."""
    if isinstance(replay, partial) and not replay.args and replay.func in LOSSES.values():
        return next(k for k, f in LOSSES.items() if f is replay.func), dict(replay.keywords)
    raise ValueError(f"cannot checkpoint the target ring: a window's replay is {replay!r}; pass "
                     "replay=functools.partial(copy_loss or char_loss, name=array, ...) to train_window")


class TargetRing:
    """What an nstep/lambda target waits for: the last boundaries and the windows after the oldest one.

    ``boundaries``: ``(s (B, 2H), p (B, 2H), keep (B, 1) or None)`` oldest first (``s`` the
    uncarried ``[h_T; c_T]``, ``p`` M's masked prediction then, for the diagnostics);
    ``windows``: ``(x (T, B, D), replay, episode_end (T, B) host bool or None)`` after
    ``boundaries[0]``, with ``replay(logits) -> (loss, dlogits, ...)``. Between windows
    ``len(windows) == len(boundaries) - 1 < horizon``.
    """

    def __init__(self, horizon: int):
        self.horizon = horizon
        self.boundaries: deque = deque()
        self.windows: deque = deque()

    def push_window(self, window) -> None:
        if self.boundaries:  # (the first window after a reset follows no boundary: nothing waits for it)
            self.windows.append(window)

    def pop_due(self):
        """``(oldest boundary, the horizon windows after it)`` once they are all here (both dropped), else None."""
        if len(self.windows) < self.horizon:
            return None
        due = self.boundaries.popleft(), list(self.windows)
        self.windows.popleft()
        return due

    def clear(self) -> None:
        self.boundaries.clear()
        self.windows.clear()

    def state_dict(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: ``ring.b{i}.*`` and ``ring.w{i}.*`` arrays, and which parts exist."""
        arrays, windows = {}, []
        for i, (s, p, keep) in enumerate(self.boundaries):
            arrays.update({f"ring.b{i}.s": s, f"ring.b{i}.p": p})
            if keep is not None:
                arrays[f"ring.b{i}.keep"] = keep
        for i, (x, replay, ends) in enumerate(self.windows):
            name, keywords = _loss_parts(replay)
            arrays[f"ring.w{i}.x"] = x
            if ends is not None:
                arrays[f"ring.w{i}.ends"] = ends
            arrays.update({f"ring.w{i}.loss.{k}": v for k, v in keywords.items()})
            windows.append({"loss": name, "keywords": sorted(keywords)})
        return arrays, {"boundaries": len(self.boundaries), "windows": windows}

    def load_state_dict(self, arrays: dict, meta: dict, xp, dtype) -> None:
        """Restore :meth:`state_dict` onto ``xp``; floats as ``dtype``, loss keywords as saved, ends on the host."""
        def get(key, cast=True):
            if key not in arrays:
                return None
            v = to_device(arrays[key], xp)
            return v.astype(dtype, copy=False) if cast else v

        self.clear()
        for i in range(meta["boundaries"]):
            self.boundaries.append((get(f"ring.b{i}.s"), get(f"ring.b{i}.p"), get(f"ring.b{i}.keep")))
        for i, w in enumerate(meta["windows"]):
            keywords = {k: get(f"ring.w{i}.loss.{k}", cast=False) for k in w["keywords"]}
            ends = arrays.get(f"ring.w{i}.ends")
            self.windows.append((get(f"ring.w{i}.x"), partial(LOSSES[w["loss"]], **keywords),
                                 None if ends is None else np.asarray(ends, bool)))


class RecurrentTrainer:
    """Streaming truncated-BPTT trainer for an LSTM core + linear head, with or without DNI.

    Args:
        input_dim, output_dim: D of the inputs (T, B, D) and C of the logits (T, B, C).
        hidden: H, the LSTM's units.
        mode: ``"bptt"``, ``"dni"`` or ``"dni-aux"`` (module docstring).
        lr: the core's (LSTM + head + aux head) learning rate.
        sg_lr: M's learning rate (default ``lr / 10``: M's targets move as the core learns,
            a slower M keeps its output on the scale of its target).
        sg_scale: factor on M's output before it is injected (default 0.1).
        aux_weight: λ of the dni-aux loss (ignored by the other modes).
        aux_in_target: dni-aux only: let the aux loss's gradient into M's target (the behaviour
            before the fix; off by default, module docstring).
        sg_target: ``"bootstrap"``, ``"nstep"`` or ``"lambda"`` (module docstring: Targets).
        sg_horizon: the windows an nstep/lambda target looks ahead (n, or the truncation K), >= 1.
        sg_lambda: λ in [0, 1] of the lambda target.
        clip: max global norm of the core's gradients per window; 0 disables clipping.
        reset: ``"episode"`` (zero a row's state after its episode ends) or ``"never"``.
        optimizer: ``"adam"`` or ``"sgd"`` (plain, used by the exactness tests), for the
            core and for M alike.
        rng: initialises the LSTM and the head (M and the aux head start at zero).
        dtype: parameter dtype (inputs must match).
    """

    def __init__(self, input_dim: int, output_dim: int, hidden: int, *, mode: str = "dni", lr: float = 1e-3,
                 sg_lr: float | None = None, sg_scale: float = 0.1, aux_weight: float = 0.1, clip: float = 1.0,
                 reset: str = "episode", optimizer: str = "adam", rng: np.random.Generator, dtype=np.float32,
                 aux_in_target: bool = False, sg_target: str = "bootstrap", sg_horizon: int = 1,
                 sg_lambda: float = 0.5):
        self.mode = _check_choice("mode", mode, MODES)
        self.sg_target = _check_choice("sg_target", sg_target, SG_TARGETS)
        if isinstance(sg_horizon, bool) or not isinstance(sg_horizon, (int, np.integer)) or sg_horizon < 1:
            raise ValueError(f"sg_horizon must be an integer >= 1 (windows), got {sg_horizon!r}")
        if not 0.0 <= float(sg_lambda) <= 1.0:
            raise ValueError(f"sg_lambda must be in [0, 1], got {sg_lambda!r}")
        if sg_target != "bootstrap" and (mode == "bptt" or aux_in_target):
            raise ValueError(f"sg_target={sg_target!r} needs mode dni or dni-aux without aux_in_target")
        self.sg_horizon, self.sg_lambda = int(sg_horizon), float(sg_lambda) if sg_target == "lambda" else 1.0
        self.reset = _check_choice("reset", reset, RESETS)
        _check_choice("optimizer", optimizer, OPTIMIZERS)
        self.sg_scale = _check_nonneg("sg_scale", sg_scale)
        self.aux_weight = _check_nonneg("aux_weight", aux_weight)
        self.aux_in_target = bool(aux_in_target)
        self.clip = _check_nonneg("clip", clip)
        self.hidden = H = hidden
        self.lstm = LSTM(input_dim, hidden, rng=rng, dtype=dtype)
        self.head = Linear(hidden, output_dim, rng=rng, dtype=dtype, init="xavier")
        self.layers = {"lstm": self.lstm, "head": self.head}
        self.uses_sg = mode != "bptt"
        if mode == "dni-aux":
            self.layers["aux"] = self.aux = Linear(H, 2 * H, rng=rng, dtype=dtype, init="zeros")
        self.core = FlatParams(self.layers)  # one buffer for the core's params, one for their grads
        self.core_params = self.core.params
        opt = FlatAdam if optimizer == "adam" else FlatSGD
        self.opt = opt(self.core, lr=lr)
        if self.uses_sg:
            self.sg = Linear(2 * H, 2 * H, rng=rng, dtype=dtype, init="zeros")  # zero W and zero b: first SG is 0
            self.sg_flat = FlatParams({"": self.sg})
            self.sg_opt = opt(self.sg_flat, lr=lr / 10 if sg_lr is None else sg_lr)
        self.state = None      # (h, c) carried into the next window, or None (zeros)
        self.pending = None    # (s, p, keep) of the last window's SG input, awaiting its target
        bootstrap = sg_target == "bootstrap" or self.sg_horizon == 1 or self.sg_lambda == 0.0
        self.ring = None if bootstrap else TargetRing(self.sg_horizon)  # nstep/lambda: the windows a target waits for
        self.step = 0          # windows trained
        self._workspaces = (Workspace(), Workspace())  # used on alternate windows
        self._diag = None      # (capacity, len(DIAG_FIELDS)) device ring of per-window diagnostics ...
        self._diag_count = 0   # ... of which the first rows are filled

    # -- the model -------------------------------------------------------------------------
    def predict_sg(self, s):
        """M's per-example synthetic gradient p (B, 2H) for the state s = [h_T; c_T] (B, 2H)."""
        return s @ self.sg.params["W"] + self.sg.params["b"]

    def reset_state(self) -> None:
        """Zero every row's state and forget the pending SG inputs (their targets will not come)."""
        self.state, self.pending = None, None
        if self.ring is not None:
            self.ring.clear()

    def _keep(self, x, ends):
        """(T, B) keep mask for :func:`minidni.functional.lstm_forward`, or None without resets.

        ``keep[t] = 0`` for a row whose episode ended at step t-1, so its state is
        zeroed before step t and no gradient crosses back. ``keep[0] = 1``: a row
        whose episode ended at the previous window's last step was already zeroed
        when the state was carried over.
        """
        if ends is None:
            return None
        ends = np.asarray(ends, bool)
        keep = np.ones(ends.shape, x.dtype)
        keep[1:] = ~ends[:-1]
        return to_device(keep, get_xp(x))

    @staticmethod
    def _carry(x, ends):
        """(B, 1): 0 for rows whose episode ends at the window's last step (their state is not carried)."""
        if ends is None:
            return None
        return to_device((~np.asarray(ends, bool)[-1]).astype(x.dtype)[:, None], get_xp(x))

    def forward_logits(self, x, state=None, episode_end=None):
        """Inference: x (T, B, D) -> (logits (T, B, C), final state); no training, nothing stored."""
        T, B, _ = x.shape
        state = self.lstm.zero_state(B) if state is None else state
        ends = episode_end if self.reset == "episode" else None
        (hs, cT), _ = self.lstm.forward(x, state, keep=self._keep(x, ends))
        logits, _ = self.head.forward(hs.reshape(T * B, self.hidden))
        h, c = hs[-1], cT
        carry = self._carry(x, ends)
        if carry is not None:
            h, c = h * carry, c * carry
        return logits.reshape(T, B, -1), (h.copy(), c.copy())

    # -- one window ------------------------------------------------------------------------
    def train_window(self, x, loss_grad: Callable[[Any], tuple], episode_end=None, *, replay=None):
        """Train on one window; returns the loss (0-d device array).

        x (T, B, D) on the parameters' backend; ``loss_grad(logits (T, B, C)) -> (loss,
        dlogits, ...)`` (extra return values are ignored); ``episode_end`` (T, B) host
        bool array or None (no resets; required for ``reset="episode"`` to reset).
        ``replay``: the same loss as a function without side effects, for the nstep/lambda
        targets, which evaluate it again in later windows (default: ``loss_grad`` itself);
        a checkpoint needs ``functools.partial(copy_loss or char_loss, **arrays)``. Those
        targets keep references to ``x``, ``episode_end`` and ``replay`` for K windows.

        The LSTM's activations and gradients, the SG input and the carried state
        come from one of two workspaces used on alternate windows (so nothing large
        is allocated after the first two windows, and what the next window reads,
        ``state`` and ``pending``, survives this one); the gradients are written into
        (or copied into) the flat gradient buffer the fused optimiser steps on.
        """
        xp = get_xp(x)
        T, B, _ = x.shape
        H = self.hidden
        ws = self._workspaces[self.step % 2]
        dtype = x.dtype
        if self.state is None:
            self.state = self.lstm.zero_state(B)
        ends = episode_end if self.reset == "episode" else None
        (hs, cT), lstm_cache = self.lstm.forward(x, self.state, keep=self._keep(x, ends), workspace=ws)
        logits, head_cache = self.head.forward(hs.reshape(T * B, H))
        loss, dlogits = loss_grad(logits.reshape(T, B, -1))[:2]
        dflat, head_grads = self.head.backward(dlogits.reshape(T * B, -1), head_cache)
        dhs = dflat.reshape(T, B, H)
        grads = {f"head.{k}": v for k, v in head_grads.items()}
        keep_last = self._carry(x, ends)
        dcT = s = p = None
        aux_loss = xp.zeros((), dtype)
        if self.uses_sg:
            s = ws.array(xp, "sg_input", (B, 2 * H), dtype)  # [h_T; c_T]
            s[:, :H], s[:, H:] = hs[-1], cT
            p = self.predict_sg(s)
            if keep_last is not None:
                p *= keep_last  # an episode that ended here has no future: no SG
            delta = xp.multiply(p, self.sg_scale / B, out=ws.array(xp, "sg_delta", (B, 2 * H), dtype))
            dhs[-1] += delta[:, :H]  # per-example units -> gradient of the batch-mean loss
            dcT = delta[:, H:]
        if self.mode == "dni-aux":
            pred, aux_cache = self.aux.forward(hs[0])
            diff = pred - p  # target: M's (unscaled, per-example) SG at this window's end, held constant
            aux_loss = (diff * diff).sum() * (0.5 * self.aux_weight / B)
            diff *= self.aux_weight / B
            dh_aux, aux_grads = self.aux.backward(diff, aux_cache)
            dhs[0] += dh_aux  # the aux loss trains the core through the first hidden state
            grads.update({f"aux.{k}": v for k, v in aux_grads.items()})
        lstm_out = {k: self.core.grads[f"lstm.{k}"] for k in self.lstm.params}
        _, dh0, dc0, _ = self.lstm.backward(dhs, dcT, lstm_cache, input_grad=False, out=lstm_out)
        if self.mode == "dni-aux" and not self.aux_in_target and self.pending is not None and self.ring is None:
            aux_h, aux_c = lstm_first_output_backward(dh_aux, lstm_cache)
            dh0 -= aux_h  # M's target: the task and SG gradient, without the aux loss's share
            dc0 -= aux_c
        row = self._diag_row(xp, dtype)
        row[0] = loss
        if self.ring is not None:  # nstep/lambda: s leaves the workspace for the ring (K windows)
            s = s.copy()
            self._fit_from_ring(xp, (x, replay or loss_grad, ends), (s, p, keep_last), B, row)
        elif self.pending is not None:
            self._fit_sg(xp, dh0, dc0, B, ws, row)
        else:
            row[1:4], row[7] = 0.0, 0.0  # no target this window
        self.pending = (s, p, keep_last) if self.uses_sg else None
        self.core.gather(grads)  # head and aux grads; the LSTM's are already in the buffer
        row[6] = self.core.clip_grads(self.clip) if self.clip else self.core.grad_norm()
        self.opt.step()
        h, c = ws.array(xp, "state_h", (B, H), dtype), ws.array(xp, "state_c", (B, H), dtype)
        if keep_last is not None:
            xp.multiply(hs[-1], keep_last, out=h)
            xp.multiply(cT, keep_last, out=c)
        else:  # copies: hs and cT live in the workspace, which the window after next overwrites
            h[...], c[...] = hs[-1], cT
        self.state = (h, c)
        row[4] = xp.sqrt(xp.vdot(cT, cT) / cT.size)  # the cell state's RMS
        row[5] = aux_loss
        self.step += 1
        return loss

    def bootstrap_target(self, dh0, dc0, B: int, out=None):
        """M's regression target from the next window's first-state gradient: ``B * [dh0; dc0]`` (B, 2H).

        ``out``: an optional (B, 2H) array to write it into.
        """
        xp = get_xp(dh0)
        H = dh0.shape[1]
        out = xp.empty((B, 2 * H), dh0.dtype) if out is None else out
        xp.multiply(dh0, float(B), out=out[:, :H])
        xp.multiply(dc0, float(B), out=out[:, H:])
        return out

    def _fit_sg(self, xp, dh0, dc0, B, ws, row):
        """One step of M toward the bootstrapped target of the pending window (diagnostics: :meth:`_regress`)."""
        s = self.pending[0]
        target = self.bootstrap_target(dh0, dc0, B, out=ws.array(xp, "sg_target", s.shape, s.dtype))
        self._regress(xp, self.pending, target, B, row)

    def _fit_from_ring(self, xp, window, boundary, B, row):
        """nstep/lambda: queue this window and boundary; fit M at the oldest boundary once K windows follow it.

        The target is recomputed from the oldest boundary's carried state with the current
        parameters, before this window's updates (the same parameters as its own pass).
        """
        self.ring.push_window(window)
        due = self.ring.pop_due()
        if due is None:
            row[1:4], row[7] = 0.0, 0.0  # no target yet
        else:
            (s, p, keep), windows = due
            H = self.hidden
            h, c = (s[:, :H], s[:, H:]) if keep is None else (s[:, :H] * keep, s[:, H:] * keep)
            target = lambda_return(self, (h, c), windows, lam=self.sg_lambda, discount=self.sg_scale)
            self._regress(xp, (s, p, keep), target, B, row)
        self.ring.boundaries.append(boundary)

    def _regress(self, xp, boundary, target, B, row):
        """One step of M on ``0.5 |M(s) - target|^2`` (mean over rows) at ``boundary = (s, p, keep)``.

        ``target`` (B, 2H) is overwritten. Writes the diagnostics into ``row[1:4]`` (|p|,
        |target|, <p, target> over the rows with a target) and ``row[7]`` (1: a target).
        """
        s, p, keep = boundary
        pred, cache = self.sg.forward(s)  # recomputed with M's current weights (they moved since p)
        err = pred
        err -= target
        if keep is not None:
            err *= keep  # rows whose episode ended: no target
            target *= keep
        err *= 1.0 / B  # d/dpred of 0.5 |pred - target|^2 / B
        self.sg.param_grads(err, cache, out=self.sg_flat.grads)  # no gradient at M's input: s is not trained
        self.sg_opt.step()
        row[1] = xp.sqrt(xp.vdot(p, p))
        row[2] = xp.sqrt(xp.vdot(target, target))
        row[3] = xp.vdot(p, target)
        row[7] = 1.0

    def _diag_row(self, xp, dtype):
        """The next row of the diagnostics ring on the device (doubled when full; reset at collection)."""
        n = self._diag_count
        if self._diag is None or n == len(self._diag):
            grown = xp.zeros((max(64, 2 * n), len(DIAG_FIELDS)), dtype)
            if n:
                grown[:n] = self._diag[:n]
            self._diag = grown
        self._diag_count = n + 1
        return self._diag[n]

    # -- diagnostics -----------------------------------------------------------------------
    def collect_diagnostics(self) -> dict:
        """Host summary of the windows since the last call (one host sync), then reset.

        Returns ``{"windows", "loss", "sg_ratio", "sg_cosine", "cell_rms", "aux_loss",
        "grad_norm", "first_nonfinite"}``: means over the windows (``sg_*`` over the
        windows that had a target; NaN when none), and ``first_nonfinite`` = None or
        ``(step, field)`` of the first window where a diagnostic was NaN or inf.
        """
        n = self._diag_count
        if not n:
            return {"windows": 0}
        d = np.asarray(to_numpy(self._diag[:n]), np.float64)  # (n, len(DIAG_FIELDS)): the one host sync
        first_step = self.step - n + 1
        self._diag_count = 0
        f = {name: d[:, i] for i, name in enumerate(DIAG_FIELDS)}
        bad = ~np.isfinite(d[:, :-1])
        first_nonfinite = None
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            first_nonfinite = (first_step + row, DIAG_FIELDS[int(np.flatnonzero(bad[row])[0])])
        has = f["has_target"] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = f["sg_norm"][has] / f["target_norm"][has]
            cosine = f["sg_dot"][has] / (f["sg_norm"][has] * f["target_norm"][has])
        ratio, cosine = ratio[np.isfinite(ratio)], cosine[np.isfinite(cosine)]
        return {"windows": n, "loss": float(f["loss"].mean()),
                "sg_ratio": float(ratio.mean()) if ratio.size else math.nan,
                "sg_cosine": float(cosine.mean()) if cosine.size else math.nan,
                "cell_rms": float(f["cell_rms"].mean()), "aux_loss": float(f["aux_loss"].mean()),
                "grad_norm": float(f["grad_norm"].mean()), "first_nonfinite": first_nonfinite}

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: host arrays (params, optimiser moments, state, pending SG input,
        the nstep/lambda ring, uncollected diagnostics) and plain values (step counters, which
        optional parts exist)."""
        arrays = {f"param.{k}": v for k, v in self.core_params.items()}
        optimisers = {"opt": self.opt, **({"sg_opt": self.sg_opt} if self.uses_sg else {})}
        if self.uses_sg:
            arrays.update({f"sg.{k}": v for k, v in self.sg.params.items()})
        for name, opt in optimisers.items():
            for slot in ("m", "v", "velocity"):
                for k, v in getattr(opt, slot, {}).items():
                    arrays[f"{name}.{slot}.{k}"] = v
        if self.state is not None:
            arrays["state.h"], arrays["state.c"] = self.state
        if self.pending is not None:
            s, p, keep = self.pending
            arrays["pending.s"], arrays["pending.p"] = s, p
            if keep is not None:
                arrays["pending.keep"] = keep
        if self._diag_count:
            arrays["diag"] = self._diag[:self._diag_count]
        meta = {"step": self.step, "mode": self.mode, "hidden": self.hidden, "sg_target": self.sg_target,
                "opt_t": getattr(self.opt, "t", 0), "sg_opt_t": getattr(self.sg_opt, "t", 0) if self.uses_sg else 0}
        if self.ring is not None:
            ring_arrays, meta["ring"] = self.ring.state_dict()
            arrays.update(ring_arrays)
        return {k: np.array(to_numpy(v)) for k, v in arrays.items()}, meta

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Resume from :meth:`state_dict` (arrays copied in place onto this trainer's backend)."""
        saved = (meta["mode"], meta["hidden"], meta.get("sg_target", "bootstrap"))
        if saved != (self.mode, self.hidden, self.sg_target):
            raise ValueError(f"checkpoint is for mode {saved[0]} with hidden {saved[1]} and sg_target {saved[2]}, "
                             f"this trainer is {self.mode} with hidden {self.hidden} and sg_target {self.sg_target}")
        xp = get_xp(self.lstm.params["Wh"])
        dtype = self.lstm.params["Wh"].dtype

        def put(dst: dict, prefix: str) -> None:
            for k, v in dst.items():
                v[...] = to_device(arrays[f"{prefix}{k}"], xp).astype(dtype, copy=False)

        put(self.core_params, "param.")
        optimisers = {"opt": self.opt, **({"sg_opt": self.sg_opt} if self.uses_sg else {})}
        if self.uses_sg:
            put(self.sg.params, "sg.")
        for name, opt in optimisers.items():
            for slot in ("m", "v", "velocity"):
                put(getattr(opt, slot, {}), f"{name}.{slot}.")
            if hasattr(opt, "t"):
                opt.t = meta[f"{name}_t"]

        def get(key):
            return to_device(arrays[key], xp).astype(dtype, copy=False) if key in arrays else None

        self.state = (get("state.h"), get("state.c")) if "state.h" in arrays else None
        self.pending = (get("pending.s"), get("pending.p"), get("pending.keep")) if "pending.s" in arrays else None
        if self.ring is not None:
            self.ring.load_state_dict(arrays, meta.get("ring", {"boundaries": 0, "windows": []}), xp, dtype)
            if self.ring.boundaries:
                self.pending = self.ring.boundaries[-1]  # one object, as in training
        self._diag_count = 0
        for values in (get("diag") if "diag" in arrays else []):
            self._diag_row(xp, dtype)[...] = values
        self.step = meta["step"]
