"""``python -m minidni.bench parallel``: what running the modules in parallel Ray workers buys, measured.

The network: an MNIST FCN of ``--layers`` hidden layers of ``--width`` units
(BN, ReLU), cut into ``--modules`` consecutive modules (default: the largest
worker count), balanced by FLOPs with the synthesizer's cost counted in the
module below it. ``--method`` (cdni, the paper's linear SG conditioned on the
label, or dni) puts a synthesizer on the output of every module below the top
one: with one module per worker, a DNI sits exactly at each worker boundary.
Every configuration starts from the same initial weights and sees the same
minibatches (:func:`minidni.distributed.batches.batch_indices`):

- ``single``: one process (this one; its BLAS threads are whatever
  ``OPENBLAS_NUM_THREADS`` says, recorded), bprop and ``--method``;
- ``locked``: bprop on a pipeline of K workers (forward up, backward down:
  each worker waits for every worker above before it updates);
- ``decoupled``: ``--method`` on a pipeline of K workers (each worker updates
  with its synthetic gradient and moves on; the SG's targets arrive later),
  ``--steps-per-call`` minibatches per Ray call (default auto: enough for
  60 ms of work per call; the locked pipeline cannot batch its calls),

for K in ``--workers`` (default 1, 2 and ``os.cpu_count()``, duplicates
dropped). Every worker is a process with one BLAS thread.

INTERLEAVED: each of ``--rounds`` rounds trains every configuration for
``--steps`` steps in turn (order rotated each round), so load changes on a
shared machine hit all alike, then evaluates each on ``--test-examples`` test
images (not timed). The first round (worker warm-up) is left out of the
throughput, which is examples per second of training time, a pipeline's time
including the drain that ends each round. Reported:

- examples/s per configuration, and per round the ratio decoupled / locked at
  the same K (median over rounds, min and max);
- the same, STEADY: examples/s from the return of a round's first step to
  the end of the round (its drain). A round starts with an empty pipeline,
  so its first step takes the time of every worker in turn, and each later
  step about the slowest worker's: steady counts the steps after the first
  over the time after it, the rate of a run that drains only to evaluate
  (``--eval-every``, 1000 steps by default). For one process it is the plain throughput without the
  first step. Both figures are reported;
- test error against training wall-clock time; the error every configuration
  had reached at the same wall-clock time (the fastest configuration's total,
  each curve interpolated linearly in time), and at the same steps (the end);
- staleness: for each synthesizer at a worker boundary, how many updates its
  worker had made between a prediction and the arrival of that prediction's
  regression target (0 = as in one process), and its effect: decoupled vs
  single-process ``--method`` (the lock-step order) at equal steps;
- a width sweep (``--widths``): examples/s of single bprop, locked and
  decoupled at the largest K for each width, to see where communication stops
  eating the gain (``--sweep-rounds`` x ``--sweep-steps``, no evaluation). A
  round ends with a drain (every minibatch in flight finished), which leaves
  one worker idle while the other finishes; at 4 minibatches per call that
  is up to 12 minibatches, so rounds of 48 steps, not fewer.

Writes ``--out`` (default figures/bench_parallel.json) and the figure beside it
(same name, .png), atomically, with the load average, CPU count and versions.
Take figures you report on an otherwise idle machine: a 2-worker speed-up
cannot be seen when other jobs use the cores (the JSON records the load).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from minidni import models
from minidni.cli import (TrainingDiverged, UsageError, command_main, int_range, make_parser, output_path,
                         positive_float, positive_int, positive_int_or_auto, prepare_out_file, seed_int)
from minidni.distributed.batches import batch_indices
from minidni.distributed.pipeline import (STEPS_PER_CALL, Pipeline, balanced_groups, init_ray, require_ray,
                                          spawn_workers)
from minidni.dni.feedforward import build_trainer, error_percent, raise_if_diverged
from minidni.io import save_figure, write_json
from minidni.layers import Linear, Sequential

PROG = "python -m minidni.bench parallel"
STEADY = "steady_examples_per_second"  # per round: without the pipeline's fill (see the module docstring)
IN_DIM = 784


# ---------------------------------------------------------------------- model
def layer_costs(layers: int, width: int) -> list[float]:
    """FLOPs / (6 N) of each hidden layer's forward + backward (its Linear, plus the output Linear on the last)."""
    costs = [float(IN_DIM * width)] + [float(width * width)] * (layers - 1)
    costs[-1] += width * 10
    return costs


