"""A network's modules trained in parallel Ray workers: the decoupled (DNI) pipeline and the locked (bprop) one.

    >>> init_ray()                                     # or init_ray("HEAD:6379") to join a cluster
    >>> trainer = build_trainer(nets, method="cdni", ...)
    >>> with Pipeline(trainer, workers=2) as pipe:     # the trainer's modules move into 2 workers
    ...     for step, (x, y) in enumerate(batches, start=1):
    ...         for done in pipe.submit(step, x, y):   # steps finished so far: {"step", "loss", ...}
    ...             print(done["step"], done["loss"])
    ...     pipe.drain()
    ...     print(pipe.error_percent(x_test, y_test), pipe.report())

The ``n`` modules are cut into ``workers`` consecutive groups (:func:`balanced_groups`:
as equal as possible in parameter count, a proxy for their compute), and each
group (a :class:`~minidni.distributed.stage.Stage`) lives in its own worker
process (:class:`~minidni.distributed.worker.StageWorker`), whose BLAS is pinned to one
thread (``blas_threads``) so that K workers use K cores. Where the trainer has
a synthesizer is the trainer's business: give it one module per worker and
the synthetic gradients sit exactly at the cuts, each worker's layers training
by backprop among themselves (what ``python -m minidni.run mnist --workers K``
does, :mod:`minidni.experiments.pipeline`).

Decoupled (``dni``/``cdni``). The driver puts the minibatches in the object
store (or, given the training set as ``data``, sends only their rows: see
"Data" below) and submits ``dni_steps`` to every worker, each taking the previous
worker's outputs by REFERENCE (the arrays go from worker to worker, not
through the driver). For each minibatch a worker runs forward, asks its
synthesizer, runs backward and updates, and moves on to the next; the
gradients at its input are returned too, as a message for the worker below
(its synthesizer's regression targets). The driver keeps a mailbox per worker
and passes the messages that are ready, by reference, with that worker's next
call, which applies them before its steps. Nothing waits for the workers
above. With the complete unlock each worker also gets the batches themselves
and its input comes from its synthetic-input model, so no worker waits for the
one below either.

Calls. Every Ray call costs the driver, the raylet and the worker about a
millisecond of CPU. A decoupled step on K workers makes K calls: messages ride
on the next call instead of making calls of their own (with a call per
message, two workers with no computation at all took 6.3 ms per minibatch on
2 cores, as long as a worker's share of an FCN-8 x 256 step, and 1.7 ms when
a call carried 4 minibatches). So a decoupled call carries
``steps_per_call`` minibatches, and their targets go down as one message.
Each module still updates after every minibatch; what grows is the delay
of a synthesizer's targets (recorded as staleness; with the default window
about 2 ``steps_per_call`` updates: measured 1.9, 4.4, 6.4 and 8.5 at 1, 2, 3
and 4 per call). The default, ``"auto"``, times steps 4
to 8 one per call and then fixes ``steps_per_call`` to enough minibatches for
:data:`CALL_SECONDS` (60 ms) of the slowest worker's computation, at most
:data:`MAX_STEPS_PER_CALL` (4). Measured on 2 cores (MNIST FCN, batch 256):
FCN-4 x 1024 (a worker's step about 40 ms) ran 8 % faster with 2 per call
than with 1 (test error 5.45 % against 5.40 % after 300 steps); FCN-8 x 1024
(80-100 ms) gained nothing from 2 or 4, and with 4 its error after 200 steps
went from 4.95 % to 7.75 %; FCN-8 x 256 (12 ms) was as fast with 4 as with 6
(1.07x and 1.08x one process), with test errors of 3.80 % and 4.70 % in two
runs with 4 and 5.40 % with 6 (one process: 3.90 %). The locked pipeline cannot
batch its calls: its next forward needs the previous backward, so it makes
them one minibatch at a time.

Locked (``bprop``). ``bprop_forward`` on every worker, then ``bprop_backward``
from the top down; each worker keeps its caches until the gradient from above
arrives, and only then updates. Ray runs one caller's calls on an actor in the
order they were submitted, so the next forward on a worker always comes after
its backward: this is plain backprop, spread over processes.

Data. ``data=(x_train, y_train)`` puts the training set in the object store
once (or takes the references of an earlier ``ray.put``, to share one copy
between pipelines) and gives it to every worker (one copy per node, read in
place); ``submit(step, rows=idx)`` then sends only the minibatch's row
indices, and each worker takes its images and labels from there. Without it,
``submit(step, x, y)`` puts every minibatch's arrays in the object store: a
copy by the driver, object-store traffic through the raylet on the shared
cores, and on a cluster the images cross the network at every step.

In flight. At most ``window`` minibatches are in the pipeline: before new
ones go in, the oldest call's must be finished by every worker. That bounds memory
(activations, caches, pending predictions) and the staleness of the
synthesizers' targets, which every worker records (``report()``).

Lock-step (``lockstep=True``): window 1, the driver submits to one worker at a
time and waits, so every message is ready and applied at the start of the
receiver's next call. The order of operations is then exactly that of the single-process
:class:`~minidni.dni.feedforward.FeedForwardTrainer`, so the parameters agree
to round-off (the tests check it): a debugging mode, with no parallelism.

No deadlock. No worker ever calls or waits for another (with the complete
unlock messages flow both ways): every message goes through the driver's
mailboxes, and a worker gets only messages that are ready; the driver waits,
with ``ray.wait``, for the steps. ``timeout`` (seconds, default none) bounds
every such wait: a pipeline that makes no progress for that long raises
:class:`PipelineStalled` instead of hanging.

GPUs. ``backend="cupy"`` reserves one GPU per worker (Ray's ``num_gpus``;
:class:`~minidni.cli.UsageError` in one line when the cluster has fewer GPUs
than workers) and each worker moves its stage onto its GPU.

Failures. A worker that dies makes the next ``submit``/``drain`` raise
:class:`WorkerDied` naming the group, its modules and the step.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from minidni.backend import BACKENDS, BackendError
from minidni.cli import TrainingDiverged, UsageError
from minidni.distributed.stage import Stage
from minidni.distributed.state import pack, subset
from minidni.distributed.worker import StageWorker, blas_env

__all__ = ["Pipeline", "WorkerDied", "PipelineStalled", "balanced_groups", "make_stages", "spawn_workers",
           "require_ray", "init_ray", "RAY_MISSING", "MODES", "RAY_CONNECT_TIMEOUT", "STEPS_PER_CALL",
           "CALL_SECONDS", "MAX_STEPS_PER_CALL"]

RAY_MISSING = 'Ray is not installed: pip install -e ".[distributed]"'
MODES = {"bprop": "locked", "dni": "decoupled", "cdni": "decoupled"}
RAY_CONNECT_TIMEOUT = 30.0  # seconds to reach a cluster's head before giving up
STEPS_PER_CALL = "auto"  # decoupled minibatches per worker call; see "Calls" in the module docstring
CALL_SECONDS = 0.06  # auto: a call carries at least this much of the slowest worker's computation ...
MAX_STEPS_PER_CALL = 4  # ... in at most this many minibatches
AUTO_PROBE = (3, 8)  # auto: the steps after the first 3 up to the 8th are timed, one per call
WORKER_NICENESS = 0  # Ray's default (15) lets the driver and Ray's own processes preempt every worker


class WorkerDied(TrainingDiverged):
    """A pipeline worker's process died; the message names the group, its modules and the step.

    A subclass of :class:`~minidni.cli.TrainingDiverged` so that
    :func:`minidni.cli.run_command` reports it in one line.
    """

    def __init__(self, message: str, *, group: int, step: int):
        super().__init__(message)
        self.group, self.step = group, step


class PipelineStalled(TrainingDiverged):
    """No step or message of the pipeline finished within its ``timeout``; reported in one line."""


def require_ray():
    """The ``ray`` module, or :class:`~minidni.cli.UsageError` with the install command."""
    try:
        import ray  # noqa: PLC0415  (an optional dependency)
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for ``auto``/``local``."""
    rest = address.split("://", 1)[-1]
    if rest in ("auto", "local"):
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r} is not HOST:PORT (accepted: e.g. head-node:6379, "
                         "ray://head-node:10001, auto)")
    return host.strip("[]"), int(port)


