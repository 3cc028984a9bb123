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
from typing import Any, Callable

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.functional.losses import softmax_cross_entropy
from minidni.functional.lstm import lstm_first_output_backward
from minidni.layers.linear import Linear
from minidni.layers.lstm import LSTM
from minidni.flat import FlatParams
from minidni.optim import FlatAdam, FlatSGD
from minidni.tasks.copy import sequence_bits
from minidni.workspace import Workspace

__all__ = ["MODES", "RESETS", "DIAG_FIELDS", "RecurrentTrainer", "copy_loss", "char_loss"]

MODES = ("bptt", "dni", "dni-aux")
RESETS = ("episode", "never")
OPTIMIZERS = ("adam", "sgd")
# one (len(DIAG_FIELDS),) vector per window; sg_* are 0 and has_target 0 without a target
DIAG_FIELDS = ("loss", "sg_norm", "target_norm", "sg_dot", "cell_rms", "aux_loss", "grad_norm", "has_target")
QUANTITY = {
    "loss": "the training loss",
    "sg_norm": "the synthetic gradient's norm",
    "target_norm": "the norm of the synthetic gradient's bootstrapped target",
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


def _check_choice(name: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _check_nonneg(name: str, value) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


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
                 aux_in_target: bool = False):
        self.mode = _check_choice("mode", mode, MODES)
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
        self.step = 0          # windows trained
        self._workspaces = (Workspace(), Workspace())  # used on alternate windows
        self._diag = None      # (capacity, len(DIAG_FIELDS)) device ring of per-window diagnostics ...
        self._diag_count = 0   # ... of which the first rows are filled

    # -- the model -------------------------------------------------------------------------
    def predict_sg(self, s):
        """M's per-example synthetic gradient p (B, 2H) for the state s = [h_T; c_T] (B, 2H)."""
        return s @ self.sg.params["W"] + self.sg.params["b"]

    def reset_state(self) -> None:
        """Zero every row's state and forget the pending SG input (its target will not come)."""
        self.state, self.pending = None, None

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
    def train_window(self, x, loss_grad: Callable[[Any], tuple], episode_end=None):
        """Train on one window; returns the loss (0-d device array).

        x (T, B, D) on the parameters' backend; ``loss_grad(logits (T, B, C)) -> (loss,
        dlogits, ...)`` (extra return values are ignored); ``episode_end`` (T, B) host
        bool array or None (no resets; required for ``reset="episode"`` to reset).

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
        if self.mode == "dni-aux" and not self.aux_in_target and self.pending is not None:
            aux_h, aux_c = lstm_first_output_backward(dh_aux, lstm_cache)
            dh0 -= aux_h  # M's target: the task and SG gradient, without the aux loss's share
            dc0 -= aux_c
        row = self._diag_row(xp, dtype)
        row[0] = loss
        if self.pending is not None:
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
        """One step of M toward the bootstrapped target of the pending window.

        Writes the diagnostics into ``row[1:4]`` (|p|, |target|, <p, target> over the
        rows with a target) and ``row[7]`` (1: this window had a target).
        """
        s, p, keep = self.pending
        target = self.bootstrap_target(dh0, dc0, B, out=ws.array(xp, "sg_target", s.shape, s.dtype))
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
        uncollected diagnostics) and plain values (step counters, which optional parts exist)."""
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
        meta = {"step": self.step, "mode": self.mode, "hidden": self.hidden,
                "opt_t": getattr(self.opt, "t", 0), "sg_opt_t": getattr(self.sg_opt, "t", 0) if self.uses_sg else 0}
        return {k: np.array(to_numpy(v)) for k, v in arrays.items()}, meta

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Resume from :meth:`state_dict` (arrays copied in place onto this trainer's backend)."""
        if (meta["mode"], meta["hidden"]) != (self.mode, self.hidden):
            raise ValueError(f"checkpoint is for mode {meta['mode']} with hidden {meta['hidden']}, "
                             f"this trainer is {self.mode} with hidden {self.hidden}")
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
        self._diag_count = 0
        for values in (get("diag") if "diag" in arrays else []):
            self._diag_row(xp, dtype)[...] = values
        self.step = meta["step"]