def module_cut(costs: list[float], modules: int, sg_cost: float) -> list[tuple[int, int]]:
    """Cut the layers into ``modules`` consecutive groups minimising the largest group cost, where
    every group but the top one also pays ``sg_cost`` (its synthesizer's prediction and regression)."""
    n = len(costs)
    if not 1 <= modules <= n:
        raise UsageError(f"--modules {modules} must be between 1 and --layers {n}")
    return balanced_groups(costs, modules, cut_costs=[sg_cost] * (n - 1))


def sg_cost(method: str, width: int) -> float:
    """FLOPs / (6 N) of one synthesizer on a ``width`` boundary: its forward (2NDM per Linear), and a
    regression backward without the input gradient on its first Linear (2NDM) and with it on the others (4NDM)."""
    trainer = build_trainer(models.fcn(2, in_dim=4, width=width, rng=np.random.default_rng(0)), method=method,
                            in_shape=(4,), lr=1e-3, rng=np.random.default_rng(0))
    linears = [layer for layer in trainer.synthesizers[0].net.layers if isinstance(layer, Linear)]
    return sum(l.in_dim * l.out_dim * (4 if i == 0 else 6) / 6 for i, l in enumerate(linears))


def make_trainer(method: str, args: argparse.Namespace, width: int, cut: list[tuple[int, int]]):
    """The FCN with the layers of each ``cut`` group in one module; same init for every call with the same seed."""
    rng = np.random.default_rng(args.seed)
    nets = models.fcn(args.layers, width=width, rng=rng)
    merged = [Sequential([layer for net in nets[a:b] for layer in net.layers]) for a, b in cut]
    return build_trainer(merged, method=method, in_shape=(IN_DIM,), lr=args.lr, sg_lr=args.sg_lr,
                         sg_hidden=args.sg_hidden, sg_width=width, rng=np.random.default_rng(args.seed + 1),
                         seed=args.seed)


# ---------------------------------------------------------------------- configurations
class Config:
    """One way of training: ``kind`` single / locked / decoupled, ``workers`` (0 for single), and its state."""

    def __init__(self, kind: str, method: str, workers: int, trainer, pipe: Pipeline | None, batch: int):
        self.kind, self.method, self.workers, self.trainer, self.pipe = kind, method, workers, trainer, pipe
        self.batch = batch
        self.name = f"single {method}" if kind == "single" else f"{kind} {method} K={workers}"
        self.step, self.train_seconds = 0, 0.0
        self.rounds: list[dict] = []  # per round: steps, seconds, examples/s
        self.curve: list[dict] = []   # per evaluation: step, train_seconds, test_error_percent

    def train(self, steps: int, data, seed: int, order: dict) -> None:
        x_train, y_train = data
        batch = self.batch
        wall0, t0 = time.time(), time.perf_counter()
        done, result = [], None
        first = None  # (time, steps finished then): when the round's first step came back
        for _ in range(steps):
            self.step += 1
            idx = batch_indices(self.step, n=x_train.shape[0], batch=batch, seed=seed, cache=order)
            if self.pipe is None:
                with np.errstate(over="ignore", invalid="ignore"):  # a diverged round is reported below
                    result = self.trainer.step(x_train[idx], y_train[idx])
            else:
                done += self.pipe.submit(self.step, rows=idx)  # the workers hold the training set
            if first is None and (self.pipe is None or done):
                first = (time.perf_counter(), len(done) if self.pipe is not None else 1)
        if self.pipe is not None:
            done += self.pipe.drain()
        seconds = time.perf_counter() - t0
        self._check_finite(done, result)
        self.train_seconds += seconds
        row = {"steps": steps, "seconds": seconds, "examples_per_second": steps * batch / seconds,
               "load_average_1min": os.getloadavg()[0]}
        # from the first step's return on, without the pipeline's fill (None: nothing came back before the drain)
        row[STEADY] = ((steps - first[1]) * batch / (t0 + seconds - first[0])
                       if first is not None and first[1] < steps else None)
        if self.pipe is not None:  # how much of the round each worker computed (the rest: waiting, messages)
            row["worker_busy_fraction"] = [sum(end - start for _, _, start, end in calls) / seconds
                                           for calls in self.pipe.calls(wall0)]
        self.rounds.append(row)

    def _check_finite(self, done: list[dict], result) -> None:
        """TrainingDiverged naming this configuration if a loss of the round is NaN/inf (no figure from such a run)."""
        hosts = [(d["step"], d) for d in done] if result is None else [(self.step, result.to_host())]
        try:
            for step, host in hosts:
                raise_if_diverged({"loss": host["loss"], "sg_loss": host["sg_loss"],
                                   "input_loss": host["input_loss"]}, step)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{self.name}: {exc}; nothing was written") from None

    def evaluate(self, x_test, y_test) -> float:
        if self.pipe is None:
            err = error_percent(self.trainer.modules, x_test, y_test)
        else:
            err = self.pipe.error_percent(x_test, y_test)
        self.curve.append({"step": self.step, "train_seconds": self.train_seconds, "test_error_percent": err})
        return err