def _within(seconds: float, fn):
    """``(True, fn())`` if ``fn`` returns within ``seconds``, ``(False, None)`` if not (it is left running in a
    daemon thread: a connection attempt that cannot be cancelled). An exception from ``fn`` is raised here."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True, name="minidni-ray-probe")
    thread.start()
    thread.join(max(seconds, 0.0))
    if "error" in box:
        raise box["error"]
    return ("value" in box), box.get("value")


def check_reachable(address: str, timeout: float) -> None:
    """UsageError, one line naming ``address``, unless a Ray head answers there within ``timeout`` seconds.

    Three steps, all inside the one time limit: the host name resolves, a TCP
    connection opens, and (for a ``HOST:PORT`` head address) its GCS answers
    with the cluster's id, which is where ``ray.init`` would otherwise wait for
    minutes on a port that is open but is not a Ray head.
    """
    target = _host_port(address)
    if target is None:
        return
    start = time.monotonic()
    left = lambda: timeout - (time.monotonic() - start)  # noqa: E731

    def fail(why: str):
        return UsageError(f"--ray-address {address}: no Ray head answered there ({why} after "
                          f"{time.monotonic() - start:.1f} s, --ray-timeout {timeout:g}); start one with "
                          "`ray start --head` or check the address")

    try:
        done, infos = _within(left(), lambda: socket.getaddrinfo(*target, type=socket.SOCK_STREAM))
        if not done:
            raise fail("the host name did not resolve")
        with socket.create_connection(infos[0][4][:2], timeout=max(left(), 0.01)):
            pass
    except socket.gaierror as exc:
        raise fail(f"unknown host: {exc.strerror}") from None
    except OSError as exc:
        raise fail("timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)) from None
    if address.startswith("ray://"):
        return  # a Ray client server, not a GCS: ray.init reports its own errors quickly
    from ray._raylet import GcsClient  # noqa: PLC0415  (what ray.init itself connects with)

    try:
        done, _ = _within(left(), lambda: GcsClient(address=f"{target[0]}:{target[1]}").cluster_id)
    except Exception as exc:  # noqa: BLE001  (any failure of the handshake means: not a usable head)
        raise fail(f"not a Ray head: {type(exc).__name__}") from None
    if not done:
        raise fail("the port is open but no Ray GCS answered")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             timeout: float = RAY_CONNECT_TIMEOUT) -> bool:
    """Connect to Ray: join the cluster at ``address`` (UsageError, one line, if its head cannot be
    reached within ``timeout`` seconds), or start a local instance with ``num_cpus`` (default
    ``os.cpu_count()``) and ``num_gpus`` (default: what Ray detects). Returns True if this call started
    or joined Ray (so the caller should ``ray.shutdown()`` when done), False if Ray was already initialised.

    A local instance starts its workers at niceness :data:`WORKER_NICENESS` (unless $RAY_worker_niceness
    says otherwise): at Ray's default of 15 the driver and Ray's own processes, at 0, preempt the
    workers whenever they run. A cluster's nodes use what ``ray start`` was given (start them with
    ``RAY_worker_niceness=0 ray start ...``); each worker's niceness is in its placement record.
    """
    import logging  # noqa: PLC0415

    ray = require_ray()
    if address:
        check_reachable(address, timeout)
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}  # failures arrive as exceptions
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:
            raise UsageError(f"--ray-address {address}: could not join a Ray cluster there "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    else:
        nice = {} if "RAY_worker_niceness" in os.environ else {
            "_system_config": {"worker_niceness": WORKER_NICENESS}}
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, **quiet, **nice)
        except Exception as exc:  # noqa: BLE001  (Ray raises plain Exception when its processes do not start)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"could not start a local Ray instance: {message} (on a busy machine, try again; "
                             "or join a running cluster with --ray-address)") from None
    return True


def balanced_groups(costs: Sequence[float], k: int, *, cut_costs: Sequence[float] | None = None
                    ) -> list[tuple[int, int]]:
    """Cut ``costs`` into ``k`` consecutive non-empty groups ``[(start, stop), ...]`` minimising the largest sum.

    ``cut_costs[i]`` (default 0): what a group ending after item ``i`` (below the top) pays besides its items,
    e.g. the synthesizer that then sits on that item's output, in the group below the cut.
    """
    n = len(costs)
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} modules into {k} groups (accepted: 1 to {n} workers)")
    extra = [0.0] * n if cut_costs is None else [float(c) for c in cut_costs] + [0.0]
    if len(extra) != n:
        raise ValueError(f"cut_costs needs {n - 1} values (one per boundary), got {len(extra) - 1}")
    prefix = np.concatenate([[0.0], np.cumsum(costs, dtype=np.float64)])
    # best[j][m]: smallest possible largest group when the first m modules form j groups
    best = np.full((k + 1, n + 1), np.inf)
    cut = np.zeros((k + 1, n + 1), dtype=int)
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for m in range(j, n + 1):
            for s in range(j - 1, m):
                value = max(best[j - 1][s], prefix[m] - prefix[s] + (extra[m - 1] if m < n else 0.0))
                if value < best[j][m]:
                    best[j][m], cut[j][m] = value, s
    groups, m = [], n
    for j in range(k, 0, -1):
        groups.append((int(cut[j][m]), m))
        m = cut[j][m]
    return groups[::-1]


def spawn_workers(count: int, *, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                  blas_threads: int = 1) -> list:
    """Start ``count`` empty worker actors: one process each, BLAS pinned to ``blas_threads`` threads,
    reserving ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (Ray's ``num_gpus``: a worker with 1
    sees only its own GPU). UsageError, one line, when the cluster has fewer CPUs or GPUs than that.

    A :class:`Pipeline` starts its own; pass these as ``actors=`` to reuse
    processes across several pipelines (each set up after the previous drained).
    """
    ray = require_ray()
    resources = ray.cluster_resources()
    for kind, per_worker in (("GPU", gpus_per_worker), ("CPU", cpus_per_worker)):
        available = resources.get(kind, 0.0)
        if count * per_worker > available:
            raise UsageError(f"{count} workers x {per_worker:g} {kind} need {count * per_worker:g} {kind}s; the Ray "
                             f"cluster has {available:g} (use fewer --workers or add nodes with {kind}s)")
    remote = ray.remote(StageWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0,
                                             max_task_retries=0, runtime_env={"env_vars": blas_env(blas_threads)})
    return [remote.remote() for _ in range(count)]


def make_stages(trainer, groups: Sequence[tuple[int, int]]) -> list[Stage]:
    """One :class:`Stage` per ``(start, stop)`` group, holding ``trainer``'s pieces (the same objects, not copies)."""
    n, unlock = len(trainer.modules), trainer.input_models is not None
    return [Stage(trainer.modules[a:b], first=a, num_modules=n, synthesizers=trainer.synthesizers[a:min(b, n - 1)],
                  input_models=[None if i == 0 else trainer.input_models[i - 1] for i in range(a, b)]
                  if unlock else None, loss=trainer.loss_fn) for a, b in groups]


