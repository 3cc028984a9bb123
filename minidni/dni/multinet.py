"""Two recurrent networks at two clock rates, joined by a decoupled interface (PAPER.md §1).

Time comes in periods of T² steps, each T windows of T steps
(:class:`minidni.tasks.odd_digits.OddDigitStream`).

- **Network A** (fast) ticks every step: an embedding ``ReLU(x We + be)`` (D -> E) of
  the image feeds an LSTM (E -> H_A). At the last step of each window its head
  (H_A -> T+1) answers "how many odd digits in this window", and its message layer
  (H_A -> M) sends ``m_k = h W_m + b_m`` (B, M) to B: a learned vector computed from
  A's state, not A's answer.
- **Network B** (slow) ticks once per window: an LSTM (M -> H_B) reading ``m_k``;
  after its T-th tick its head (H_B -> T²+1) answers "how many odd digits in the period".

Both LSTMs start each of their counting spans from a zero state (A every window, B
every period; [assumed]: the paper's supplementary was not recovered): the windows
are aligned, so the zero state tells each network where its count starts, and no
state or gradient crosses a window inside A. What ties A to B is only the gradient
of B's loss at the messages.

Modes (``mode=``):

- ``"locked"``: the joint loss ``sum_k L_A,k + L_B`` of a period is backpropagated
  through B's whole horizon into every message and through A; A and B each take one
  optimiser step per period. A is locked: it cannot update before B's error of the
  period comes back, so it makes one update per T² steps.
- ``"dni"``: after each window A injects ``sg_scale * M(m_k, c_k)`` at its message,
  where M is a synthetic-gradient model (:func:`minidni.dni.mlp_synthesizer`; last
  layer and bias zero at the start, so the first injected gradients are exactly 0)
  and ``c_k`` a one-hot code of the tick index k (``sg_condition="tick"``) or of k and
  A's own label y_k (``"tick-label"``, as cDNI conditions on the label: A knows y_k at
  its tick, it trains on it). A takes one optimiser step from its own loss plus that
  SG: T updates per period. B runs as in ``"locked"`` on the messages A sent; the
  true gradient of L_B at each ``m_k`` then trains M (one regression step per tick,
  target in the units of the batch-mean loss, as every Synthesizer).
- ``"none"``: as ``"dni"`` with nothing injected: no gradient from B reaches A
  (the control that shows what B's gradient adds); A's message layer never learns.

B runs its T ticks when the period's last message has arrived: B's tick k reads only
``m_1 .. m_k``, so this equals ticking it once per window, and in a single process
nothing reads B's state before then.

Loss units: L_A,k and L_B are softmax cross-entropies, mean over the batch rows.
Diagnostics per period (device arrays, copied to the host by
:meth:`collect_diagnostics`): A's loss (mean per window), B's loss, and the gradient
that reached A's messages compared with the true gradient of L_B there
(``|injected|``, ``|true|``, their dot product; injected is the true gradient in
``"locked"``, the SG in ``"dni"`` and 0 in ``"none"``).

    >>> tr = TwoClockTrainer(784, T=4, mode="dni", rng=np.random.default_rng(0))
    >>> losses = tr.train_period(stream.next_period())   # (L_A mean per window, L_B): 0-d device arrays
    >>> tr.fast_updates, tr.slow_updates                 # 4, 1
"""

from __future__ import annotations

import math

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.dni.synthesizers import mlp_synthesizer, param_grads
from minidni.functional.losses import softmax_cross_entropy
from minidni.layers import LSTM, Linear, ReLU, Sequential
from minidni.optim import SGD, Adam, clip_by_global_norm

__all__ = ["MODES", "SG_CONDITIONS", "MULTINET_DIAG_FIELDS", "TwoClockTrainer"]

MODES = ("locked", "dni", "none")
SG_CONDITIONS = ("tick", "tick-label")
OPTIMIZERS = ("adam", "sgd")
MULTINET_DIAG_FIELDS = ("fast_loss", "slow_loss", "injected_norm", "true_norm", "dot")
_SLOTS = ("m", "v", "velocity")  # optimiser state dicts (Adam moments, SGD momentum)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def _flat(layers: dict) -> dict:
    return {f"{name}.{k}": v for name, layer in layers.items() for k, v in layer.params.items()}


