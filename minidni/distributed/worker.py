"""The body of one pipeline worker (a Ray actor): a :class:`~minidni.distributed.stage.Stage` and its messages.

:class:`StageWorker` is a plain class; :mod:`minidni.distributed.pipeline`
turns it into a Ray actor with ``ray.remote(StageWorker).options(...)``, one
process per stage, its BLAS pinned to ``blas_threads`` threads (1 unless the
pipeline says otherwise). Its step methods return two
objects, ``(tensor, info)``: the tensor (an activation or a gradient) goes on
to the next worker as an object reference, the small ``info`` dict comes back
to the driver, which reads it to follow progress and to notice failures.

Messages that go between workers without the driver: after the decoupled
steps of a call the worker sends the input gradients of its first module to
the worker below (``fit_sg_targets``: the regression targets of that worker's
top synthesizer) and, with the complete unlock, its outputs to the worker
above (``fit_input_targets``), one message for all the steps of the call. It
does not wait for them (``lockstep=False``): the receiver applies them between
two of its own calls, whenever they arrive. With ``lockstep=True`` it waits until the message has been applied,
which, with the driver's one-stage-at-a-time schedule, reproduces the
single-process order of operations exactly.

No worker ever waits for another outside lock-step: messages go both ways
with the complete unlock (SG targets down, synthetic-input targets up), and
two workers each blocked on a message to the other would wait forever. So
:meth:`flush` does not wait; it hands the references of the messages sent so
far to the driver, which waits for them (``ray.wait``) while every worker is
free to apply what it receives.

Backend. On ``backend="cupy"`` (one GPU per worker, reserved through Ray's
``num_gpus``) the worker unpacks its stage onto the GPU when it is set up
(:func:`~minidni.distributed.state.unpack`); activations and gradients
travel between workers as host arrays (the object store holds host memory)
and move onto the device when they arrive.

``fail_at_step``: a test hook; the worker's process exits abruptly when a step
of that number arrives, as if the machine had lost it.
"""

from __future__ import annotations

import os

import numpy as np

from minidni import backend
from minidni.distributed.state import unpack

__all__ = ["StageWorker", "BLAS_VARS", "blas_env"]

BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_env(threads: int = 1) -> dict[str, str]:
    """Environment variables that set a worker process's BLAS to ``threads`` threads."""
    return {k: str(int(threads)) for k in BLAS_VARS}


