"""``python -m minidni.run mnist|cifar10 --workers K [--ray-address ADDR]``: training on a pipeline of Ray workers.

    python -m minidni.run mnist --model fcn --layers 4 --width 1024 --method cdni --workers 2 --steps 300
    python -m minidni.run mnist --method bprop --workers 2 --ray-address HEAD:6379

:func:`add_pipeline_args` adds the options to the mnist/cifar10 parser;
:func:`run_pipeline` replaces :func:`minidni.experiments.feedforward.run`'s
single-process loop when ``--workers`` is given. It builds the network as the
single-process command does (same seed, same initial weights of the layers),
cuts its layers into ``--workers`` consecutive groups, moves each group into
a Ray worker (:class:`~minidni.distributed.pipeline.Pipeline`: decoupled for
dni/cdni, locked for bprop), prints where each group runs, and trains.

Where the synthesizers are (``--interfaces``). ``cuts`` (the default): the
layers of each worker form ONE module, so the K-1 cuts between workers get the
decoupled interfaces (a synthesizer on the output of each worker below the
top, and with ``--unlock forward`` a synthetic-input model for each worker
above the bottom), and the layers inside a worker train by ordinary backprop
among themselves: every synthesizer buys parallelism. ``every-layer``: a
synthesizer after every layer, as in the single-process command (the paper's
setting), the layers shared out among the workers. The cut is chosen so that
the slowest worker is as fast as possible (parameter counts as the cost of a
layer, plus two thirds of a synthesizer's for the worker below a cut: its
prediction and its weight gradient). The startup line and ``summary.json``
(``distributed.interfaces``) say where the interfaces are.

Without ``--ray-address`` it starts a local Ray instance with one CPU per core
(``os.cpu_count()``); with one it joins that cluster, and fails in one line
naming the address when its head cannot be reached within ``--ray-timeout``
seconds. Only the driver reads the data (``--data-dir`` or $MINIDNI_DATA on
the driver's machine; minibatches reach the workers through Ray's object
store), but every node must have minidni (and the same Ray and Python)
installed: the workers import it. ``--backend cupy`` places each worker on
one GPU of the cluster (Ray's ``num_gpus``) and refuses in one line when the
cluster has fewer GPUs than workers.

Calls. A decoupled worker gets ``--steps-per-call`` minibatches per Ray call
and returns its synthesizer targets as one message per call: Ray's cost per
call (about a millisecond of CPU in each process involved) is then paid once
for all of them, at the price of targets that arrive about twice that many
updates late (``summary.json`` records the staleness). The default, ``auto``, times steps 4 to 8 and then
puts 60 ms of the slowest worker's work in a call (at most 4 minibatches;
``distributed.steps_per_call_choice``). The locked pipeline (bprop) and
``--lockstep`` make one call per minibatch.

Minibatches: step ``t`` (from 1) takes the batch of
:func:`~minidni.distributed.batches.batch_indices`, so a resumed run sees the
same batches as an uninterrupted one. (The single-process command shuffles
with its own stream.)

Checkpoints. Every ``--checkpoint-every`` steps the pipeline is drained and
``checkpoint.npz`` is written into ``--out``: ONE file holding every worker's
parameters, optimiser moments and synthesizer state together with the step
and the options (:func:`minidni.io.save_checkpoint`, atomic), so an
interruption leaves either the previous checkpoint or the new one, never a
mix; ``--resume`` continues from it. A worker that dies stops the run with one
line naming the group, the step and the last checkpoint.

Writes ``summary.json`` (as the single-process run, plus ``distributed``: the
groups, where each ran, where the interfaces are, per-worker busy/idle time
and lock waits, the staleness each synthesizer saw, examples per second) and
``learning_curve.png`` (test error against training seconds).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from minidni import backend
from minidni.cli import UsageError, positive_float, positive_int, positive_int_or_auto
from minidni.distributed.batches import batch_indices
from minidni.distributed.pipeline import (MODES, RAY_CONNECT_TIMEOUT, STEPS_PER_CALL, Pipeline, WorkerDied,
                                          balanced_groups, init_ray, require_ray)
from minidni.dni.feedforward import build_trainer, raise_if_diverged
from minidni.io import load_checkpoint, save_checkpoint, save_figure, write_json
from minidni.layers import Sequential
from minidni.optim import StepDecay

__all__ = ["add_pipeline_args", "check_before_loading", "run_pipeline", "trainer_at_cuts", "CHECKPOINT",
           "INTERFACES"]

CHECKPOINT = "checkpoint.npz"
INTERFACES = ("cuts", "every-layer")
CHECKPOINT_EVERY = 1000
# options that must not change between a checkpoint and its resumption
RESUME_KEYS = ("model", "layers", "width", "method", "sg_hidden", "sg_width", "sg_bn", "unlock", "batch", "seed",
               "interfaces")
# refused without --workers
PIPELINE_ONLY = ("interfaces", "ray_address", "ray_timeout", "window", "steps_per_call", "lockstep")
SG_COST_SHARE = 2 / 3  # a synthesizer's prediction + weight gradient, per parameter, against a layer's fwd + bwd


def _fail_at(text: str) -> tuple[int, int]:
    group, _, step = text.partition(":")
    try:
        return int(group), int(step)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not GROUP:STEP (two integers)") from None


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers`` and the pipeline's options (``--checkpoint-every`` and ``--resume`` are the
    single-process command's own, :func:`minidni.experiments.feedforward.make_parser`)."""
    g = parser.add_argument_group("parallel workers (Ray)")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="train on a pipeline of this many Ray workers, one group of consecutive layers each "
                        "(dni/cdni: decoupled; bprop: locked; default: one process, no Ray)")
    g.add_argument("--interfaces", choices=INTERFACES, default=None,
                   help="where the synthesizers sit with --workers: 'cuts' (between workers; the layers inside "
                        "a worker train by backprop) or 'every-layer' (after every layer) (default: cuts)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (HEAD:6379); by default a local Ray instance is started")
    g.add_argument("--ray-timeout", type=positive_float, default=None,
                   help=f"seconds to reach --ray-address before giving up (default: {RAY_CONNECT_TIMEOUT:g})")
    g.add_argument("--window", type=positive_int, default=None,
                   help="minibatches in flight in the pipeline (default: (workers + 1) x --steps-per-call)")
    g.add_argument("--steps-per-call", type=positive_int_or_auto, default=None,
                   help="decoupled minibatches per Ray call to a worker: fewer calls, later SG targets; 'auto' "
                        "picks enough for 60 ms of work per call after timing 5 steps (default: auto; 1 with "
                        "--lockstep and for the locked pipeline, bprop)")
    g.add_argument("--lockstep", action="store_true",
                   help="run the workers one at a time in the single-process order (deterministic, no parallelism; default: off)")
    g.add_argument("--inject-failure", type=_fail_at, default=None, help=argparse.SUPPRESS)  # test hook