def make_configs(args, width: int, cut, ks: list[int], actors: list, data_refs: tuple) -> list[Config]:
    """single bprop and --method, then locked and decoupled for each K (pipelines on slices of ``actors``,
    holding the training set of ``data_refs``, its object-store references)."""
    configs = [Config("single", m, 0, make_trainer(m, args, width, cut), None, args.batch)
               for m in ("bprop", args.method)]
    used = 0
    for k in ks:
        for kind, method in (("locked", "bprop"), ("decoupled", args.method)):
            trainer = make_trainer(method, args, width, cut)
            pipe = Pipeline(trainer, workers=k, actors=actors[used:used + k],  # modules balanced by parameters
                            steps_per_call=args.steps_per_call, data=data_refs)
            used += k
            configs.append(Config(kind, method, k, trainer, pipe, args.batch))
    return configs


def interleave(configs: list[Config], rounds: int, steps: int, data, args, *, test=None, log=print) -> None:
    """``rounds`` rounds of ``steps`` steps per configuration, rotated; evaluate after each round if ``test``."""
    order: dict = {}
    if test is not None:
        for c in configs:
            c.evaluate(*test)
    for r in range(rounds):
        turn = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in turn:
            c.train(steps, data, args.seed, order)
            if test is not None:
                c.evaluate(*test)
        log(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{c.name} {c.rounds[-1]['examples_per_second']:.0f} ex/s"
            + (f" {c.curve[-1]['test_error_percent']:.1f} %" if test is not None else "") for c in configs))


def throughput(c: Config) -> float:
    """Examples/s over every round but the first (warm-up)."""
    rounds = c.rounds[1:]
    return sum(r["steps"] for r in rounds) * c.batch / sum(r["seconds"] for r in rounds)


def steady_throughput(c: Config) -> float | None:
    """Median over every round but the first of the round's steady examples/s (see the module docstring);
    None if no round had one (rounds no longer than the pipeline's window)."""
    values = [r[STEADY] for r in c.rounds[1:] if r[STEADY] is not None]
    return statistics.median(values) if values else None


def round_ratios(a: Config, b: Config, key: str = "examples_per_second") -> list[float]:
    """Per-round ratio a / b of ``key`` (the first round, a warm-up, left out; so are rounds without it)."""
    pairs = list(zip(a.rounds, b.rounds))[1:]
    return [ra[key] / rb[key] for ra, rb in pairs if ra[key] is not None and rb[key] is not None]