class StageWorker:
    """Holds one stage (sent packed, :func:`~minidni.distributed.state.pack`: its arrays private and writable,
    the views of its flat parameter buffers still views) and relays its messages.

    A worker starts empty; :meth:`setup` gives it a stage, its place in the
    pipeline and the handles of its neighbours. A drained worker can be set up
    again for another pipeline (starting a worker process takes seconds).
    """

    def __init__(self):
        self.stage = None
        self.index, self.lockstep, self.fail_at_step = -1, False, None
        self.xp = np
        self.below = self.above = None
        self.sent: list = []  # references of messages sent and not yet known to be applied

    def setup(self, payload: bytes, index: int, below, above, *, lockstep: bool = False,
              fail_at_step: int | None = None, backend_name: str = "numpy") -> None:
        """Hold the packed stage ``payload`` as group ``index``, between the workers ``below`` and ``above``,
        on ``backend_name`` (:class:`~minidni.backend.BackendError` if this worker cannot use it)."""
        self.xp = backend.set_backend(backend_name)
        self.stage = unpack(payload, self.xp)
        self.index, self.lockstep, self.fail_at_step = index, lockstep, fail_at_step
        self.below, self.above = below, above
        self.sent = []

    def where(self) -> dict:
        """Where this worker runs: Ray node id, IP address, process id, niceness, GPUs, backend, BLAS threads."""
        import ray  # noqa: PLC0415  (workers exist only under Ray)

        return {"group": self.index, "modules": None if self.stage is None else [self.stage.first, self.stage.last],
                "node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "niceness": os.nice(0), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "backend": backend.backend_name(self.xp),
                "blas_threads": {k: os.environ.get(k) for k in BLAS_VARS}}

    def ping(self) -> int:
        return self.index

    # ------------------------------------------------------------------ steps
    def _in(self, a):
        """An arriving host array (or None) on this worker's backend."""
        return a if a is None or self.xp is np else backend.to_device(a, self.xp)

    def dni_steps(self, steps: list, hs, xs, ys):
        """Decoupled steps ``steps`` in one call (Ray's cost per call is paid once for all of them).

        ``hs``: this stage's inputs, one per step (None with the complete unlock); ``xs``: the image
        batches (None without it); ``ys``: the labels. Returns ``(outs, infos)``: the outputs for the
        stage above (None at the top and with the complete unlock) and one info dict per step. The
        targets this stage produces for its neighbours go out afterwards, one message for all the steps.
        """
        outs, targets, infos = [], [], []
        for k, step in enumerate(steps):
            self._maybe_fail(step)
            out, d_in, info = self.stage.dni_step(step, self._in(None if hs is None else hs[k]),
                                                  self._in(None if xs is None else xs[k]), self._in(ys[k]))
            outs.append(backend.to_numpy(out))  # (no copy on NumPy)
            targets.append(backend.to_numpy(d_in))
            infos.append(info)
        if targets[0] is not None:
            self._send(self.below.fit_sg_targets.remote(steps, targets))
        if outs[0] is None:
            return None, infos
        if self.stage.input_models is not None:
            self._send(self.above.fit_input_targets.remote(steps, outs))
            return None, infos  # with the complete unlock nobody waits for these outputs
        return outs, infos

    def fit_sg_targets(self, steps: list, targets: list) -> None:
        for step, target in zip(steps, targets):
            self.stage.fit_sg_target(step, self._in(target))

    def fit_input_targets(self, steps: list, targets: list) -> None:
        for step, target in zip(steps, targets):
            self.stage.fit_input_target(step, self._in(target))

    def bprop_forward(self, step: int, h, y):
        self._maybe_fail(step)
        out, d_in, info = self.stage.bprop_forward(step, self._in(h), self._in(y))
        return backend.to_numpy(out if out is not None else d_in), info

    def bprop_backward(self, step: int, d):
        self._maybe_fail(step)
        return backend.to_numpy(self.stage.bprop_backward(step, self._in(d))), {"step": step}

    def _send(self, ref) -> None:
        import ray  # noqa: PLC0415

        if self.lockstep:
            ray.get(ref)
            return
        self.sent.append(ref)
        done, self.sent = ray.wait(self.sent, num_returns=len(self.sent), timeout=0)
        try:
            ray.get(done)  # raises if a message failed
        except ray.exceptions.RayActorError:
            pass  # its receiver died: the driver reports that worker, at its own step

    def _maybe_fail(self, step: int) -> None:
        if self.fail_at_step is not None and step == self.fail_at_step:
            os._exit(1)

    # ------------------------------------------------------------------ driver requests
    def flush(self) -> list:
        """The references of every message sent and not yet known to be applied (the driver waits for them)."""
        sent, self.sent = self.sent, []
        return sent

    def in_flight(self) -> int:
        return self.stage.in_flight()

    def infer(self, h, batch_size: int = 1000):
        return backend.to_numpy(self.stage.infer(self._in(h), batch_size))

    def set_lr(self, lr: float, sg_lr: float) -> None:
        self.stage.set_lr(lr, sg_lr)

    def state_dict(self) -> dict:
        return self.stage.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stage.load_state_dict(state)

    def report(self, since: float = 0.0) -> dict:
        """Timing summary, staleness summary and update count of this stage."""
        return {"group": self.index, "name": self.stage.name, "updates": self.stage.updates,
                "timing": self.stage.timing_summary(since), "staleness": self.stage.staleness_summary()}

    def calls(self, since: float = 0.0) -> list:
        """The raw call log ``(kind, step, start, end)`` from ``since`` on (for timeline figures)."""
        return [c for c in self.stage.calls if c[2] >= since]