def check_before_loading(args: argparse.Namespace) -> None:
    """The command line's checks before the data is read: pipeline options without ``--workers``,
    Ray missing (one line with the install command), options a pipeline cannot run."""
    if not args.workers:
        used = [f"--{k.replace('_', '-')}" for k in PIPELINE_ONLY if getattr(args, k)]
        if used:
            raise UsageError(f"{', '.join(used)} needs --workers K (training on a pipeline of Ray workers)")
        return
    require_ray()
    check_pipeline_options(args)


def check_pipeline_options(args: argparse.Namespace) -> None:
    """UsageError for options a pipeline cannot run (checked before Ray starts)."""
    if args.method not in MODES:
        raise UsageError(f"--workers runs --method {', '.join(MODES)}, got --method {args.method}")
    if args.workers > args.layers:
        raise UsageError(f"--workers {args.workers} is more than the {args.layers} layers (--layers) to share out "
                         f"(accepted: 1 to {args.layers})")
    if args.sg_target != "bootstrap":
        raise UsageError(f"--sg-target {args.sg_target} is not supported with --workers (for λ > 0 its mixture "
                         "locks every stage to the backward from the top; accepted: bootstrap)")
    if args.p_update != 1.0:
        raise UsageError(f"--p-update {args.p_update} is not supported with --workers (accepted: 1, every module "
                         "updates each step)")
    per_call = 1 if args.lockstep or args.method == "bprop" else (args.steps_per_call or STEPS_PER_CALL)
    if args.window is not None and per_call != "auto" and args.window < per_call:
        raise UsageError(f"--window {args.window} cannot hold one call of {per_call} minibatches "
                         f"(--steps-per-call); accepted: --window {per_call} or more")
    if args.method in ("dni", "cdni") and _interfaces(args) == "cuts" and args.workers < 2:
        raise UsageError(f"--method {args.method} --workers 1 has no cut for a synthesizer (accepted: --workers 2 "
                         "or more, or --interfaces every-layer)")


