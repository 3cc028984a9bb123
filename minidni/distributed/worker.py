"""The body of one pipeline worker (a Ray actor): a :class:`~minidni.distributed.stage.Stage` and its messages.

:class:`StageWorker` is a plain class; :mod:`minidni.distributed.pipeline`
turns it into a Ray actor with ``ray.remote(StageWorker).options(...)``, one
process per stage, its BLAS pinned to ``blas_threads`` threads (1 unless the
pipeline says otherwise). Its step methods return their tensors (activations,
gradients) and a small ``info`` dict as separate objects: the tensors go on to
the next worker as object references, the ``info`` comes back to the driver,
which reads it to follow progress and to notice failures.

Messages. The input gradients of a worker's first module are the regression
targets of the top synthesizer of the worker below (``"sg"``), and, with the
complete unlock, a worker's outputs are the targets of the synthetic-input
model of the worker above (``"input"``). Workers never call each other: a
step returns them, and the driver hands each worker the messages meant for it
that are ready (as arguments of its next call, :meth:`dni_steps`, or of
:meth:`deliver`), so a message costs no call of its own and no worker ever
waits for another.

Data. A pipeline may give its workers the training set once (:meth:`hold_data`,
object-store references, so the workers of one node share one copy); its
minibatches then travel as ROWS, index arrays into it, and each worker takes
the images and labels it needs itself: the driver puts nothing in the object
store per minibatch.

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
    the views of its flat parameter buffers still views) and applies the messages the driver hands it.

    A worker starts empty; :meth:`setup` gives it a stage and its place in the
    pipeline. A drained worker can be set up again for another pipeline
    (starting a worker process takes seconds).
    """

    def __init__(self):
        self.stage = None
        self.index, self.fail_at_step = -1, None
        self.xp = np
        self.data = None  # (x (N, ...), y (N,)): the training set, when the pipeline sends rows

    def setup(self, payload: bytes, index: int, *, fail_at_step: int | None = None,
              backend_name: str = "numpy") -> None:
        """Hold the packed stage ``payload`` as group ``index`` on ``backend_name``
        (:class:`~minidni.backend.BackendError` if this worker cannot use it)."""
        self.xp = backend.set_backend(backend_name)
        self.stage = unpack(payload, self.xp)
        self.index, self.fail_at_step = index, fail_at_step
        self.data = None  # a previous pipeline's

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

    def hold_data(self, x, y) -> int:
        """Keep the training set (x (N, ...), y (N,); read-only arrays of the object store, not copied); returns N."""
        self.data = (x, y)
        return len(x)

    # ------------------------------------------------------------------ steps
    def _in(self, a):
        """An arriving host array (or None) on this worker's backend."""
        return a if a is None or self.xp is np else backend.to_device(a, self.xp)

    def _rows(self, rows: list, hs, xs, ys):
        """``(hs, xs, ys)`` with the minibatches of ``rows`` (index arrays (N,) into :meth:`hold_data`'s set) filled
        in: the labels, and the images where this worker needs them (its input in the first stage, the
        input models' with the complete unlock)."""
        if self.data is None:
            raise RuntimeError("a call sent rows, but this worker holds no data (Pipeline(data=...) sends it)")
        x, y = self.data
        ys = [y[r] for r in rows]
        if self.stage.input_models is not None:
            xs = [x[r] for r in rows]
        elif hs is None:
            hs = [x[r] for r in rows]
        return hs, xs, ys

    def dni_steps(self, steps: list, hs, xs, ys, rows, kinds: list, *messages):
        """Apply the messages that arrived, then decoupled steps ``steps`` in one call (Ray's cost per call
        is paid once for all of them).

        ``hs``: this stage's inputs, one per step (None with the complete unlock); ``xs``: the image
        batches (None without it); ``ys``: the labels. Or ``rows``: one index array per step into the
        held data (:meth:`hold_data`), with ``xs``, ``ys`` and the first stage's ``hs`` None.
        ``kinds`` and ``messages``: see :meth:`deliver`.
        Returns ``(outs, targets, infos)``: the outputs of the stage's last module, one per step (the
        input of the stage above, or with the complete unlock the targets of its input model; None at
        the top), the input gradients of its first module (the targets of the top synthesizer below;
        None in the first stage) and one info dict per step.
        """
        self.deliver(kinds, *messages)
        if rows is not None:
            hs, xs, ys = self._rows(rows, hs, xs, ys)
        outs, targets, infos = [], [], []
        for k, step in enumerate(steps):
            self._maybe_fail(step)
            out, d_in, info = self.stage.dni_step(step, self._in(None if hs is None else hs[k]),
                                                  self._in(None if xs is None else xs[k]), self._in(ys[k]))
            outs.append(backend.to_numpy(out))  # (no copy on NumPy)
            targets.append(backend.to_numpy(d_in))
            infos.append(info)
        return (None if outs[0] is None else outs), (None if targets[0] is None else targets), infos

    def deliver(self, kinds: list, *messages) -> None:
        """Apply messages: ``kinds[j] = (kind, steps)`` says what ``messages[j]`` holds, one array per step:
        ``"sg"``, targets of this stage's top synthesizer; ``"input"``, of its first module's input model."""
        for (kind, steps), targets in zip(kinds, messages):
            fit = self.stage.fit_sg_target if kind == "sg" else self.stage.fit_input_target
            for step, target in zip(steps, targets):
                fit(step, self._in(target))

    def bprop_forward(self, step: int, h, y, rows=None):
        """The locked forward of ``step``; ``rows`` (N,): its minibatch in the held data, instead of ``y``
        (and of ``h`` in the first stage)."""
        self._maybe_fail(step)
        if rows is not None:
            (h,), _, (y,) = self._rows([rows], None if h is None else [h], None, None)
        out, d_in, info = self.stage.bprop_forward(step, self._in(h), self._in(y))
        return backend.to_numpy(out if out is not None else d_in), info

    def bprop_backward(self, step: int, d):
        self._maybe_fail(step)
        return backend.to_numpy(self.stage.bprop_backward(step, self._in(d))), {"step": step}

    def _maybe_fail(self, step: int) -> None:
        if self.fail_at_step is not None and step == self.fail_at_step:
            os._exit(1)

    # ------------------------------------------------------------------ driver requests
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