def summary_of(ratios: list[float]) -> dict | None:
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def error_at(c: Config, seconds: float) -> float:
    """Test error at ``seconds`` of training, linear in time between evaluations."""
    t = [p["train_seconds"] for p in c.curve]
    return float(np.interp(seconds, t, [p["test_error_percent"] for p in c.curve]))


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    cpus = os.cpu_count() or 1
    p = make_parser(PROG, "Examples/s and test error vs wall-clock time: one process, locked (bprop) and decoupled "
                          "(DNI) pipelines of Ray workers, side by side; and a width sweep.")
    p.add_argument("--method", choices=("dni", "cdni"), default="cdni", help="the decoupled pipeline's method")
    p.add_argument("--layers", type=positive_int, default=8, help="hidden layers of the FCN")
    p.add_argument("--width", type=positive_int, default=1024, help="units per hidden layer")
    p.add_argument("--modules", type=positive_int, default=None,
                   help="modules (one synthesizer between two; default: the largest of --workers)")
    p.add_argument("--workers", type=positive_int, nargs="+", default=sorted({1, 2, cpus}),
                   help="pipeline sizes K to measure")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate of the modules")
    p.add_argument("--sg-lr", type=positive_float, default=None, help="synthesizers' Adam lr (default: --lr)")
    p.add_argument("--sg-hidden", type=int_range(0, 2), default=None,
                   help="synthesizer hidden layers (default: 2 for dni, 0 for cdni); their width is --width")
    p.add_argument("--steps-per-call", type=positive_int_or_auto, default=STEPS_PER_CALL,
                   help="decoupled minibatches per Ray call to a worker, or auto (see minidni.distributed.pipeline; "
                        "the locked pipeline makes one call per minibatch)")
    p.add_argument("--rounds", type=positive_int, default=8,
                   help="interleaved rounds, 2 or more (the first is a warm-up, left out of the figures)")
    p.add_argument("--steps", type=positive_int, default=25, help="steps per configuration per round")
    p.add_argument("--test-examples", type=positive_int, default=2000, help="test images per evaluation")
    p.add_argument("--widths", type=positive_int, nargs="*", default=[64, 256, 1024, 2048],
                   help="width sweep (none: skip it)")
    p.add_argument("--sweep-rounds", type=positive_int, default=3,
                   help="interleaved rounds per sweep width, 2 or more (the first is a warm-up)")
    p.add_argument("--sweep-steps", type=positive_int, default=48, help="steps per configuration per sweep round")
    p.add_argument("--synthetic", action="store_true",
                   help="random MNIST-shaped data instead of MNIST (timing only: the test error means nothing)")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder (default $MINIDNI_DATA or the cache)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting a local one")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", type=output_path, default=Path("figures/bench_parallel.json"),
                   help="JSON output file; the figure goes beside it (.png)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    argv = list(sys.argv[1:] if argv is None else argv)
    def body(args: argparse.Namespace) -> int:
        prepare_out_file(args.out)
        return _run(args, " ".join([PROG, *argv]))

    return command_main(PROG, p, argv, body)


def _data(args) -> tuple:
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n = max(4 * args.batch, args.test_examples)
        return (rng.random((n, IN_DIM), dtype=np.float32), rng.integers(0, 10, n),
                rng.random((args.test_examples, IN_DIM), dtype=np.float32), rng.integers(0, 10, args.test_examples))
    from minidni.experiments.feedforward import load_dataset  # noqa: PLC0415

    d = load_dataset("mnist", args.data_dir)
    return (np.asarray(d.x_train, np.float32).reshape(-1, IN_DIM), np.asarray(d.y_train, np.int64),
            np.asarray(d.x_test, np.float32).reshape(-1, IN_DIM)[:args.test_examples],
            np.asarray(d.y_test, np.int64)[:args.test_examples])


def _environment(command: str) -> dict:
    ray = require_ray()
    return {"cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
            "python": platform.python_version(), "numpy": np.__version__, "ray": ray.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "driver_blas_threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                    "MKL_NUM_THREADS")},
            "command": command}