def _interfaces(args: argparse.Namespace) -> str | None:
    """Where the synthesizers are: None for bprop, else --interfaces (default: cuts)."""
    return None if args.method == "bprop" else (args.interfaces or INTERFACES[0])


def _param_count(net) -> float:
    return float(sum(int(p.size) for p in net.params.values()))


def trainer_at_cuts(nets, *, workers: int, make: Callable, cut_cost: Callable[[list], list[float]] | None = None):
    """``(trainer, layer_groups)``: the layers ``nets`` cut into ``workers`` groups, each group ONE module.

    ``make(module_nets)`` builds the trainer from a list of Sequentials (one per
    module), so its synthesizers sit only at the cuts. ``cut_cost(nets)``: per
    boundary between two layers, what a synthesizer there costs the worker
    below (default: nothing); the groups minimise the slowest worker's cost.
    """
    costs = [_param_count(net) for net in nets]
    groups = balanced_groups(costs, workers, cut_costs=cut_cost(nets) if cut_cost else None)
    merged = [Sequential([layer for net in nets[a:b] for layer in net.layers]) for a, b in groups]
    return make(merged), groups


def _build(args: argparse.Namespace, model: Callable):
    """``(trainer, in_shape, module groups, layer groups)`` for the pipeline, on the host."""
    backend.set_backend("numpy")  # the driver builds on the host; each worker moves its part to --backend
    rng = np.random.default_rng(args.seed)
    nets, in_shape = model(rng)
    sg_width = args.sg_width or (1024 if args.model == "fcn" else 128)

    def make(module_nets, rng=rng):
        return build_trainer(module_nets, method=args.method, in_shape=in_shape, lr=args.lr,
                             sg_hidden=args.sg_hidden, sg_width=sg_width, sg_bn=args.sg_bn, sg_lr=args.sg_lr,
                             warmup=args.warmup, unlock_forward=args.unlock == "forward", seed=args.seed, rng=rng)

    def cut_cost(layer_nets) -> list[float]:  # a throwaway trainer with a synthesizer after every layer, on
        probe = make(copy.deepcopy(layer_nets), rng=np.random.default_rng(0))  # copies: a trainer rebinds params
        return [SG_COST_SHARE * _param_count(s.net) for s in probe.synthesizers]

    if _interfaces(args) == "every-layer":
        trainer = make(nets)
        groups = balanced_groups([_param_count(m.net) for m in trainer.modules], args.workers)
        return trainer, in_shape, groups, groups
    trainer, layer_groups = trainer_at_cuts(nets, workers=args.workers, make=make,
                                            cut_cost=cut_cost if args.method != "bprop" else None)
    return trainer, in_shape, [(g, g + 1) for g in range(args.workers)], layer_groups


def _interfaces_info(args, layer_groups) -> dict:
    """Where the decoupled interfaces are, with layers numbered from 1 (``after_layers``: on that layer's output)."""
    placement = _interfaces(args)
    cuts = [b for _, b in layer_groups[:-1]]
    after = [] if placement is None else (cuts if placement == "cuts" else list(range(1, args.layers)))
    return {"placement": placement, "cuts_after_layers": cuts, "synthesizers_after_layers": after,
            "input_models_before_layers": [a + 1 for a in after] if args.unlock == "forward" else [],
            "layers_per_worker": [[a + 1, b] for a, b in layer_groups]}


