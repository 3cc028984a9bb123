"""One stage of a pipeline: a run of consecutive modules, their synthesizers, and what is in flight.

A network of ``n`` modules ``f_0 .. f_{n-1}`` (:mod:`minidni.dni.feedforward`)
is cut into consecutive groups; a :class:`Stage` holds modules
``first .. last`` with, for DNI, the synthesizer ``S_i`` on the output of every
one of them below the top module, and, for the complete unlock, the
synthetic-input model ``I_i`` of every one of them above module 0. It is plain
Python (no Ray): :mod:`minidni.distributed.pipeline` runs each stage in its own
worker process and wires the calls together.

DNI (``dni_step``), for modules ``first .. last`` in turn, exactly the order of
:meth:`FeedForwardTrainer._step_dni <minidni.dni.feedforward.FeedForwardTrainer>`:
forward; ``S_i`` predicts ``delta_hat_i``; backward and UPDATE AT ONCE; the
synthesizer below regresses onto the backward's input gradient. Two of those
regressions cross a stage boundary and happen LATER, when a message arrives:

- the input gradient of module ``first`` (``d_in``, returned by ``dni_step``)
  is the target of ``S_{first-1}``, which lives in the stage below; it is
  delivered there by :meth:`fit_sg_target`. Until then the stage below keeps
  the prediction's cache (``pending_sg``) and goes on with the next minibatch.
  With the complete unlock the stage above does not wait for this stage's
  output, so its target may arrive BEFORE the prediction it belongs to: it
  waits in ``early_sg`` and is fitted right after that prediction;
- with the complete unlock, the output of module ``last`` is the target of
  ``I_{last+1}`` in the stage above (:meth:`fit_input_target`); a target that
  arrives before the prediction it belongs to waits in ``early_input``.

Staleness. ``updates`` counts this stage's training steps. When a target
arrives, the stage records how many updates it has made since the step whose
prediction the target belongs to (0: the target arrived before the next
step, as in a single process).

Backprop (``bprop_forward``/``bprop_backward``): the forward keeps its caches
(``bprop_caches``) until the gradient from the stage above arrives; only then
can the stage run its backward and update: it is update and backward locked.

Timing. Every call is logged as ``(kind, step, start, end)`` in wall-clock
seconds (``time.time()``, comparable between processes on one machine), and
every training step as ``(step, forward_start, forward_end, update_end)``;
:meth:`timing_summary` turns them into busy/idle time and the waits that the
three locks cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from minidni.backend import get_xp
from minidni.distributed.state import load_module_state, load_regressor_state, module_state, regressor_state
from minidni.functional.losses import softmax_cross_entropy

__all__ = ["Stage"]


class Stage:
    """Modules ``first .. first+len(modules)-1`` of an ``num_modules``-module network.

    ``synthesizers[j]`` is ``S_{first+j}`` (one per module below the network's
    top; empty for bprop). ``input_models[j]`` is the synthetic-input model of
    module ``first+j`` (None for module 0), or ``input_models=None`` without
    the complete unlock.
    """

    def __init__(self, modules: Sequence, *, first: int, num_modules: int, synthesizers: Sequence = (),
                 input_models: Sequence | None = None, loss: Callable = softmax_cross_entropy):
        self.modules = list(modules)
        self.first, self.n = int(first), int(num_modules)
        self.last = self.first + len(self.modules) - 1
        if not self.modules or self.first < 0 or self.last >= self.n:
            raise ValueError(f"a stage holds 1 or more of the {self.n} modules, got {len(self.modules)} from {first}")
        self.is_top = self.last == self.n - 1
        self.synthesizers = list(synthesizers)
        expected = len(self.modules) - (1 if self.is_top else 0)
        if self.synthesizers and len(self.synthesizers) != expected:
            raise ValueError(f"stage {self.first}..{self.last} needs {expected} synthesizers, got {len(synthesizers)}")
        self.input_models = None if input_models is None else list(input_models)
        if self.input_models is not None and len(self.input_models) != len(self.modules):
            raise ValueError(f"stage {self.first}..{self.last} needs {len(self.modules)} input-model slots, "
                             f"got {len(self.input_models)}")
        self.loss_fn = loss
        self.updates = 0
        self.pending_sg: dict = {}       # step -> (S_last's prediction cache, updates and S_last's fits
                                 #          after that step, its input h_last and labels)
        self.early_sg: dict = {}         # step -> target for S_last that arrived before the prediction
        self.pending_input: dict = {}    # step -> (cache of I_first's prediction, updates after that step)
        self.early_input: dict = {}      # step -> target for I_first that arrived before the prediction
        self.bprop_caches: dict = {}     # step -> module caches waiting for the gradient from above
        self.staleness: dict = {"sg": [], "input": []}
        self.last_losses: dict = {"sg_loss": {}, "input_loss": {}}
        self.calls: list = []            # (kind, step, start, end)
        self.steps: list = []            # (step, forward_start, forward_end, update_end)

    @property
    def name(self) -> str:
        return f"modules {self.first}-{self.last}" if self.last > self.first else f"module {self.first}"

    # ------------------------------------------------------------------ DNI
    def dni_step(self, step: int, h, x, y):
        """One decoupled step on a minibatch; returns ``(out, d_in, info)``.

        ``h`` (N, ...): this stage's input (ignored with the complete unlock);
        ``x`` the image batch (used with the complete unlock); ``y`` (N,) labels.
        ``out``: the output of module ``last`` (None at the top); ``d_in``: the
        target for ``S_{first-1}`` (None in the first stage); ``info``: host
        floats (``loss`` at the top, the last regression losses, the step's ``seconds``).
        """
        start = time.time()
        unlock = self.input_models is not None
        preds = [None if im is None else im.predict(x) for im in self.input_models] if unlock else None
        if unlock and self.first > 0:
            self._input_prediction_made(step, preds[0][1])
        info, below, forward_end, out, target_below = {"step": step}, None, start, None, None
        for j, module in enumerate(self.modules):
            i = self.first + j
            if unlock:
                h = x if i == 0 else preds[j][0]
            out, cache = module.forward(h)
            forward_end = time.time()
            if i == self.n - 1:  # the top module sees the true loss gradient
                loss, d_out = self.loss_fn(out, y)
                info["loss"], ready, sg, sg_cache = float(loss), True, None, None
            else:                # the synthetic gradient: nothing above is waited for
                sg = self.synthesizers[j]
                d_out, sg_cache = sg.predict(out, y)
                ready = sg.ready
            if unlock and i > 0:
                ready = ready and self.input_models[j].ready
            d_in, grads = module.backward(d_out, cache, input_grad=i > 0)  # module 0's input is the image
            if ready:
                module.update(grads)
            if j == 0:
                target_below = d_in  # the gradient at this stage's input: S_{first-1}'s target
            if below is not None:  # S_{i-1} sits in this stage: its target is here now
                self.last_losses["sg_loss"][i - 1] = float(below[0].fit(below[1], d_in))
            if unlock and j + 1 < len(self.modules):
                self.last_losses["input_loss"][i + 1] = float(self.input_models[j + 1].fit(preds[j + 1][1], out))
            below = (sg, sg_cache) if sg is not None else None
            h = out
        self.updates += 1
        if below is not None:  # S_last's target will come from the stage above (or came already)
            self.pending_sg[step] = (below[1], self.updates, below[0].fits, out, y)
            if step in self.early_sg:
                self._fit_sg(step, self.early_sg.pop(step))
        end = time.time()
        self._log("dni_step", step, start, end)
        self.steps.append((step, start, forward_end, end))
        info.update({k: dict(v) for k, v in self.last_losses.items()}, seconds=end - start)
        return (None if self.is_top else out), (target_below if self.first > 0 else None), info

    def fit_sg_target(self, step: int, target) -> None:
        """The gradient at ``h_last`` for ``step`` arrived from the stage above: ``S_last`` regresses onto it
        (or, if this stage has not predicted for ``step`` yet, right after it does)."""
        start = time.time()
        if step in self.pending_sg:
            self._fit_sg(step, target)
        else:
            self.early_sg[step] = target
        self._log("sg_fit", step, start, time.time())

    def _fit_sg(self, step: int, target) -> None:
        cache, stamp, fits, out, y = self.pending_sg.pop(step)
        sg = self.synthesizers[-1]
        if sg.fits != fits:
            # S_last was fitted since it predicted for this step: its gradient from the old prediction would
            # be a DELAYED gradient of its own regression (x^T (M_old x - t)), which oscillates and diverges
            # once targets arrive 2 steps late. Predict again with the current weights; the module already
            # used the old prediction, as decoupling requires. (A BatchNorm in S counts this batch twice.)
            _, cache = sg.predict(out, y)
        self.last_losses["sg_loss"][self.last] = float(sg.fit(cache, target))
        self.staleness["sg"].append(self.updates - stamp)

    def fit_input_target(self, step: int, target) -> None:
        """The real input of module ``first`` for ``step`` arrived from the stage below: ``I_first`` learns it."""
        start = time.time()
        if step in self.pending_input:
            cache, stamp = self.pending_input.pop(step)
            self._fit_input(cache, target, self.updates - stamp)
        else:  # the prediction for this step is not made yet: fit right after it
            self.early_input[step] = target
        self._log("input_fit", step, start, time.time())

    def _input_prediction_made(self, step: int, cache) -> None:
        if step in self.early_input:
            self._fit_input(cache, self.early_input.pop(step), 0)
        else:
            self.pending_input[step] = (cache, self.updates + 1)

    def _fit_input(self, cache, target, staleness: int) -> None:
        self.last_losses["input_loss"][self.first] = float(self.input_models[0].fit(cache, target))
        self.staleness["input"].append(staleness)

    # ------------------------------------------------------------------ backprop
    def bprop_forward(self, step: int, h, y):
        """Forward through the stage; returns ``(out, d_in, info)``.

        Below the top, the caches wait for :meth:`bprop_backward` and ``out`` is
        the stage's output. The top stage also computes the loss and runs its
        backward and update at once (nothing is above it); ``d_in`` is then the
        gradient for the stage below (None in the first stage).
        """
        start, caches = time.time(), []
        for module in self.modules:
            h, cache = module.forward(h)
            caches.append(cache)
        forward_end = time.time()
        info = {"step": step}
        if not self.is_top:
            self.bprop_caches[step] = (caches, start, forward_end)
            self._log("forward", step, start, forward_end)
            return h, None, info
        loss, d = self.loss_fn(h, y)
        info["loss"] = float(loss)
        d_in = self._backward(caches, d)
        end = time.time()
        self._log("bprop_step", step, start, end)
        self.steps.append((step, start, forward_end, end))
        return None, d_in, info

    def bprop_backward(self, step: int, d):
        """The gradient at ``h_last`` arrived: backward and update every module; returns the gradient below."""
        start = time.time()
        caches, forward_start, forward_end = self.bprop_caches.pop(step)
        d_in = self._backward(caches, d)
        end = time.time()
        self._log("backward", step, start, end)
        self.steps.append((step, forward_start, forward_end, end))
        return d_in

    def _backward(self, caches, d):
        for j in range(len(self.modules) - 1, -1, -1):
            module = self.modules[j]
            d, grads = module.backward(d, caches[j], input_grad=self.first + j > 0)  # nobody needs the image's
            module.update(grads)  # backprop: each module updates right after its own backward
        self.updates += 1
        return d if self.first > 0 else None

    # ------------------------------------------------------------------ evaluation, lr, state
    def infer(self, h, batch_size: int = 1000):
        """Inference-mode output of the stage for ``h`` (N, ...), in batches (no state changes)."""
        xp, outs = get_xp(h), []
        for start in range(0, h.shape[0], batch_size):
            out = h[start:start + batch_size]
            for module in self.modules:
                out, _ = module.forward(out, train=False)
            outs.append(out)
        return xp.concatenate(outs, axis=0)

    def set_lr(self, lr: float, sg_lr: float) -> None:
        for module in self.modules:
            module.set_lr(lr)
        for reg in self.synthesizers + [im for im in self.input_models or [] if im is not None]:
            reg.lr = sg_lr

    def in_flight(self) -> int:
        """Predictions and caches still waiting for a message (0 once the pipeline is drained)."""
        return (len(self.pending_sg) + len(self.early_sg) + len(self.pending_input) + len(self.early_input)
                + len(self.bprop_caches))

    def state_dict(self) -> dict:
        """Host copies of everything this stage owns (keys of :mod:`minidni.distributed.state`)."""
        if self.in_flight():
            raise RuntimeError(f"stage {self.name} has {self.in_flight()} minibatches in flight; drain it first")
        out = {}
        for j, module in enumerate(self.modules):
            out.update(module_state(self.first + j, module))
        for j, sg in enumerate(self.synthesizers):
            out.update(regressor_state(f"s{self.first + j}.", sg))
        for j, im in enumerate(self.input_models or []):
            if im is not None:
                out.update(regressor_state(f"in{self.first + j}.", im))
        return out

    def load_state_dict(self, state: dict) -> None:
        """Load this stage's entries of a pipeline checkpoint (other stages' entries are ignored)."""
        for j, module in enumerate(self.modules):
            load_module_state(self.first + j, module, state)
        for j, sg in enumerate(self.synthesizers):
            load_regressor_state(f"s{self.first + j}.", sg, state)
        for j, im in enumerate(self.input_models or []):
            if im is not None:
                load_regressor_state(f"in{self.first + j}.", im, state)

    # ------------------------------------------------------------------ timing
    def _log(self, kind: str, step: int, start: float, end: float) -> None:
        self.calls.append((kind, step, start, end))

    def timing_summary(self, since: float = 0.0) -> dict:
        """Seconds busy and idle, and the mean waits the locks cause, over calls that started at ``since`` or later.

        ``forward_wait``: idle time just before a step's forward (waiting for the
        input: forward lock, or for the driver); ``update_delay``: from the end of
        a step's forward to its update (includes the backward lock of bprop);
        ``backward_wait`` (bprop): from the end of the forward to the start of
        the backward, i.e. waiting for every stage above.
        """
        calls = [c for c in self.calls if c[2] >= since]
        steps = [s for s in self.steps if s[1] >= since]
        if not calls:
            return {"calls": 0}
        busy = sum(end - start for _, _, start, end in calls)
        span = calls[-1][3] - calls[0][2]
        forward_kinds = ("dni_step", "forward", "bprop_step")
        waits = [c[2] - p[3] for p, c in zip(calls, calls[1:]) if c[0] in forward_kinds]
        backward_starts = {step: start for kind, step, start, _ in calls if kind == "backward"}
        backward_waits = [backward_starts[s] - fe for s, _, fe, _ in steps if s in backward_starts]
        mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
        return {"calls": len(calls), "steps": len(steps), "span_seconds": span, "busy_seconds": busy,
                "idle_seconds": span - busy, "busy_fraction": busy / span if span > 0 else 1.0,
                "forward_seconds_mean": mean([fe - fs for _, fs, fe, _ in steps]),
                "forward_wait_mean": mean(waits), "update_delay_mean": mean([ue - fe for _, _, fe, ue in steps]),
                "backward_wait_mean": mean(backward_waits)}

    def staleness_summary(self) -> dict:
        """Per kind (``sg``, ``input``): count, mean, max and a histogram ``{staleness: count}``."""
        out = {}
        for kind, values in self.staleness.items():
            if values:
                counts = np.bincount(np.asarray(values))
                out[kind] = {"count": len(values), "mean": float(np.mean(values)), "max": int(max(values)),
                             "histogram": {int(k): int(c) for k, c in enumerate(counts) if c}}
        return out
