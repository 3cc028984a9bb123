"""The body of one pipeline worker (a Ray actor): a :class:`~minidni.distributed.stage.Stage` and its messages.

:class:`StageWorker` is a plain class; :mod:`minidni.distributed.pipeline`
turns it into a Ray actor with ``ray.remote(StageWorker).options(...)``, one
process per stage, its BLAS pinned to one thread. Its step methods return two
objects, ``(tensor, info)``: the tensor (an activation or a gradient) goes on
to the next worker as an object reference, the small ``info`` dict comes back
to the driver, which reads it to follow progress and to notice failures.

Messages that go DOWN the pipeline without the driver: after a decoupled step
the worker sends the input gradient of its first module to the worker below
(``fit_sg_target``: the regression target of that worker's top synthesizer)
and, with the complete unlock, its output to the worker above
(``fit_input_target``). It does not wait for them (``lockstep=False``): the
worker below applies a target between two of its own steps, whenever it
arrives. With ``lockstep=True`` it waits until the message has been applied,
which, with the driver's one-stage-at-a-time schedule, reproduces the
single-process order of operations exactly.

``fail_at_step``: a test hook; the worker's process exits abruptly when a step
of that number arrives, as if the machine had lost it.
"""

from __future__ import annotations

import os
import pickle

__all__ = ["StageWorker", "BLAS_ENV"]

BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class StageWorker:
    """Holds one stage (sent pickled, so its arrays are private and writable) and relays its messages.

    A worker starts empty; :meth:`setup` gives it a stage, its place in the
    pipeline and the handles of its neighbours. A drained worker can be set up
    again for another pipeline (starting a worker process takes seconds).
    """

    def __init__(self):
        self.stage = None
        self.index, self.lockstep, self.fail_at_step = -1, False, None
        self.below = self.above = None
        self.sent: list = []  # references of messages sent and not yet known to be applied

    def setup(self, payload: bytes, index: int, below, above, *, lockstep: bool = False,
              fail_at_step: int | None = None) -> None:
        """Hold the pickled stage ``payload`` as group ``index``, between the workers ``below`` and ``above``."""
        self.stage = pickle.loads(payload)
        self.index, self.lockstep, self.fail_at_step = index, lockstep, fail_at_step
        self.below, self.above = below, above
        self.sent = []

    def where(self) -> dict:
        """Where this worker runs: Ray node id, IP address, process id, BLAS thread settings."""
        import ray  # noqa: PLC0415  (workers exist only under Ray)

        return {"group": self.index, "modules": [self.stage.first, self.stage.last],
                "node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "blas_threads": {k: os.environ.get(k) for k in BLAS_ENV}}

    def ping(self) -> int:
        return self.index

    # ------------------------------------------------------------------ steps
    def dni_step(self, step: int, h, x, y):
        self._maybe_fail(step)
        out, d_in, info = self.stage.dni_step(step, h, x, y)
        if d_in is not None:
            self._send(self.below.fit_sg_target.remote(step, d_in))
        if self.stage.input_models is not None:
            if out is not None:
                self._send(self.above.fit_input_target.remote(step, out))
            out = None  # with the complete unlock nobody waits for this output
        return out, info

    def fit_sg_target(self, step: int, target) -> None:
        self.stage.fit_sg_target(step, target)

    def fit_input_target(self, step: int, target) -> None:
        self.stage.fit_input_target(step, target)

    def bprop_forward(self, step: int, h, y):
        self._maybe_fail(step)
        out, d_in, info = self.stage.bprop_forward(step, h, y)
        return (out if out is not None else d_in), info

    def bprop_backward(self, step: int, d):
        self._maybe_fail(step)
        return self.stage.bprop_backward(step, d), {"step": step}

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
    def flush(self) -> int:
        """Wait until every message this worker sent has been applied; returns how many there were."""
        import ray  # noqa: PLC0415

        count, sent = len(self.sent), self.sent
        self.sent = []
        try:
            ray.get(sent)
        except ray.exceptions.RayActorError:
            pass  # as in _send: the driver reports the dead receiver itself
        return count

    def in_flight(self) -> int:
        return self.stage.in_flight()

    def infer(self, h, batch_size: int = 1000):
        return self.stage.infer(h, batch_size)

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
