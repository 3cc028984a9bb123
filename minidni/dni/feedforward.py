"""Training a stack of modules by backprop, without it, or with synthetic gradients (DNI, cDNI).

Notation (shapes in the docstrings of :mod:`minidni.models`). A network is a
list of modules ``f_0 .. f_{n-1}``; ``h_i = f_i(h_{i-1})`` with ``h_{-1} = x``;
the top module ``f_{n-1}`` ends with the output layer, whose logits meet the
loss. Synthesizer ``S_i`` (``i < n-1``) sits on ``h_i`` and predicts
``delta_i = dL/dh_i``.

Methods (``FeedForwardTrainer(method=...)``):

``bprop``
    Forward through every module, then backward from the loss; each module
    updates right after its own backward (it is not needed again this step).
``no-bprop``
    Only the top module's trainable parameters learn from the loss; no
    gradient crosses a module boundary. :func:`build_trainer` makes only the
    output layer trainable (our reading of "only the top layer learns").
``dni`` / ``cdni``
    For each module in turn: forward; the synthesizer predicts
    ``delta_hat_i = S_i(h_i [, y])``; backward with it and UPDATE AT ONCE,
    before module ``i+1`` runs forward; the backward's input gradient
    ``delta_hat_i dh_i/dh_{i-1}`` is the regression target of ``S_{i-1}``
    (bootstrapped). Only the top module sees the true loss gradient, and only
    ``S_{n-2}`` regresses onto it. cDNI is DNI whose synthesizers see the
    one-hot label.

BP(λ) (``sg_target="bp-lambda"``, ``sg_lambda=λ``; dni/cdni). The paper's
Appendix A unifies backprop and every-layer DNI: the gradient passed down at
``h_i`` is the mixture

    g_i = λ · b_i + (1 - λ) · delta_hat_i,      b_i = g_{i+1} dh_{i+1}/dh_i,

with ``g_{n-1}`` the true loss gradient at the top. Module ``i`` updates from
``g_i`` and passes ``g_i dh_i/dh_{i-1}`` down. ``S_i`` regresses onto ``b_i``,
the mixture of the layer above passed down through module ``i+1`` (our reading
of "regressed towards the mixture": regressing onto ``g_i`` itself would put
``S_i``'s own output in its target and, at λ = 0, train nothing). ``b_i`` is
the λ-return of TD(λ) with no reward between layers, ``b_i = (λ b_{i+1} +
(1-λ) delta_hat_{i+1}) dh_{i+1}/dh_i``. λ = 0 is every-layer DNI (same
parameters after any number of steps, tested), λ = 1 is backprop (with every
``p_update`` 1: each ``g_i`` is then the true gradient, and the synthesizers
regress onto true gradients without affecting the modules; tested).

Locking with λ > 0. ``g_i`` needs ``b_i``, which needs every module above to
have run forward AND backward (the loss reaches ``h_i`` with weight
``λ^(n-1-i)``), and so does the gradient module ``i`` passes down. So every
module is update and backward locked exactly as in backprop, and the trainer
runs backprop's order: one forward through the stack, each synthesizer
predicting as its input appears, then one backward from the loss, each module
updating after its own backward. What stays unlocked: the predictions
``delta_hat_i`` (they need only ``h_i``) and nothing else. (Module ``i`` could
apply its ``(1-λ) delta_hat_i`` share at once and the ``λ b_i`` share later, but
its backward would still wait for ``b_i``, and with Adam two half-steps are not
one step; not done.) Only λ = 0 needs nothing from above: ``sg_target="bp-lambda"``
with λ = 0 computes DNI's parameters in the locked order, ``"bootstrap"`` runs
DNI's own order (:meth:`FeedForwardTrainer._step_dni`). A module whose module
above skipped its backward (``p_update``) falls back to its synthetic gradient
alone (``g_i = delta_hat_i``, the DNI rule) instead of waiting, so with
``p_update < 1`` λ = 1 is not bprop (bprop stops the backward there). The
complete unlock (input models) cuts the chain BP(λ) passes down, so the two are
refused together; warm-up holds back module ``i``'s update while ``S_i`` warms
up, as in DNI.

Per-module update probability ``p_update`` (one float, or one per module).
At each step every module draws a coin; a module whose coin fails does
neither its backward nor its update. Consequences: with bprop the backward
stops at the first failed module from the top (everything below waits for a
gradient that never comes), so ``f_i`` updates with probability
``p^(n-i)``; with DNI the synthesizer ``S_{i-1}`` below a skipped module gets
no target that step and is not trained, while the skipped module's own
synthesizer ``S_i`` is still trained if module ``i+1`` ran its backward (its
target exists). A synthesizer predicts only when its output or its training is
needed.

Warm-up (``warmup=K`` on the synthesizers). An SG is fitted for its first K
targets before its output is used: during that time module ``i`` still runs
its backward with ``delta_hat_i`` (the product is the target of ``S_{i-1}``:
without it the synthesizers below could never warm up) but skips its UPDATE.
The top module always updates.

Complete unlock (``method="dni"``/``"cdni"`` with ``input_models``). Module
``i >= 1`` also owns a synthetic-input model ``I_i`` that predicts its input
``h_{i-1}`` from the image alone. Each step: every ``I_i`` predicts first (they
need only ``x``, so every module could start at once); module ``i`` runs
forward on ``x`` (i = 0) or on ``hhat_{i-1} = I_i(x)``, then backward and
update as in DNI; ``I_{i+1}`` regresses (L2, :func:`minidni.functional.mse`)
onto the output module ``i`` produced this step from its own (synthetic)
input; ``S_{i-1}``'s target is the input gradient of module ``i`` at
``hhat_{i-1}``. A module updates only when its SG and its input model are
both past warm-up. Evaluation always runs the real chain ``f_{n-1}(..f_0(x))``.

Diagnostics (``step(x, y, diagnose=True)``). Before the step, a separate pass
computes the TRUE gradients ``delta_i`` by plain backprop with the current
parameters (input gradients only, no weight gradients; BatchNorm running
statistics restored afterwards); it is used only for logging, never in an
update. The step then reports, per synthesizer,
``cos(delta_hat_i, delta_i)`` and ``|delta_hat_i| / |delta_i|``. Because every
module updates only after its own forward, the ``h_i`` the synthesizers see
in a DNI step equal those of the diagnostic pass exactly, so the comparison is
like for like (with the complete unlock, ``delta_hat_i`` is taken at the
module's output from its synthetic input).

Everything a step returns stays on the device (0-d arrays): call
:meth:`StepResult.to_host` only when logging; :func:`raise_if_diverged` turns
NaN/inf into :class:`minidni.cli.TrainingDiverged` naming the module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.cli import TrainingDiverged
from minidni.dni.synthesizers import Regressor, conv_synthesizer, mlp_regressor, mlp_synthesizer, param_grads
from minidni.functional.losses import softmax_cross_entropy
from minidni.layers import Linear, Sequential
from minidni.flat import FlatParams
from minidni.optim import FlatAdam, FlatSGD

__all__ = ["METHODS", "SG_TARGETS", "Module", "FeedForwardTrainer", "StepResult", "build_trainer", "raise_if_diverged",
           "bp_lambda_mix", "output_shapes", "predict_logits", "error_percent"]

METHODS = ("bprop", "no-bprop", "dni", "cdni")
SG_TARGETS = ("bootstrap", "bp-lambda")  # what a synthesizer regresses on (module docstring)


class Module:
    """One stage of the network: a :class:`~minidni.layers.Sequential` and its own optimiser.

    ``trainable``: the param keys the optimiser updates (default all; an empty
    tuple freezes the module). ``optimizer`` is ``"adam"`` or ``"sgd"``.
    """

    def __init__(self, net: Sequential, *, lr: float, optimizer: str = "adam", trainable: Sequence[str] | None = None):
        self.net = net
        keys = list(net.params) if trainable is None else list(trainable)
        unknown = set(keys) - net.params.keys()
        if unknown:
            raise ValueError(f"trainable keys {sorted(unknown)} are not params of the module (have {list(net.params)})")
        self.trainable = keys
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer = None
        if keys:  # the trainable params in one flat buffer, updated by a fused step
            flat = FlatParams({"": net}, keys=keys)
            self.optimizer = FlatAdam(flat, lr=lr) if optimizer == "adam" else FlatSGD(flat, lr=lr)

    def forward(self, x, *, train: bool = True):
        """Return ``(h, cache)``."""
        return self.net.forward(x, train=train)

    def backward(self, dh, cache, *, input_grad: bool = True):
        """Return ``(dx, grads)``: the gradient at the module's input and at every param.

        ``input_grad=False`` (nothing below needs it: the bottom module) returns
        ``dx = None`` and skips its computation (see :func:`~minidni.dni.synthesizers.param_grads`).
        """
        if not input_grad:
            return None, param_grads(self.net, dh, cache)
        return self.net.backward(dh, cache)

    def update(self, grads) -> None:
        """One optimiser step on the trainable params (in place); a frozen module ignores it."""
        if self.optimizer is not None:
            self.optimizer.step({k: grads[k] for k in self.trainable})

    def set_lr(self, lr: float) -> None:
        if self.optimizer is not None:
            self.optimizer.lr = lr


@dataclass
class StepResult:
    """What one training step reports; values are 0-d device arrays (no host sync until ``to_host``).

    ``updated[i]``: whether module i applied an update. ``sg_loss[i]``: regression
    loss of ``S_i`` (when it was fitted). ``input_loss[i]``: regression loss of
    module i's synthetic-input model. ``cosine[i]`` and ``norm_ratio[i]``: only
    with ``diagnose=True`` (for every ``S_i`` that predicted).
    """

    loss: object
    updated: list
    sg_loss: dict = field(default_factory=dict)
    input_loss: dict = field(default_factory=dict)
    cosine: dict = field(default_factory=dict)
    norm_ratio: dict = field(default_factory=dict)

    def to_host(self) -> dict:
        """Plain floats (one host sync), keyed like the fields."""
        floats = lambda d: {i: float(to_numpy(v)) for i, v in d.items()}  # noqa: E731
        return {"loss": float(to_numpy(self.loss)), "updated": list(self.updated), "sg_loss": floats(self.sg_loss),
                "input_loss": floats(self.input_loss), "cosine": floats(self.cosine),
                "norm_ratio": floats(self.norm_ratio)}


def raise_if_diverged(host: dict, step: int) -> None:
    """Raise :class:`TrainingDiverged` if any value of ``StepResult.to_host()`` is NaN or inf."""
    for i, v in sorted(host["sg_loss"].items()):
        if not math.isfinite(v):
            raise TrainingDiverged(
                f"the synthesizer after module {i} diverged at step {step} (regression loss {v}); "
                "try a smaller --sg-lr or --lr, a --warmup of a few hundred steps, a linear SG (--sg-hidden 0), "
                "or cdni (label-conditioned SGs are more stable)")
    for i, v in sorted(host["input_loss"].items()):
        if not math.isfinite(v):
            raise TrainingDiverged(f"the synthetic-input model of module {i} diverged at step {step} "
                                   f"(regression loss {v}); try a smaller --sg-lr or a --warmup")
    if not math.isfinite(host["loss"]):
        raise TrainingDiverged(f"the training loss became {host['loss']} at step {step}; "
                               "try a smaller --lr (and --sg-lr), or a --warmup for the synthesizers")


def _input_gradient(net: Sequential, dy, caches):
    """``net.backward(dy, caches)[0]`` without the Linear layers' weight gradients (the diagnostics need none)."""
    for layer, cache in zip(net.layers[::-1], caches[::-1]):
        dy = dy @ layer.params["W"].T if isinstance(layer, Linear) else layer.backward(dy, cache)[0]
    return dy