def _run(args, command: str) -> int:
    for option, value in (("--rounds", args.rounds), ("--sweep-rounds", args.sweep_rounds)):
        if value < 2:
            raise UsageError(f"{option} {value}: the first round is a warm-up left out of the figures, so one "
                             "round measures nothing (accepted: 2 or more)")
    require_ray()
    ks = sorted(set(args.workers))
    modules = args.modules or ks[-1]
    if modules > args.layers:
        raise UsageError(f"--modules {modules} is more than --layers {args.layers} (accepted: 1 to {args.layers}; "
                         "the default is the largest of --workers)")
    if ks[-1] > modules:
        raise UsageError(f"--workers {ks[-1]} is more than the {modules} modules (--modules) to share out "
                         f"(accepted: 1 to {modules})")
    log = (lambda *a: None) if args.quiet else (lambda msg: print(f"{PROG}: {msg}", flush=True))  # noqa: E731
    env = _environment(command)
    x_train, y_train, x_test, y_test = _data(args)
    started = init_ray(args.ray_address)
    try:
        actors = spawn_workers(2 * sum(ks), cpus_per_worker=_share(2 * sum(ks)))
        refs = tuple(require_ray().put(a) for a in (x_train, y_train))  # one copy for every pipeline's workers
        result = _main_phase(args, ks, modules, actors, (x_train, y_train), refs, (x_test, y_test), log)
        result["width_sweep"] = _sweep(args, ks[-1], modules, actors, (x_train, y_train), refs, log)
        for actor in actors:
            require_ray().kill(actor)
    finally:
        if started:
            require_ray().shutdown()
    env["load_average_at_end"] = list(os.getloadavg())
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out = {"benchmark": "parallel", "options": options, "environment": env, **result}
    write_json(args.out, out)
    png = args.out.with_suffix(".png")
    _plot(out, png)
    _print_table(out, log)
    log(f"wrote {args.out} and {png}")
    return 0


def _share(count: int) -> float:
    """Ray CPUs per worker so that ``count`` actors fit: the pipelines take turns, never run together."""
    return min(1.0, require_ray().cluster_resources().get("CPU", 1.0) / count)


def _main_phase(args, ks, modules, actors, train, train_refs, test, log) -> dict:
    costs = layer_costs(args.layers, args.width)
    sg = sg_cost(args.method, args.width)
    cut = module_cut(costs, modules, sg)
    configs = make_configs(args, args.width, cut, ks, actors, train_refs)
    for c in configs:
        if c.pipe is not None:
            for line in c.pipe.describe():
                log(f"{c.name}: {line}")
    interleave(configs, args.rounds, args.steps, train, args, test=test, log=log)
    by_name = {c.name: c for c in configs}
    t_equal = min(c.train_seconds for c in configs)
    rows = []
    for c in configs:
        locked = by_name.get(f"locked bprop K={c.workers}")
        busy = [r["worker_busy_fraction"] for r in c.rounds[1:] if "worker_busy_fraction" in r]
        row = {"name": c.name, "kind": c.kind, "method": c.method, "workers": c.workers,
               "worker_busy_fraction_mean": [float(np.mean(b)) for b in zip(*busy)] if busy else None,
               "examples_per_second": throughput(c), STEADY: steady_throughput(c),
               "train_seconds": c.train_seconds, "steps": c.step,
               "test_error_at_equal_time": error_at(c, t_equal),
               "test_error_at_equal_steps": c.curve[-1]["test_error_percent"],
               "rounds": c.rounds, "curve": c.curve}
        if c.kind == "decoupled" and locked is not None:
            row["ratio_to_locked_same_k"] = summary_of(round_ratios(c, locked))
            row["steady_ratio_to_locked_same_k"] = summary_of(round_ratios(c, locked, STEADY))
        row["ratio_to_single_bprop"] = summary_of(round_ratios(c, by_name["single bprop"]))
        if c.pipe is not None:
            report = c.pipe.report()
            row["groups"] = c.pipe.groups
            row["steps_per_call"], row["steps_per_call_choice"] = c.pipe.steps_per_call, c.pipe.steps_per_call_choice
            row["stages"] = [{"group": s["group"], "name": s["name"], "updates": s["updates"],
                              "staleness": s["staleness"], "placement": s["placement"]} for s in report]
            c.pipe.shutdown()
        rows.append(row)
    single = by_name[f"single {args.method}"]
    staleness_effect = [{"workers": c.workers, "steps": c.step,
                         "decoupled_error": c.curve[-1]["test_error_percent"],
                         "lockstep_order_error": single.curve[-1]["test_error_percent"],
                         "per_round": [{"step": a["step"], "decoupled": a["test_error_percent"],
                                        "lockstep_order": b["test_error_percent"]}
                                       for a, b in zip(c.curve, single.curve)]}
                        for c in configs if c.kind == "decoupled"]
    return {"model": {"layers": args.layers, "width": args.width, "modules": modules, "cut_layers": cut,
                      "layer_costs": costs, "synthesizer_cost": sg, "batch": args.batch,
                      "flops_per_step_bprop": 6 * args.batch * sum(costs),
                      "ideal_ratio_decoupled_to_locked_at_modules":
                          sum(costs) / max(sum(costs[a:b]) + (sg if j < len(cut) - 1 else 0.0)
                                           for j, (a, b) in enumerate(cut))},
            "equal_time_seconds": t_equal, "configs": rows, "staleness_effect": staleness_effect}