def _describe_interfaces(args, info: dict) -> str:
    cuts = ", ".join(map(str, info["cuts_after_layers"])) or "none"
    if info["placement"] is None:
        return f"{args.workers} workers, locked (bprop, no synthesizers); cuts after layer {cuts}"
    sgs = ", ".join(map(str, info["synthesizers_after_layers"]))
    inside = ("the layers inside a worker train by backprop among themselves" if info["placement"] == "cuts"
              else "every layer has its own synthesizer (--interfaces every-layer)")
    return (f"{args.workers} workers, decoupled: {args.method} synthesizers after layer {sgs}; cuts after layer "
            f"{cuts}; {inside}")


def _resume_point(args: argparse.Namespace) -> tuple[dict | None, int]:
    if not args.resume:
        return None, 0
    path = args.out / CHECKPOINT
    if not path.exists():
        raise UsageError(f"--resume: no checkpoint in {args.out} ({CHECKPOINT}); run without --resume to start")
    arrays, meta = load_checkpoint(path)
    if "step" not in meta or "options" not in meta:
        raise UsageError(f"--resume: {path} is not a pipeline checkpoint (no step or options in its metadata)")
    keys = RESUME_KEYS + (("workers",) if args.interfaces != "every-layer" else ())  # cuts: K modules
    saved = meta["options"]
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in keys
               if saved.get(k) != getattr(args, k)]
    if changed:
        raise UsageError(f"--resume: options differ from the checkpoint's: {'; '.join(changed)}")
    return arrays, int(meta["step"])


def run_pipeline(args: argparse.Namespace, data, *, dataset: str, model: Callable) -> dict:
    """Train as ``args`` say on a pipeline of ``args.workers`` Ray workers; write outputs; return the summary.

    ``data``: a Dataset (host arrays); ``model(rng) -> (nets, per-example input shape)`` builds the layers
    as the single-process command does (one Sequential per layer).
    """
    from tqdm import tqdm  # noqa: PLC0415

    require_ray()
    check_pipeline_options(args)
    args.interfaces, args.checkpoint_every = _interfaces(args), args.checkpoint_every or CHECKPOINT_EVERY  # as run
    state, start_step = _resume_point(args)
    trainer, in_shape, groups, layer_groups = _build(args, model)
    interfaces = _interfaces_info(args, layer_groups)
    x_train = np.asarray(data.x_train, np.float32).reshape(-1, *in_shape)
    y_train = np.asarray(data.y_train, np.int64)
    x_test = np.asarray(data.x_test, np.float32).reshape(-1, *in_shape)
    y_test = np.asarray(data.y_test, np.int64)
    if args.batch > x_train.shape[0]:
        raise UsageError(f"--batch {args.batch} is larger than the training set ({x_train.shape[0]} examples)")
    args.out.mkdir(parents=True, exist_ok=True)

    started_ray = init_ray(args.ray_address, timeout=args.ray_timeout or RAY_CONNECT_TIMEOUT)
    try:
        with Pipeline(trainer, workers=args.workers, groups=groups, window=args.window, lockstep=args.lockstep,
                      steps_per_call=args.steps_per_call or STEPS_PER_CALL,
                      backend=args.backend, fail_at=args.inject_failure, data=(x_train, y_train)) as pipe:
            print(f"{dataset}: {_describe_interfaces(args, interfaces)}")
            for line in pipe.describe():
                print(f"{dataset}: {line}")
            if state is not None:
                pipe.load_state_dict(state)
            summary = _train(args, pipe, (x_train, y_train, x_test, y_test), start_step, tqdm)
    finally:
        if started_ray:
            require_ray().shutdown()
    summary["distributed"]["interfaces"] = interfaces
    summary.update({"dataset": dataset, "model": args.model, "layers": args.layers, "method": args.method,
                    "backend": args.backend,
                    "sg_width": (args.sg_width or (1024 if args.model == "fcn" else 128))
                    if args.method != "bprop" else None,
                    "options": vars(args)})
    write_json(args.out / "summary.json", summary)
    _plot(summary, args.out / "learning_curve.png")
    return summary