def _cosine_and_ratio(a, b):
    """``cos(a, b)`` and ``|a| / |b|`` over all elements, as 0-d arrays (0 where a norm is 0)."""
    xp = get_xp(a, b)
    na, nb = xp.sqrt((a * a).sum()), xp.sqrt((b * b).sum())
    tiny = xp.finfo(a.dtype).tiny
    return (a * b).sum() / xp.maximum(na * nb, tiny), na / xp.maximum(nb, tiny)


class FeedForwardTrainer:
    """Trains ``modules`` with one of :data:`METHODS`; ``step(x, y)`` reads like the algorithm.

    ``synthesizers``: ``n-1`` objects with ``predict(h, labels, train=True) ->
    (delta_hat, cache)``, ``fit(cache, target) -> loss`` and ``ready`` (for dni/cdni).
    ``input_models``: ``n-1`` :class:`~minidni.dni.synthesizers.Regressor` for the
    complete unlock (``input_models[i-1]`` predicts module i's input), or None.
    ``p_update``: a probability, or one per module. ``seed`` seeds the coins.
    ``sg_target``: ``"bootstrap"`` (every-layer DNI) or ``"bp-lambda"`` with mixing
    weight ``sg_lambda`` in [0, 1] (module docstring, BP(λ)).
    """

    def __init__(self, modules: Sequence[Module], *, method: str, synthesizers: Sequence | None = None,
                 input_models: Sequence[Regressor] | None = None, p_update: float | Sequence[float] = 1.0,
                 seed: int = 0, loss: Callable = softmax_cross_entropy, sg_target: str = "bootstrap",
                 sg_lambda: float = 0.0):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.modules = list(modules)
        n = len(self.modules)
        if n < 1:
            raise ValueError("need at least one module")
        uses_sg = method in ("dni", "cdni")
        if uses_sg and n < 2:
            raise ValueError(f"{method} needs at least 2 modules (a synthesizer sits between two), got {n}")
        if uses_sg and (synthesizers is None or len(synthesizers) != n - 1):
            raise ValueError(f"{method} needs one synthesizer per module boundary ({n - 1}), "
                             f"got {None if synthesizers is None else len(synthesizers)}")
        if input_models is not None and (not uses_sg or len(input_models) != n - 1):
            raise ValueError(f"the complete unlock (input models) needs dni or cdni and {n - 1} input models")
        p = [float(p_update)] * n if np.isscalar(p_update) else [float(q) for q in p_update]
        if len(p) != n or not all(0.0 <= q <= 1.0 for q in p):
            raise ValueError(f"p_update must be a probability in [0, 1] or {n} of them, got {p_update!r}")
        if sg_target not in SG_TARGETS:
            raise ValueError(f"sg_target must be one of {', '.join(SG_TARGETS)}, got {sg_target!r}")
        if sg_target == "bp-lambda" and (not uses_sg or input_models is not None):
            raise ValueError("sg_target='bp-lambda' needs dni or cdni without input models (the complete unlock "
                             "cuts the chain the mixture is passed down)")
        if not 0.0 <= float(sg_lambda) <= 1.0:
            raise ValueError(f"sg_lambda must be in [0, 1], got {sg_lambda!r}")
        self.method, self.p_update, self.loss_fn = method, p, loss
        self.sg_target, self.sg_lambda = sg_target, float(sg_lambda)
        self.synthesizers = list(synthesizers) if uses_sg else []
        self.input_models = list(input_models) if input_models is not None else None
        self._coins = np.random.default_rng(seed)

    # ------------------------------------------------------------------ public
    def step(self, x, y, *, diagnose: bool = False) -> StepResult:
        """One training step on the batch ``x`` (N, ...), ``y`` (N,) int labels."""
        active = [bool(c) for c in self._coins.random(len(self.modules)) < np.array(self.p_update)]
        true_deltas = self.true_gradients(x, y) if diagnose and self.synthesizers else None
        if self.method == "bprop":
            return self._step_bprop(x, y, active)
        if self.method == "no-bprop":
            return self._step_no_bprop(x, y, active)
        if self.sg_target == "bp-lambda":
            return self._step_bp_lambda(x, y, active, true_deltas)
        return self._step_dni(x, y, active, true_deltas)

    def set_lr(self, lr: float, sg_lr: float | None = None) -> None:
        """Set the modules' learning rate (and the synthesizers' and input models' when given)."""
        for m in self.modules:
            m.set_lr(lr)
        if sg_lr is not None:
            for r in self.synthesizers + (self.input_models or []):
                r.lr = sg_lr

    def true_gradients(self, x, y) -> list:
        """DIAGNOSTIC ONLY: ``[dL/dh_i for i < n-1]`` by plain backprop with the current params.

        Nothing is updated and BatchNorm running statistics are restored, so
        training proceeds exactly as without this call.
        """
        saved = [{k: v.copy() for k, v in m.net.buffers.items()} for m in self.modules]
        h, caches = x, []
        for m in self.modules:
            h, cache = m.forward(h)
            caches.append(cache)
        _, d = self.loss_fn(h, y)
        deltas = []
        for m, cache in zip(self.modules[:0:-1], caches[:0:-1]):
            d = _input_gradient(m.net, d, cache)
            deltas.append(d)
        for m, state in zip(self.modules, saved):
            for k, v in m.net.buffers.items():
                v[...] = state[k]
        return deltas[::-1]

    # ------------------------------------------------------------------ methods
    def _step_bprop(self, x, y, active) -> StepResult:
        h, caches = x, []
        for m in self.modules:  # forward: every module waits for the one below
            h, cache = m.forward(h)
            caches.append(cache)
        loss, d = self.loss_fn(h, y)
        updated = [False] * len(self.modules)
        for i in reversed(range(len(self.modules))):  # backward: every module waits for the one above
            if not active[i]:
                break  # no gradient reaches the modules below this step
            d, grads = self.modules[i].backward(d, caches[i], input_grad=i > 0)
            self.modules[i].update(grads)
            updated[i] = True
        return StepResult(loss, updated)

    def _step_no_bprop(self, x, y, active) -> StepResult:
        h, top = x, self.modules[-1]
        for m in self.modules[:-1]:
            h, _ = m.forward(h)
        logits, cache = top.forward(h)
        loss, d = self.loss_fn(logits, y)
        if active[-1]:
            _, grads = top.backward(d, cache, input_grad=False)
            top.update(grads)
        return StepResult(loss, [False] * (len(self.modules) - 1) + [active[-1]])

    def _step_dni(self, x, y, active, true_deltas) -> StepResult:
        n = len(self.modules)
        res = StepResult(None, [False] * n)
        unlock = self.input_models is not None
        if unlock:  # synthetic inputs need only the image: every module can start at once
            inputs = [(x, None)] + [im.predict(x) for im in self.input_models]
        h, below = x, None  # below: (S_{i-1}, its cache), waiting for the target only module i can give
        for i, module in enumerate(self.modules):
            if unlock:
                h = inputs[i][0]
            # 1. forward: the module's only remaining lock is its input
            out, cache = module.forward(h)
            if i == n - 1:  # 2a. top: the true loss gradient
                res.loss, d_out = self.loss_fn(out, y)
                ready = True
            else:           # 2b. the synthetic gradient, without waiting for anything above
                sg, sg_cache = self.synthesizers[i], None
                if active[i] or active[i + 1]:
                    d_out, sg_cache = sg.predict(out, y)
                    if true_deltas is not None:
                        res.cosine[i], res.norm_ratio[i] = _cosine_and_ratio(d_out, true_deltas[i])
                ready = sg.ready
            if unlock and i > 0:
                ready = ready and self.input_models[i - 1].ready
            if active[i]:
                # 3. backward and UPDATE NOW: module i is done before module i+1 runs forward
                d_in, grads = module.backward(d_out, cache, input_grad=below is not None)
                if ready:
                    module.update(grads)
                    res.updated[i] = True
                # 4. the synthesizer below regresses onto delta_hat_i backpropagated through module i
                if below is not None:
                    res.sg_loss[i - 1] = below[0].fit(below[1], d_in)
            if unlock and i < n - 1:  # 5. module i+1's input model learns module i's real output
                res.input_loss[i + 1] = self.input_models[i].fit(inputs[i + 1][1], out)
            below = (sg, sg_cache) if i < n - 1 and active[i + 1] else None
            h = out
        return res

    def _step_bp_lambda(self, x, y, active, true_deltas) -> StepResult:
        n = len(self.modules)
        res = StepResult(None, [False] * n)
        h, caches, preds, ready = x, [], [None] * (n - 1), [True] * n
        for i, module in enumerate(self.modules):  # 1. forward; each synthesizer predicts as its input appears
            h, cache = module.forward(h)
            caches.append(cache)
            if i < n - 1 and (active[i] or active[i + 1]):
                preds[i] = self.synthesizers[i].predict(h, y)
                ready[i] = self.synthesizers[i].ready  # read before this step's fit, as DNI does
                if true_deltas is not None:
                    res.cosine[i], res.norm_ratio[i] = _cosine_and_ratio(preds[i][0], true_deltas[i])
        res.loss, d = self.loss_fn(h, y)  # d: g_{n-1}, the true gradient at the top
        for i in reversed(range(n)):  # 2. backward: the mixture is passed down, each module waits for the one above
            if i < n - 1 and preds[i] is not None:  # d: b_i = g_{i+1} dh_{i+1}/dh_i, None if module i+1 skipped
                if d is not None:
                    res.sg_loss[i] = self.synthesizers[i].fit(preds[i][1], d)  # S_i regresses onto b_i
                d = preds[i][0] if d is None else bp_lambda_mix(d, preds[i][0], self.sg_lambda)
            if not active[i]:  # (S_i did not predict only when modules i and i+1 both skip)
                d = None  # nothing reaches the module below this step: it falls back to its SG
                continue
            d, grads = self.modules[i].backward(d, caches[i], input_grad=i > 0)
            if ready[i]:
                self.modules[i].update(grads)
                res.updated[i] = True
        res.sg_loss = dict(sorted(res.sg_loss.items()))
        return res