def _sweep(args, k, modules, actors, train, train_refs, log) -> list[dict]:
    out = []
    for width in args.widths:
        cut = module_cut(layer_costs(args.layers, width), modules, sg_cost(args.method, width))
        configs = make_configs(args, width, cut, [k], actors, train_refs)
        configs = [c for c in configs if c.kind != "single" or c.method == "bprop"]
        interleave(configs, args.sweep_rounds, args.sweep_steps, train, args,
                   log=lambda msg, w=width: log(f"width {w}: {msg}"))
        single, locked, dec = configs
        out.append({"width": width, "workers": k, "cut_layers": cut, "steps_per_call": dec.pipe.steps_per_call,
                    "examples_per_second": {c.name: throughput(c) for c in configs},
                    "ratio_decoupled_to_locked": summary_of(round_ratios(dec, locked)),
                    "steady_ratio_decoupled_to_locked": summary_of(round_ratios(dec, locked, STEADY)),
                    "ratio_decoupled_to_single_bprop": summary_of(round_ratios(dec, single)),
                    "ratio_locked_to_single_bprop": summary_of(round_ratios(locked, single))})
        for c in configs:
            if c.pipe is not None:
                c.pipe.shutdown()
    return out


def _print_table(out: dict, log) -> None:
    log(f"{'configuration':<26} {'ex/s':>8} {'vs locked':>10} {'steady':>7} {'vs 1-proc':>10} "
        f"{'err@' + format(out['equal_time_seconds'], '.0f') + 's':>9} {'err@end':>8} {'staleness':>10} busy")
    for r in out["configs"]:
        vs_locked = r.get("ratio_to_locked_same_k", {}).get("median")
        steady = (r.get("steady_ratio_to_locked_same_k") or {}).get("median")
        stale = [s["staleness"].get("sg", {}).get("mean") for s in r.get("stages", []) if s["staleness"].get("sg")]
        log(f"{r['name']:<26} {r['examples_per_second']:8.0f} {_fmt(vs_locked, 'x'):>10} {_fmt(steady, 'x'):>7} "
            f"{_fmt(r['ratio_to_single_bprop']['median'], 'x'):>10} {r['test_error_at_equal_time']:8.2f}% "
            f"{r['test_error_at_equal_steps']:7.2f}% {_fmt(stale[0] if stale else None, ''):>10} "
            f"{' '.join(f'{b:.2f}' for b in r['worker_busy_fraction_mean'] or [])}")
    for s in out["width_sweep"]:
        log(f"width {s['width']:>5}: decoupled/locked {s['ratio_decoupled_to_locked']['median']:.2f}x "
            f"(steady {_fmt((s['steady_ratio_decoupled_to_locked'] or {}).get('median'), 'x')}), "
            f"decoupled/single bprop {s['ratio_decoupled_to_single_bprop']['median']:.2f}x")