def _train(args, pipe: Pipeline, arrays, start_step: int, tqdm) -> dict:
    x_train, y_train, x_test, y_test = arrays
    schedule = StepDecay(args.lr, args.lr_decay_steps)
    sg_lr = args.sg_lr or args.lr
    every = args.checkpoint_every
    order: dict = {}
    evals, logs, last_ckpt = [], [], (start_step if start_step else None)
    train_seconds, lr, err = 0.0, None, float("nan")

    def evaluate(step: int) -> float:
        e = pipe.error_percent(x_test, y_test)
        evals.append({"step": step, "test_error_percent": e, "train_seconds": train_seconds})
        return e

    def checkpoint(step: int) -> None:
        save_checkpoint(args.out / CHECKPOINT, pipe.state_dict(),
                        {"step": step, "options": vars(args), "groups": pipe.groups})

    def finished(done: list[dict]) -> None:
        for info in done:
            if info["step"] % args.log_every == 0 or info["step"] == args.steps:
                host = {"loss": info["loss"], "sg_loss": info["sg_loss"], "input_loss": info["input_loss"]}
                raise_if_diverged(host, info["step"])
                logs.append({"step": info["step"], **host})

    since = time.time()
    bar = tqdm(total=args.steps, initial=start_step, unit="step", disable=not args.progress, mininterval=1.0,
               dynamic_ncols=True)
    step = start_step
    try:
        err = evaluate(start_step)
        t0 = time.perf_counter()
        for step in range(start_step + 1, args.steps + 1):
            new_lr = schedule(step - 1)
            if new_lr != lr:
                lr = new_lr
                pipe.set_lr(lr, sg_lr * lr / args.lr)
            idx = batch_indices(step, n=x_train.shape[0], batch=args.batch, seed=args.seed, cache=order)
            finished(pipe.submit(step, rows=idx))  # the workers hold the training set
            bar.update(1)
            boundary = step % args.eval_every == 0 or step % every == 0 or step == args.steps
            if boundary:
                finished(pipe.drain())
                train_seconds += time.perf_counter() - t0
                if step % args.eval_every == 0 or step == args.steps:
                    err = evaluate(step)
                    bar.set_postfix(loss=f"{logs[-1]['loss']:.3f}" if logs else "-", test_err=f"{err:.2f}%",
                                    steps_s=f"{(step - start_step) / max(train_seconds, 1e-9):.1f}", refresh=False)
                if step % every == 0 or step == args.steps:
                    checkpoint(step)
                    last_ckpt = step
                t0 = time.perf_counter()
    except WorkerDied as exc:
        where = (f"last checkpoint: {args.out / CHECKPOINT} (step {last_ckpt}); continue with --resume"
                 if last_ckpt else "no checkpoint was written yet")
        raise WorkerDied(f"{exc}; {where}", group=exc.group, step=exc.step) from None
    finally:
        bar.close()
    report = pipe.report(since)
    steps_done = args.steps - start_step
    return {"test_error_percent": err, "steps": args.steps, "train_seconds": train_seconds,
            "steps_per_second": steps_done / max(train_seconds, 1e-9),
            "examples_per_second": steps_done * args.batch / max(train_seconds, 1e-9),
            "resumed_from_step": start_step or None,
            "curves": {"evals": evals, "logs": logs},
            "distributed": {"workers": args.workers, "mode": pipe.mode, "groups": pipe.groups, "window": pipe.window,
                            "steps_per_call": pipe.steps_per_call,
                            "steps_per_call_choice": pipe.steps_per_call_choice,
                            "ray_address": args.ray_address, "stages": report}}


def _plot(summary: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    evals = summary["curves"]["evals"]
    d = summary["distributed"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["train_seconds"] for e in evals], [e["test_error_percent"] for e in evals], marker=".",
            label=f"{summary['method']}, {d['workers']} workers ({d['mode']}), final {summary['test_error_percent']:.2f} %")
    ax.set_xlabel("training wall-clock time (s, evaluations excluded)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title(f"{summary['dataset']} {summary['model'].upper()}-{summary['layers']} on {d['workers']} Ray workers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