class TwoClockTrainer:
    """A (fast) and B (slow) trained together on odd-digit periods, ``locked``, ``dni`` or ``none``.

    Args:
        input_dim: D of the images.
        T: window length; a period is T windows (T² steps), B ticks T times per period.
        mode: ``"locked"``, ``"dni"`` or ``"none"`` (module docstring).
        embed, fast_hidden, slow_hidden, message: E, H_A, H_B and M.
        lr: learning rate of A and B.
        sg_lr: learning rate of the SG model (default: ``lr``).
        sg_scale: factor on the SG before it is injected (1: the SG stands for the true gradient).
        sg_hidden, sg_width: hidden layers (0, 1 or 2; 0 = linear) and their width in the SG model.
        sg_condition: what the SG sees beside the message: ``"tick"`` (k) or ``"tick-label"`` (k and y_k).
        clip: max global norm of each update's gradients (A's and B's separately); 0 disables it.
        optimizer: ``"adam"`` or ``"sgd"`` (plain, for the exactness tests), for A, B and the SG.
        rng: initialises every layer (the SG's last layer starts at zero).
        dtype: parameter dtype; images are cast to it.
    """

    def __init__(self, input_dim: int, T: int, *, mode: str = "dni", embed: int = 64, fast_hidden: int = 64,
                 slow_hidden: int = 64, message: int = 16, lr: float = 1e-3, sg_lr: float | None = None,
                 sg_scale: float = 1.0, sg_hidden: int = 0, sg_width: int = 64, sg_condition: str = "tick-label",
                 clip: float = 1.0,
                 optimizer: str = "adam", rng: np.random.Generator, dtype=np.float32):
        _choice("mode", mode, MODES)
        _choice("optimizer", optimizer, OPTIMIZERS)
        _choice("sg_condition", sg_condition, SG_CONDITIONS)
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"T must be a positive integer, got {T!r}")
        for name, value in (("sg_scale", sg_scale), ("clip", clip)):
            if not (float(value) >= 0.0 and math.isfinite(float(value))):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.mode, self.T, self.dtype = mode, int(T), np.dtype(dtype)
        self.sg_scale, self.clip, self.sg_condition = float(sg_scale), float(clip), sg_condition
        self.sizes = {"input_dim": input_dim, "embed": embed, "fast_hidden": fast_hidden,
                      "slow_hidden": slow_hidden, "message": message}
        self.fast = {"embed": Sequential([Linear(input_dim, embed, rng=rng, dtype=dtype), ReLU()]),
                     "lstm": LSTM(embed, fast_hidden, rng=rng, dtype=dtype),
                     "head": Linear(fast_hidden, T + 1, rng=rng, dtype=dtype, init="xavier"),
                     "message": Linear(fast_hidden, message, rng=rng, dtype=dtype, init="xavier")}
        self.slow = {"lstm": LSTM(message, slow_hidden, rng=rng, dtype=dtype),
                     "head": Linear(slow_hidden, T * T + 1, rng=rng, dtype=dtype, init="xavier")}
        self.fast_params, self.slow_params = _flat(self.fast), _flat(self.slow)
        opt = Adam if optimizer == "adam" else SGD
        self.fast_opt, self.slow_opt = opt(self.fast_params, lr=lr), opt(self.slow_params, lr=lr)
        self.sg = None
        if mode == "dni":  # zero last layer and bias: the first SGs are exactly 0
            self.sg = mlp_synthesizer(message, hidden=sg_hidden, width=sg_width, batchnorm=False, conditioned=True,
                                      num_classes=T * (T + 1) if sg_condition == "tick-label" else T, lr=lr if sg_lr is None else sg_lr, optimizer=optimizer,
                                      rng=rng, dtype=dtype)
        self.periods = 0       # periods trained (T² fast ticks each)
        self.fast_updates = 0  # optimiser steps of A
        self.slow_updates = 0  # optimiser steps of B
        self._keeps: dict = {}
        self._diag: list = []

    # -- the two networks ------------------------------------------------------------------
    def _keep(self, windows: int, batch: int, xp):
        """(W*T, B) keep mask zeroing A's state at each window start after the first (None for one window)."""
        if windows == 1:
            return None
        key = (windows, batch, xp.__name__)
        if key not in self._keeps:
            keep = np.ones((windows * self.T, batch), self.dtype)
            keep[self.T::self.T] = 0.0
            self._keeps[key] = to_device(keep, xp)
        return self._keeps[key]

    def fast_forward(self, x):
        """A over W whole windows: x (W*T, B, D) -> (logits (W, B, T+1), messages (W, B, M), cache)."""
        xp = get_xp(x)
        L, B, D = x.shape
        if L % self.T:
            raise ValueError(f"x must hold whole windows of T={self.T} steps, got {L} steps")
        W = L // self.T
        e, embed_cache = self.fast["embed"].forward(x.reshape(L * B, D))
        (hs, _), lstm_cache = self.fast["lstm"].forward(e.reshape(L, B, -1), keep=self._keep(W, B, xp))
        last = hs[self.T - 1::self.T].reshape(W * B, -1)  # A's state at each window's last step
        logits, head_cache = self.fast["head"].forward(last)
        msgs, msg_cache = self.fast["message"].forward(last)
        cache = (embed_cache, lstm_cache, head_cache, msg_cache, (L, B, W))
        return logits.reshape(W, B, -1), msgs.reshape(W, B, -1), cache

    def fast_backward(self, dlogits, dmsgs, cache) -> dict:
        """A's parameter gradients from dlogits (W, B, T+1) and dmsgs (W, B, M) or None (no message gradient)."""
        embed_cache, lstm_cache, head_cache, msg_cache, (L, B, W) = cache
        xp = get_xp(dlogits)
        dlast, head_grads = self.fast["head"].backward(dlogits.reshape(W * B, -1), head_cache)
        if dmsgs is None:
            msg_grads = {k: xp.zeros_like(v) for k, v in self.fast["message"].params.items()}
        else:
            dm, msg_grads = self.fast["message"].backward(dmsgs.reshape(W * B, -1), msg_cache)
            dlast = dlast + dm  # the head and the message both read the window's last state
        dhs = xp.zeros((L, B, dlast.shape[1]), dlast.dtype)
        dhs[self.T - 1::self.T] = dlast.reshape(W, B, -1)  # only window ends feed the heads
        de, _, _, lstm_grads = self.fast["lstm"].backward(dhs, None, lstm_cache)
        embed_grads = param_grads(self.fast["embed"], de.reshape(L * B, -1), embed_cache)  # no image gradient
        parts = {"embed": embed_grads, "lstm": lstm_grads, "head": head_grads, "message": msg_grads}
        return {f"{name}.{k}": g for name, grads in parts.items() for k, g in grads.items()}

    def slow_forward(self, msgs):
        """B over its T ticks: messages (T, B, M) -> (logits (B, T²+1), cache)."""
        (hs, _), lstm_cache = self.slow["lstm"].forward(msgs)
        logits, head_cache = self.slow["head"].forward(hs[-1])
        return logits, (lstm_cache, head_cache, hs.shape)

    def slow_backward(self, dlogits, cache):
        """``(dmsgs (T, B, M), B's parameter gradients)`` from dlogits (B, T²+1): dmsgs is dL_B/dm."""
        lstm_cache, head_cache, shape = cache
        xp = get_xp(dlogits)
        dh, head_grads = self.slow["head"].backward(dlogits, head_cache)
        dhs = xp.zeros(shape, dh.dtype)
        dhs[-1] = dh  # B answers only after its last tick
        dmsgs, _, _, lstm_grads = self.slow["lstm"].backward(dhs, None, lstm_cache)
        return dmsgs, {**{f"lstm.{k}": g for k, g in lstm_grads.items()},
                       **{f"head.{k}": g for k, g in head_grads.items()}}

    @staticmethod
    def fast_loss(logits, labels):
        """``(loss, dlogits)``: logits (W, B, T+1), labels (W, B) -> sum over windows of the batch-mean CE."""
        W, B, C = logits.shape
        mean, dflat = softmax_cross_entropy(logits.reshape(W * B, C), labels.reshape(W * B))
        return mean * W, dflat.reshape(W, B, C) * W  # mean over W*B -> sum over windows of batch means

    def sg_code(self, k: int, labels):
        """The SG's conditioning class (B,) int: k, or ``k * (T+1) + y_k`` with A's labels y_k (B,)."""
        xp = get_xp(labels)
        if self.sg_condition == "tick":
            return xp.full(labels.shape, k, dtype=xp.int64)
        return labels.astype(xp.int64) + k * (self.T + 1)

    def _update(self, opt, params: dict, grads: dict) -> None:
        grads = {k: grads[k] for k in params}
        if self.clip:
            grads, _ = clip_by_global_norm(grads, self.clip)
        opt.step(grads)

    def _device(self, period, xp):
        x = to_device(np.asarray(period.x), xp).astype(self.dtype, copy=False)
        return x, to_device(np.asarray(period.fast_y), xp), to_device(np.asarray(period.slow_y), xp)

    # -- one period ------------------------------------------------------------------------
    def train_period(self, period):
        """Train on one :class:`~minidni.tasks.odd_digits.OddDigitPeriod`; returns (A's mean window loss, B's loss).

        Composed of the steps below, which two worker processes can also run apart
        (:mod:`minidni.experiments.multinet_workers`): ``locked``: :meth:`locked_forward`,
        :meth:`slow_step`, :meth:`locked_update`; ``dni`` and ``none``: :meth:`fast_window`
        for each window, then :meth:`slow_step` and (dni) :meth:`fit_sg`.
        """
        xp = get_xp(self.fast_params["head.W"])
        x, fast_y, slow_y = self._device(period, xp)
        T = self.T
        if self.mode == "locked":
            fast_loss, msgs, pending = self.locked_forward(x, fast_y)
            slow_loss, dmsgs = self.slow_step(msgs, slow_y)
            self.locked_update(pending, dmsgs)
            injected = dmsgs
        else:
            windows = [self.fast_window(x[k * T:(k + 1) * T], fast_y[k], k) for k in range(T)]  # A's clock
            fast_loss = sum(w[0] for w in windows)
            slow_loss, dmsgs = self.slow_step(xp.stack([w[1] for w in windows]), slow_y)
            if self.sg is not None:
                self.fit_sg([w[2] for w in windows], dmsgs)
                injected = xp.stack([w[3] for w in windows])
            else:
                injected = xp.zeros_like(dmsgs)
        self.periods += 1
        fast_loss = xp.asarray(fast_loss, self.dtype) * (1.0 / T)
        self._diag.append(xp.stack([fast_loss, xp.asarray(slow_loss, self.dtype), xp.sqrt((injected ** 2).sum()),
                                    xp.sqrt((dmsgs ** 2).sum()), (injected * dmsgs).sum()]))
        return fast_loss, slow_loss

    def fast_window(self, x, labels, k: int):
        """A's decoupled step on window k: x (T, B, D), labels (B,) -> ``(loss, message (B, M), sg_cache, injected)``.

        Forward, the SG's prediction at the message (dni; ``sg_cache`` and ``injected``
        (B, M) are None without an SG), backward and one update of A.
        """
        logits, msg, fast_cache = self.fast_forward(x)
        loss, dlogits = self.fast_loss(logits, labels[None])
        dmsg = sg_cache = None
        if self.sg is not None:
            pred, sg_cache = self.sg.predict(msg[0], self.sg_code(k, labels))
            dmsg = pred[None] * self.sg_scale
        self._update(self.fast_opt, self.fast_params, self.fast_backward(dlogits, dmsg, fast_cache))
        self.fast_updates += 1
        return loss, msg[0], sg_cache, None if dmsg is None else dmsg[0]

    def locked_forward(self, x, fast_y):
        """A over the whole period: x (T², B, D), fast_y (T, B) -> ``(loss, messages (T, B, M), pending)``.

        ``pending`` holds what :meth:`locked_update` needs once B's gradient at the messages arrives.
        """
        logits, msgs, fast_cache = self.fast_forward(x)
        loss, dlogits = self.fast_loss(logits, fast_y)
        return loss, msgs, (dlogits, fast_cache)

    def locked_update(self, pending, dmsgs) -> None:
        """A's one update of the period, from its own losses and B's gradient dmsgs (T, B, M)."""
        dlogits, fast_cache = pending
        self._update(self.fast_opt, self.fast_params, self.fast_backward(dlogits, dmsgs, fast_cache))
        self.fast_updates += 1

    def slow_step(self, msgs, slow_y):
        """B's forward, backward and update on the period's messages (T, B, M): ``(loss, dL_B/dm (T, B, M))``."""
        logits, cache = self.slow_forward(msgs)
        loss, dlogits = softmax_cross_entropy(logits, slow_y)
        dmsgs, grads = self.slow_backward(dlogits, cache)
        self._update(self.slow_opt, self.slow_params, grads)
        self.slow_updates += 1
        return loss, dmsgs

    def fit_sg(self, sg_caches: list, dmsgs) -> None:
        """B's true gradient at each message of a period has arrived: one regression step of M per tick."""
        for k, sg_cache in enumerate(sg_caches):
            self.sg.fit(sg_cache, dmsgs[k])

    def evaluate(self, period):
        """Correct answers on one period, no training: ``(A's (0..T*B), B's (0..B))`` as 0-d device arrays."""
        xp = get_xp(self.fast_params["head.W"])
        x, fast_y, slow_y = self._device(period, xp)
        logits, msgs, _ = self.fast_forward(x)
        slow_logits, _ = self.slow_forward(msgs)
        return (logits.argmax(axis=2) == fast_y).sum(), (slow_logits.argmax(axis=1) == slow_y).sum()

    # -- diagnostics -----------------------------------------------------------------------
    def collect_diagnostics(self) -> dict:
        """Host means over the periods since the last call (one host sync), then reset.

        ``{"periods", "fast_loss", "slow_loss", "injected_norm", "true_norm", "cosine", "finite"}``:
        norms are of the (T, B, M) message gradients of a period; ``cosine`` is their mean
        cosine (NaN where nothing was injected); ``finite`` False if any value was NaN or inf.
        """
        if not self._diag:
            return {"periods": 0}
        xp = get_xp(self._diag[0])
        d = np.asarray(to_numpy(xp.stack(self._diag)), np.float64)
        self._diag = []
        f = {name: d[:, i] for i, name in enumerate(MULTINET_DIAG_FIELDS)}
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = f["dot"] / (f["injected_norm"] * f["true_norm"])
        cos = cos[np.isfinite(cos)]
        return {"periods": len(d), "fast_loss": float(f["fast_loss"].mean()), "slow_loss": float(f["slow_loss"].mean()),
                "injected_norm": float(f["injected_norm"].mean()), "true_norm": float(f["true_norm"].mean()),
                "cosine": float(cos.mean()) if cos.size else math.nan, "finite": bool(np.isfinite(d).all())}

    # -- checkpoints -----------------------------------------------------------------------
    def _optimisers(self) -> dict:
        opts = {"fast_opt": self.fast_opt, "slow_opt": self.slow_opt}
        if self.sg is not None:
            opts["sg_opt"] = self.sg.optimizer
        return opts

    def _param_groups(self) -> dict:
        groups = {"fast": self.fast_params, "slow": self.slow_params}
        if self.sg is not None:
            groups["sg"] = self.sg.net.params
        return groups

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: host arrays (parameters, optimiser state, uncollected diagnostics) and plain values."""
        arrays = {f"{g}.{k}": v for g, params in self._param_groups().items() for k, v in params.items()}
        for name, opt in self._optimisers().items():
            for slot in _SLOTS:
                arrays.update({f"{name}.{slot}.{k}": v for k, v in getattr(opt, slot, {}).items()})
        if self._diag:
            arrays["diag"] = get_xp(self._diag[0]).stack(self._diag)
        meta = {"mode": self.mode, "T": self.T, "sizes": self.sizes, "periods": self.periods,
                "fast_updates": self.fast_updates, "slow_updates": self.slow_updates,
                "opt_t": {name: getattr(opt, "t", 0) for name, opt in self._optimisers().items()},
                "sg_fits": self.sg.fits if self.sg is not None else 0}
        return {k: np.array(to_numpy(v)) for k, v in arrays.items()}, meta

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Resume from :meth:`state_dict` (arrays copied in place onto this trainer's backend and dtype)."""
        mine = {"mode": self.mode, "T": self.T, "sizes": self.sizes}
        if {k: meta[k] for k in mine} != mine:
            raise ValueError(f"checkpoint is for {({k: meta[k] for k in mine})}, this trainer is {mine}")
        xp = get_xp(self.fast_params["head.W"])

        def put(dst: dict, prefix: str) -> None:
            for k, v in dst.items():
                v[...] = to_device(arrays[f"{prefix}{k}"], xp).astype(v.dtype, copy=False)

        for g, params in self._param_groups().items():
            put(params, f"{g}.")
        for name, opt in self._optimisers().items():
            for slot in _SLOTS:
                put(getattr(opt, slot, {}), f"{name}.{slot}.")
            if hasattr(opt, "t"):
                opt.t = meta["opt_t"][name]
        if self.sg is not None:
            self.sg.fits = meta["sg_fits"]
        self._diag = list(to_device(arrays["diag"], xp).astype(self.dtype)) if "diag" in arrays else []
        self.periods, self.fast_updates, self.slow_updates = meta["periods"], meta["fast_updates"], meta["slow_updates"]
