"""The two-clock system on two Ray workers: A in one process, B in another (issue 13, item 3).

Each worker holds a :class:`~minidni.dni.multinet.TwoClockTrainer` built from the same
options and seed as the single-process run (so the same initial weights) and uses only
its half: the fast worker runs A (and the SG), the slow worker runs B. Messages and
gradients travel as host arrays through Ray's object store.

- ``locked``: per period the driver submits ``A.locked_forward`` (A's T² steps; A keeps
  its caches), ``B.slow_step`` on the reference of A's messages, and ``A.locked_update`` on
  the reference of B's gradient at the messages. Ray runs one caller's calls on an actor in
  submission order, so A's next period starts only after its update: **A waits for B**.
- ``dni`` / ``none``: per period the driver submits A's T ``fast_window`` calls and one
  ``B.period`` call on the references of the T messages. A updates after every window and
  goes on to the next period at once; B catches up. In ``dni`` B itself sends its true
  gradient at the messages to A (``A.fit_sg``), which A applies between two of its windows
  whenever it arrives; the driver never makes A wait for it. At most ``ahead`` periods are
  in flight (the driver waits for B's oldest before submitting more).
- ``lockstep=True`` (the exactness test): the driver waits for every period to finish,
  SG fit included, before the next, which reproduces the single-process order exactly.

The SG fit in ``dni`` may therefore come up to ``ahead`` periods late (its input was
predicted with older weights; :meth:`Synthesizer.fit` regresses from the cached input
with the weights at fit time). Ray is optional (``pip install -e ".[distributed]"``).
"""

from __future__ import annotations

import time

import numpy as np

from minidni.backend import to_numpy
from minidni.dni.multinet import TwoClockTrainer

__all__ = ["FastWorker", "SlowWorker", "train_on_workers"]


def _host(a) -> np.ndarray:
    return np.asarray(to_numpy(a))


class FastWorker:
    """Network A (and its SG) in its own process; a plain class that Ray turns into an actor."""

    def __init__(self, trainer_options: dict, seed: int):
        self.trainer = TwoClockTrainer(**trainer_options, rng=np.random.default_rng(seed))
        self.sg_caches: dict[int, list] = {}  # period -> SG caches waiting for B's gradient
        self.pending = None                   # locked: A's caches waiting for B's gradient

    def fast_window(self, period: int, k: int, x, labels):
        """A's step on window k of ``period``: returns the message (B, M), host array."""
        _, msg, sg_cache, _ = self.trainer.fast_window(x.astype(self.trainer.dtype, copy=False), labels, k)
        if sg_cache is not None:
            self.sg_caches.setdefault(period, []).append(sg_cache)
        return _host(msg)

    def fit_sg(self, period: int, dmsgs) -> None:
        """B's true gradient at the messages of ``period`` (T, B, M) has arrived: fit the SG."""
        self.trainer.fit_sg(self.sg_caches.pop(period), dmsgs)

    def locked_forward(self, x, fast_y):
        """A over a whole period; returns the messages (T, B, M) and keeps its caches until ``locked_update``."""
        _, msgs, self.pending = self.trainer.locked_forward(x.astype(self.trainer.dtype, copy=False), fast_y)
        return _host(msgs)

    def locked_update(self, dmsgs) -> None:
        self.trainer.locked_update(self.pending, dmsgs)
        self.pending = None

    def state(self) -> dict:
        """A's parameters and update count (host arrays), and this process's CPU seconds so far."""
        return {"params": {k: _host(v) for k, v in self.trainer.fast_params.items()}, "cpu": time.process_time(),
                "updates": self.trainer.fast_updates, "waiting_fits": len(self.sg_caches),
                "sg_fits": self.trainer.sg.fits if self.trainer.sg is not None else 0}


class SlowWorker:
    """Network B in its own process; in ``dni`` it sends its gradient at the messages to A itself."""

    def __init__(self, trainer_options: dict, seed: int, fast=None):
        self.trainer = TwoClockTrainer(**trainer_options, rng=np.random.default_rng(seed))
        self.fast = fast  # the fast worker's handle (dni: B's gradient goes there)

    def slow_step(self, msgs, slow_y):
        """B's tick over the period's messages (T, B, M) and its update; returns dL_B/dm (T, B, M)."""
        _, dmsgs = self.trainer.slow_step(msgs.astype(self.trainer.dtype, copy=False), slow_y)
        return _host(dmsgs)

    def period(self, period: int, slow_y, *msgs):
        """dni / none: B's T ticks on the messages A sent; in dni the true gradient goes to A (not awaited).

        Returns the reference of A's fit (dni) so that lock-step can wait for it, else None.
        """
        dmsgs = self.slow_step(np.stack(msgs), slow_y)
        if self.trainer.mode == "dni":
            return [self.fast.fit_sg.remote(period, dmsgs)]  # in a list: Ray would resolve a bare reference
        return None

    def state(self) -> dict:
        return {"params": {k: _host(v) for k, v in self.trainer.slow_params.items()}, "cpu": time.process_time(),
                "updates": self.trainer.slow_updates}


def train_on_workers(trainer_options: dict, seed: int, stream, periods: int, *, ahead: int = 2,
                     lockstep: bool = False, blas_threads: int = 1) -> dict:
    """Train ``periods`` periods of ``stream`` with A and B in two Ray workers; Ray must be initialised.

    Returns ``{"seconds", "fast", "slow", "fast_cpu_seconds", "slow_cpu_seconds"}``: the wall
    time from the first submission until every update (and SG fit) is done, each worker's
    :meth:`state`, and the CPU seconds each worker process spent meanwhile (A's share bounds
    what running B beside it can save).
    """
    import ray  # noqa: PLC0415  (optional)

    from minidni.distributed.worker import blas_env  # noqa: PLC0415

    options = {"num_cpus": 1, "runtime_env": {"env_vars": blas_env(blas_threads)}}
    fast = ray.remote(FastWorker).options(**options).remote(trainer_options, seed)
    slow = ray.remote(SlowWorker).options(**options).remote(trainer_options, seed, fast)
    mode, T = trainer_options["mode"], trainer_options["T"]
    before = ray.get([fast.state.remote(), slow.state.remote()])  # both processes up before the clock starts
    in_flight: list = []

    def finish(refs) -> None:
        fits = ray.get(refs)
        if fits:  # dni: B's message to A, sent from B
            ray.get(fits[0])

    start = time.perf_counter()
    for p in range(periods):
        period = stream.next_period()
        if mode == "locked":
            msgs = fast.locked_forward.remote(period.x, period.fast_y)
            done = fast.locked_update.remote(slow.slow_step.remote(msgs, period.slow_y))
        else:
            msgs = [fast.fast_window.remote(p, k, period.x[k * T:(k + 1) * T], period.fast_y[k]) for k in range(T)]
            done = slow.period.remote(p, period.slow_y, *msgs)
        in_flight.append(done)
        while in_flight and (lockstep or len(in_flight) > ahead):
            finish(in_flight.pop(0))
    while in_flight:
        finish(in_flight.pop(0))
    fast_state, slow_state = ray.get([fast.state.remote(), slow.state.remote()])  # after every queued call
    seconds = time.perf_counter() - start
    for actor in (fast, slow):
        ray.kill(actor)
    return {"seconds": seconds, "fast": fast_state, "slow": slow_state,
            "fast_cpu_seconds": fast_state["cpu"] - before[0]["cpu"], "slow_cpu_seconds": slow_state["cpu"] - before[1]["cpu"]}