def _fmt(value, unit: str) -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _plot(out: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: PLC0415

    colours = {"single": "tab:gray", "locked": "tab:blue", "decoupled": "tab:orange"}
    m = out["model"]
    fig, (ax_bar, ax_err, ax_sweep) = plt.subplots(1, 3, figsize=(17, 4.8), layout="constrained")
    rows = out["configs"]
    xs = np.arange(len(rows))
    ax_bar.bar(xs, [r["examples_per_second"] for r in rows], color=[colours[r["kind"]] for r in rows])
    steadies = [np.nan if r[STEADY] is None else r[STEADY] for r in rows]
    steady = ax_bar.scatter(xs, steadies, marker="_", s=500, color="k", zorder=3)
    for x, r, level in zip(xs, rows, steadies):
        ratio = r.get("ratio_to_locked_same_k", {}).get("median")
        if ratio is not None:
            steady_ratio = _fmt((r["steady_ratio_to_locked_same_k"] or {}).get("median"), "x")
            ax_bar.annotate(f"{ratio:.2f}x locked\n(steady {steady_ratio})",
                            (x, np.nanmax([r["examples_per_second"], level])), ha="center", va="bottom", fontsize=8)
    ax_bar.set_xticks(xs, [r["name"].replace(" K=", "\nK=") for r in rows], rotation=30, ha="right", fontsize=8)
    ax_bar.set_ylabel("training throughput (examples / s)")
    ax_bar.set_title(f"FCN-{m['layers']} x {m['width']}, batch {m['batch']}, {m['modules']} modules")
    ax_bar.margins(y=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()] + [steady]
    ax_bar.legend(handles, ["one process", "locked pipeline (bprop)", "decoupled pipeline (DNI)",
                            "steady (a round without its fill)"], fontsize=8, loc="upper left")
    for r in rows:
        style = {"single": ":", "locked": "--", "decoupled": "-"}[r["kind"]]
        ax_err.plot([p["train_seconds"] for p in r["curve"]], [p["test_error_percent"] for p in r["curve"]],
                    style, marker=".", label=r["name"])
    ax_err.axvline(out["equal_time_seconds"], color="k", lw=0.8, alpha=0.5, label="equal-time comparison")
    ax_err.set_xlabel("training wall-clock time (s, evaluations excluded)")
    ax_err.set_ylabel("test error (%)")
    ax_err.set_yscale("log")
    ax_err.yaxis.set_major_formatter(ScalarFormatter())
    ax_err.yaxis.set_minor_formatter(NullFormatter())
    ax_err.set_title("test error against wall-clock time")
    ax_err.legend(fontsize=7)
    sweep = out["width_sweep"]
    if sweep:
        widths = [s["width"] for s in sweep]
        for key, label in (("ratio_decoupled_to_locked", "decoupled / locked"),
                           ("ratio_decoupled_to_single_bprop", "decoupled / one-process bprop"),
                           ("ratio_locked_to_single_bprop", "locked / one-process bprop")):
            med = [s[key]["median"] for s in sweep]
            err = [[md - s[key]["min"] for md, s in zip(med, sweep)], [s[key]["max"] - md for md, s in zip(med, sweep)]]
            ax_sweep.errorbar(widths, med, yerr=err, marker="o", capsize=3, label=label)
        ax_sweep.axhline(1.0, color="k", lw=0.8)
        ax_sweep.set_xscale("log", base=2)
        ax_sweep.set_xticks(widths, [str(w) for w in widths])
        ax_sweep.legend(fontsize=8)
    ax_sweep.set_xlabel("FCN width (units per layer)")
    ax_sweep.set_ylabel("throughput ratio (median over rounds; bars: min-max)")
    ax_sweep.set_title(f"width sweep, K={sweep[0]['workers'] if sweep else '-'} workers")
    ax_sweep.grid(True, alpha=0.3)
    ax_err.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Ray pipelines on {out['environment']['cpu_count']} CPUs "
                 f"(load average at start {out['environment']['load_average_at_start'][0]:.2f})")
    save_figure(fig, path)
    plt.close(fig)