def _modules(first: int, last: int) -> str:
    return f"module {first}" if first == last else f"modules {first}-{last}"


def _module_cost(module) -> float:
    return float(sum(int(p.size) for p in module.net.params.values()))


class Pipeline:
    """The modules (and synthesizers, input models) of ``trainer`` in ``workers`` Ray workers.

    ``trainer``: a :class:`~minidni.dni.feedforward.FeedForwardTrainer` with
    method ``bprop`` (locked pipeline), ``dni`` or ``cdni`` (decoupled), on
    NumPy, ``p_update`` 1. Its modules are copied into the workers; the
    trainer itself is not changed. ``groups``: explicit ``[(start, stop)]``
    cut (default :func:`balanced_groups` by parameter count). ``window``:
    minibatches in flight (default ``workers + 1``). ``cpus_per_worker``: the
    Ray CPU resource each worker reserves; ``blas_threads``: its BLAS threads.
    ``backend``: ``"numpy"``, or ``"cupy"`` (one GPU per worker). ``timeout``:
    seconds any wait may last without progress before :class:`PipelineStalled`
    (default: no limit). ``fail_at``: ``(group, step)``, a
    test hook that kills that worker when the step reaches it. ``actors``:
    ``workers`` idle actors from :func:`spawn_workers` to use instead of
    starting new ones (they are then not stopped by :meth:`shutdown`).
    ``data``: the training set ``(x (N, ...), y (N,))``, host arrays or object-store references of
    them, given to every worker once; :meth:`submit` then takes ``rows=`` instead of ``x, y``.
    ``steps_per_call``: decoupled minibatches per worker call, or ``"auto"``
    (the default: chosen after the 8th step, see "Calls" above; the choice is in
    ``steps_per_call_choice``); 1 in lock-step and in the locked pipeline.
    ``window`` then defaults to ``(workers + 1) * steps_per_call`` and must be
    at least ``steps_per_call`` (with ``"auto"`` the choice is capped at it).
    """

    def __init__(self, trainer, *, workers: int, groups: Sequence[tuple[int, int]] | None = None,
                 window: int | None = None, lockstep: bool = False, cpus_per_worker: float = 1.0,
                 blas_threads: int = 1, backend: str = "numpy", timeout: float | None = None,
                 fail_at: tuple[int, int] | None = None, actors: Sequence | None = None,
                 steps_per_call: int | str = STEPS_PER_CALL, data: tuple | None = None):
        ray = require_ray()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised: call minidni.distributed.init_ray() first")
        if trainer.method not in MODES:
            raise ValueError(f"a pipeline trains with {', '.join(MODES)}, got method {trainer.method!r}")
        if any(p != 1.0 for p in trainer.p_update):
            raise ValueError(f"p_update must be 1 for every module in a pipeline, got {trainer.p_update}")
        self._check_numpy(trainer)
        if data is not None and not any(isinstance(v, ray.ObjectRef) for v in data) and len(data[0]) != len(data[1]):
            raise ValueError(f"data: x has {len(data[0])} rows but y has {len(data[1])}")
        n = len(trainer.modules)
        self.groups = [tuple(g) for g in groups] if groups else balanced_groups(
            [_module_cost(m) for m in trainer.modules], workers)
        if len(self.groups) != workers or self.groups[0][0] != 0 or self.groups[-1][1] != n or any(
                a >= b or b != c for (a, b), (c, _) in zip(self.groups, self.groups[1:] + [(n, n)])):
            raise ValueError(f"groups must cut modules 0..{n - 1} into {workers} consecutive non-empty runs, "
                             f"got {self.groups}")
        self.method, self.mode = trainer.method, MODES[trainer.method]
        self.lockstep = bool(lockstep)
        auto = steps_per_call == "auto"
        if not auto and (isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int)
                         or steps_per_call < 1):
            raise ValueError(f"steps_per_call must be 'auto' or a whole number >= 1, got {steps_per_call!r}")
        one_per_call = self.lockstep or self.mode == "locked"
        self._auto = auto and not one_per_call  # until the probe steps have been timed
        self.steps_per_call = 1 if one_per_call or auto else steps_per_call
        self.steps_per_call_choice = None  # auto: how steps_per_call was chosen
        self._window_given = window
        self.window = 1 if self.lockstep else int(window or (workers + 1) * self.steps_per_call)
        if self.window < self.steps_per_call:
            raise ValueError(f"window must hold at least steps_per_call = {self.steps_per_call} minibatches "
                             f"in flight, got {window}")
        self._retired, self._probe = 0, []  # auto: steps retired so far; the probe steps' slowest-worker seconds
        self.unlock = trainer.input_models is not None
        self.backend, self.timeout = backend, timeout
        self._in_flight: deque = deque()  # per call round: (steps, info refs, tensor refs)
        self._waiting: list = []  # (step, x, y, rows) of the decoupled call round being gathered
        self._eval_input = None
        self._owned = actors is None
        self.actors = list(actors) if actors is not None else spawn_workers(
            workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=1.0 if backend == "cupy" else 0.0,
            blas_threads=blas_threads)
        if len(self.actors) != workers:
            raise ValueError(f"got {len(self.actors)} worker actors for {workers} workers")
        self._mail: list[list] = [[] for _ in range(workers)]  # per worker: (kind, steps, ref) not yet handed over
        refs = []
        for g, stage in enumerate(make_stages(trainer, self.groups)):
            fail_step = fail_at[1] if fail_at is not None and fail_at[0] == g else None
            refs.append(self.actors[g].setup.remote(pack(stage), g, fail_at_step=fail_step, backend_name=backend))
        try:
            ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            for ref in refs:  # collect every worker's error, or Ray logs the others later as unhandled
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError:
                    pass
            if isinstance(exc.cause, BackendError):  # e.g. no CuPy on a worker's node: one line, not a traceback
                self.shutdown()
                raise BackendError(f"a pipeline worker cannot use backend {backend!r}: {exc.cause}") from None
            raise
        self.placement = ray.get([a.where.remote() for a in self.actors])
        self._data_rows = None if data is None else self._hold_data(*data)  # rows in the held data, when given

    def _hold_data(self, x, y) -> int:
        """Give every worker the training set (put in the object store unless already a reference); its size."""
        ray = require_ray()
        x_ref, y_ref = (v if isinstance(v, ray.ObjectRef) else ray.put(v) for v in (x, y))
        return int(ray.get([a.hold_data.remote(x_ref, y_ref) for a in self.actors])[0])

    @staticmethod
    def _check_numpy(trainer) -> None:
        for m in trainer.modules:
            for k, p in m.net.params.items():
                if not isinstance(p, np.ndarray):
                    raise ValueError(f"a pipeline takes a trainer on the host (its workers move it to their "
                                     f"backend); param {k!r} is a {type(p).__module__} array")

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the workers this pipeline started (what was not drained and checkpointed is lost)."""
        ray = require_ray()
        for actor in self.actors if self._owned else []:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def describe(self) -> list[str]:
        """One line per worker: its group, modules, Ray node, IP address, process id (and GPU)."""
        return [f"group {p['group']} ({_modules(*p['modules'])}): node {p['node_id'][:12]} "
                f"ip {p['ip']} pid {p['pid']}" + (f" gpu {','.join(p['gpu_ids'])}" if p["gpu_ids"] else "")
                for p in self.placement]

    # ------------------------------------------------------------------ training
    def submit(self, step: int, x=None, y=None, *, rows=None) -> list[dict]:
        """Put one minibatch in the pipeline (x (N, ...), y (N,) host arrays, or ``rows`` (N,), its indices in
        the pipeline's ``data``); returns the steps it finished.

        Each finished step is ``{"step", "loss", "sg_loss": {i: ..}, "input_loss": {i: ..}}``
        (host floats; the regression losses are each synthesizer's latest). Decoupled, the
        minibatches go to the workers ``steps_per_call`` at a time (:meth:`drain` sends the rest).
        """
        given = [name for name, v in (("x", x), ("y", y), ("rows", rows)) if v is not None]
        if given != (["rows"] if self._data_rows is not None else ["x", "y"]):
            raise ValueError(f"submit takes x and y, or rows= when the pipeline was given data=; got "
                             f"{', '.join(given) or 'nothing'} with data "
                             + ("given" if self._data_rows is not None else "not given"))
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or rows.dtype.kind not in "iu" or not rows.size or rows.min() < 0 \
                    or rows.max() >= self._data_rows:
                raise ValueError(f"rows must be a non-empty 1-D array of indices 0..{self._data_rows - 1}, "
                                 f"got shape {rows.shape} dtype {rows.dtype}")
        self._waiting.append((step, x, y, rows))
        if self.mode == "locked" or len(self._waiting) == self.steps_per_call:
            self._send_waiting()
        done = []  # room for the next call's minibatches: at most `window` in flight when it goes in
        while sum(len(steps) for steps, _, _ in self._in_flight) > self.window - self.steps_per_call:
            done += self._retire()
        return done

    def _send_waiting(self) -> None:
        """Submit the gathered minibatches: one call per worker (decoupled), or one step's calls (locked)."""
        ray = require_ray()
        steps, xs, ys, rows = (list(column) for column in zip(*self._waiting))
        self._waiting = []
        infos, tensors = [], []  # the driver reads only the infos; tensors go from worker to worker
        self._in_flight.append((steps, infos, tensors))
        held = self._data_rows is not None  # then the workers take the batches from their data by rows
        if self.mode == "decoupled":
            x_ref, y_ref, rows = (None, None, rows) if held else (ray.put(xs), ray.put(ys), None)
            h = x_ref
            for g, actor in enumerate(self.actors):
                args = (steps, None, x_ref, y_ref, rows) if self.unlock else (steps, h, None, y_ref, rows)
                out, down, info = actor.dni_steps.options(num_returns=3).remote(*args, *self._take_mail(g))
                infos.append(info)
                tensors += [out, down]
                h = out
                if g > 0:  # the gradients at this worker's input: targets of the top synthesizer below
                    self._mail[g - 1].append(("sg", steps, down))
                if self.unlock and g + 1 < len(self.actors):  # its outputs: targets of the input model above
                    self._mail[g + 1].append(("input", steps, out))
                if self.lockstep:  # one worker at a time: the single-process order of operations
                    self._get(steps[0], infos)
        else:
            (step,) = steps
            h, y_ref, row = (None, None, rows[0]) if held else (ray.put(xs[0]), ray.put(ys[0]), None)
            for actor in self.actors:  # the top worker also runs its backward at once
                h, info = actor.bprop_forward.options(num_returns=2).remote(step, h, y_ref, row)
                infos.append(info)
                tensors.append(h)
            for actor in self.actors[-2::-1]:  # every lower worker waits for the gradient from above
                h, info = actor.bprop_backward.options(num_returns=2).remote(step, h)
                infos.append(info)
                tensors.append(h)

    def _take_mail(self, g: int, *, everything: bool = False) -> tuple:
        """``(kinds, *refs)``: the arguments of a call to worker ``g`` that hand it its messages. Only those
        that are ready (a worker must never wait for another), unless in lock-step or ``everything`` is
        asked for (then every step they come from has returned, so they are ready or about to be)."""
        mail = self._mail[g]
        if not mail:
            return ([],)
        if self.lockstep or everything:
            ready, self._mail[g] = mail, []
        else:
            done, _ = require_ray().wait([ref for _, _, ref in mail], num_returns=len(mail), timeout=0)
            done = set(done)
            ready, self._mail[g] = [m for m in mail if m[2] in done], [m for m in mail if m[2] not in done]
        return ([(kind, steps) for kind, steps, _ in ready], *(ref for _, _, ref in ready))

    def drain(self) -> list[dict]:
        """Finish every step in flight and apply every message; returns the steps finished."""
        if self._waiting:
            self._send_waiting()
        done = [info for _ in range(len(self._in_flight)) for info in self._retire()]
        step = done[-1]["step"] if done else -1
        self._get(step, [a.deliver.remote(*self._take_mail(g, everything=True)) for g, a in enumerate(self.actors)])
        left = self._get(step, [a.in_flight.remote() for a in self.actors])
        if any(left):
            raise RuntimeError(f"messages still in flight after a drain: {left} per worker")
        return done

    def _retire(self) -> list[dict]:
        """Wait for the oldest call round; one merged info per step of it (every worker's, in step order)."""
        steps, refs, _ = self._in_flight.popleft()
        per_worker = [part if isinstance(part, list) else [part] for part in self._get(steps[0], refs)]
        merged = []
        for k, step in enumerate(steps):
            one = {"step": step, "sg_loss": {}, "input_loss": {}}
            for g, infos in enumerate(per_worker):
                info = infos[k]
                one.update({key: v for key, v in info.items() if key not in ("sg_loss", "input_loss", "seconds")})
                one["sg_loss"].update(info.get("sg_loss", {}))
                one["input_loss"].update(info.get("input_loss", {}))
                if "seconds" in info:  # decoupled: each worker's computing time for this step
                    one.setdefault("seconds", {})[g] = info["seconds"]
            merged.append(one)
            self._retired += 1
            if self._auto and self._retired > AUTO_PROBE[0]:
                self._probe.append(max(one["seconds"].values()))
                if self._retired == AUTO_PROBE[1]:
                    self._choose_steps_per_call()
        return merged

    def _choose_steps_per_call(self) -> None:
        """auto: enough minibatches per call for :data:`CALL_SECONDS` of the slowest worker's computation."""
        step_seconds = float(np.median(self._probe))
        chosen = min(MAX_STEPS_PER_CALL, max(1, math.ceil(CALL_SECONDS / max(step_seconds, 1e-9))))
        if self._window_given is not None:
            chosen = min(chosen, self.window)
        else:
            self.window = (len(self.actors) + 1) * chosen
        self.steps_per_call, self._auto = chosen, False
        self.steps_per_call_choice = {"rule": f"auto: ceil({CALL_SECONDS:g} s / slowest worker's median step "
                                              f"seconds), 1 to {MAX_STEPS_PER_CALL}",
                                      "probe_steps": len(self._probe), "median_step_seconds": step_seconds,
                                      "steps_per_call": chosen}

    def _wait(self, refs) -> None:
        """Wait until every ref is ready; :class:`PipelineStalled` if none becomes ready for ``timeout`` s."""
        ray = require_ray()
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=self.timeout)
            if not ready and pending:
                raise PipelineStalled(f"the pipeline made no progress for {self.timeout:g} s ({len(pending)} "
                                      "results or messages outstanding); stopped rather than wait forever")

    def _get(self, step: int, refs):
        """``ray.get(refs)`` (a ref or a list) within ``timeout``, turning a dead worker into :class:`WorkerDied`."""
        ray = require_ray()
        try:
            if self.timeout is not None:
                self._wait(refs if isinstance(refs, list) else [refs])
            return ray.get(refs)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError) as exc:
            dead = self._dead_workers()
            if not dead:
                raise
            self._discard_in_flight()
            g = dead[0]
            a, b = self.groups[g]
            cause = type(exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc).__name__
            raise WorkerDied(f"the worker of group {g} ({_modules(a, b - 1)}, pid {self.placement[g]['pid']}) died; "
                             f"the run stopped at step {step} ({cause})", group=g, step=step) from None

    def _discard_in_flight(self) -> None:
        """Collect every result still in flight, errors included (so Ray does not report them as unhandled)."""
        ray = require_ray()
        for _, infos, tensors in self._in_flight:
            for ref in infos + tensors:
                try:
                    ray.get(ref, timeout=30)
                except Exception:  # noqa: BLE001  (these steps are lost whatever the error)
                    pass
        self._in_flight.clear()
        self._waiting = []
        self._mail = [[] for _ in self.actors]

    def _dead_workers(self) -> list[int]:
        ray = require_ray()
        dead = []
        for g, actor in enumerate(self.actors):
            try:
                ray.get(actor.ping.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                dead.append(g)
        return dead

    def set_lr(self, lr: float, sg_lr: float) -> None:
        """New learning rates for the modules and for the synthesizers/input models, from the next step on
        (the messages that are ready are applied first, at the old rates)."""
        for g, actor in enumerate(self.actors):
            actor.deliver.remote(*self._take_mail(g))
            actor.set_lr.remote(lr, sg_lr)

    # ------------------------------------------------------------------ evaluation and state
    def predict_logits(self, x, *, batch_size: int = 1000):
        """Inference logits (N, K) of the real chain for ``x`` (N, ...) after a drain (host array)."""
        ray = require_ray()
        self.drain()
        if self._eval_input is None or self._eval_input[0] is not x:
            self._eval_input = (x, ray.put(x))
        h = self._eval_input[1]
        for actor in self.actors:
            h = actor.infer.remote(h, batch_size)
        return self._get(-1, h)

    def error_percent(self, x, y, *, batch_size: int = 1000) -> float:
        """Test error in percent of the current parameters (drains the pipeline first)."""
        logits = self.predict_logits(x, batch_size=batch_size)
        return 100.0 * float((logits.argmax(axis=1) != np.asarray(y)).mean())

    def state_dict(self) -> dict:
        """The whole network's state (keys of :mod:`minidni.distributed.state`), after a drain."""
        self.drain()
        state = {}
        for part in self._get(-1, [a.state_dict.remote() for a in self.actors]):
            state.update(part)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load a checkpoint written from :meth:`state_dict` (each worker gets its own entries)."""
        self.drain()
        refs = []
        for (a, b), actor in zip(self.groups, self.actors):
            prefixes = [f"{p}{i}." for i in range(a, b) for p in ("m", "s", "in")]
            refs.append(actor.load_state_dict.remote(subset(state, prefixes)))
        self._get(-1, refs)

    def report(self, since: float = 0.0) -> list[dict]:
        """Per worker: placement, update count, timing (calls from ``since`` on) and staleness summaries."""
        parts = self._get(-1, [a.report.remote(since) for a in self.actors])
        return [{**part, "placement": place} for part, place in zip(parts, self.placement)]

    def calls(self, since: float = 0.0) -> list[list]:
        """Per worker, the raw call log ``(kind, step, start, end)`` from ``since`` on."""
        return self._get(-1, [a.calls.remote(since) for a in self.actors])