def bp_lambda_mix(backprop, synthetic, lam: float):
    """BP(λ)'s gradient ``λ · backprop + (1 - λ) · synthetic`` (same shapes); at λ = 0 or 1 one input, exactly."""
    if lam == 1.0:
        return backprop
    if lam == 0.0:
        return synthetic
    return backprop * lam + synthetic * (1.0 - lam)


# ---------------------------------------------------------------------- evaluation
def predict_logits(modules: Sequence[Module], x, *, batch_size: int = 1000):
    """Inference-mode logits of the real chain ``f_{n-1}(..f_0(x))``, in batches; x (N, ...) -> (N, K)."""
    xp = get_xp(x)
    outs = []
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size]
        for m in modules:
            h, _ = m.forward(h, train=False)
        outs.append(h)
    return xp.concatenate(outs, axis=0)


def error_percent(modules: Sequence[Module], x, y, *, batch_size: int = 1000) -> float:
    """Classification error in percent (a host float) on ``x`` (N, ...), ``y`` (N,)."""
    logits = predict_logits(modules, x, batch_size=batch_size)
    return 100.0 * float(to_numpy((logits.argmax(axis=1) != y).mean()))


def output_shapes(nets: Sequence[Sequential], in_shape: tuple, dtype=np.float32) -> list[tuple]:
    """Per-example output shape of each net, found by one inference pass on a zero example."""
    h = to_device(np.zeros((1, *in_shape), dtype=dtype))
    shapes = []
    for net in nets:
        h, _ = net.forward(h, train=False)  # inference mode: no running statistics change
        shapes.append(tuple(h.shape[1:]))
    return shapes


# ---------------------------------------------------------------------- construction
def _output_layer_keys(net: Sequential) -> list[str]:
    last = max(i for i, layer in enumerate(net.layers) if layer.params)
    return [f"{last}.{k}" for k in net.layers[last].params]


def build_trainer(nets: Sequence[Sequential], *, method: str, in_shape: tuple, lr: float,
                  optimizer: str = "adam", sg_hidden: int | None = None, sg_width: int = 1024, sg_bn: bool = True,
                  sg_lr: float | None = None, warmup: int = 0, p_update: float | Sequence[float] = 1.0,
                  unlock_forward: bool = False, input_hidden: int = 1, num_classes: int = 10, seed: int = 0,
                  sg_target: str = "bootstrap", sg_lambda: float = 0.0, rng: np.random.Generator,
                  dtype=np.float32) -> FeedForwardTrainer:
    """A trainer for ``nets`` (one Sequential per module, e.g. from :mod:`minidni.models`).

    SGs: an MLP synthesizer on flat (D,) outputs, a conv synthesizer (5x5, same
    padding, ``sg_width`` filters) on (C, H, W) maps; ``sg_hidden`` defaults to
    the paper's choice (2 for dni, 0 = linear for cdni); ``sg_lr`` defaults to
    ``lr``. ``unlock_forward`` adds synthetic-input models (flat activations only): MLPs from
    the image with ``input_hidden`` hidden layers of ``sg_width`` units, trained at ``sg_lr``.
    ``sg_target``/``sg_lambda``: see :class:`FeedForwardTrainer` (BP(λ) needs dni or cdni).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    nets = list(nets)
    sg_lr = lr if sg_lr is None else sg_lr
    if method == "no-bprop":
        modules = [Module(net, lr=lr, optimizer=optimizer, trainable=()) for net in nets[:-1]]
        modules.append(Module(nets[-1], lr=lr, optimizer=optimizer, trainable=_output_layer_keys(nets[-1])))
    else:
        modules = [Module(net, lr=lr, optimizer=optimizer) for net in nets]
    if unlock_forward and method not in ("dni", "cdni"):
        raise ValueError(f"the forward unlock needs --method dni or cdni, got {method}")
    if method not in ("dni", "cdni"):
        return FeedForwardTrainer(modules, method=method, p_update=p_update, seed=seed, sg_target=sg_target)

    hidden = (2 if method == "dni" else 0) if sg_hidden is None else sg_hidden
    shapes = output_shapes(nets, in_shape, dtype)
    common = dict(hidden=hidden, width=sg_width, batchnorm=sg_bn, conditioned=method == "cdni",
                  num_classes=num_classes, lr=sg_lr, warmup=warmup, rng=rng, dtype=dtype)
    synthesizers = []
    for shape in shapes[:-1]:
        if len(shape) == 1:
            synthesizers.append(mlp_synthesizer(shape[0], **common))
        elif len(shape) == 3:
            synthesizers.append(conv_synthesizer(shape[0], **common))
        else:
            raise ValueError(f"no synthesizer for module outputs of per-example shape {shape}")
    input_models = None
    if unlock_forward:
        if len(in_shape) != 1 or any(len(s) != 1 for s in shapes[:-1]):
            raise ValueError("the forward unlock needs flat (N, D) inputs and activations (the FCN), "
                             f"got input {in_shape} and module outputs {shapes[:-1]}")
        input_models = [mlp_regressor(in_shape[0], s[0], hidden=input_hidden, width=sg_width, batchnorm=sg_bn,
                                      lr=sg_lr, warmup=warmup, rng=rng, dtype=dtype) for s in shapes[:-1]]
    return FeedForwardTrainer(modules, method=method, synthesizers=synthesizers, input_models=input_models,
                              p_update=p_update, seed=seed, sg_target=sg_target, sg_lambda=sg_lambda)
