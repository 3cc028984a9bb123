"""``python -m minidni.run mnist|cifar10 --workers K [--ray-address ADDR]``: training on a pipeline of Ray workers.

    python -m minidni.run mnist --method dni --workers 2 --steps 2000 --lr 3e-4
    python -m minidni.run mnist --method bprop --workers 2 --ray-address HEAD:6379

:func:`add_distributed_args` adds the options to the mnist/cifar10 parser;
:func:`run_distributed` replaces :func:`minidni.experiments.feedforward.run`'s
single-process loop when ``--workers`` is given. It builds the same trainer
(same seed, same initial weights), moves its modules into ``--workers`` Ray
workers (:class:`~minidni.distributed.pipeline.Pipeline`: decoupled for
dni/cdni, locked for bprop), prints where each group runs, and trains.

Without ``--ray-address`` it starts a local Ray instance with one CPU per core
(``os.cpu_count()``); with one it joins that cluster. Only the driver reads the
data (``--data-dir`` or $MINIDNI_DATA on the driver's machine; minibatches reach
the workers through Ray's object store), but every node must have minidni (and
the same Ray and Python) installed: the workers import it.

Minibatches: step ``t`` (from 1) takes the ``k``-th batch of epoch ``e``
(``e, k = divmod(t - 1, N // batch)``) of the permutation
``default_rng([seed, 1, e])``, so a resumed run sees the same batches as an
uninterrupted one. (The single-process command shuffles with its own stream.)

Checkpoints. Every ``--checkpoint-every`` steps the pipeline is drained and
``checkpoint.npz`` (every worker's parameters, optimiser moments and
synthesizer state) and ``checkpoint.json`` (the step and the options) are
written atomically into ``--out``; ``--resume`` continues from them. A worker
that dies stops the run with one line naming the group, the step and the last
checkpoint.

Writes ``summary.json`` (as the single-process run, plus ``distributed``: the
groups, where each ran, per-worker busy/idle time and lock waits, the
staleness each synthesizer saw, examples per second) and
``learning_curve.png`` (test error against training seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from minidni.cli import UsageError, positive_int
from minidni.distributed.pipeline import MODES, Pipeline, WorkerDied, init_ray, require_ray
from minidni.io import load_arrays, save_arrays, save_figure, write_json

__all__ = ["add_distributed_args", "check_before_loading", "run_distributed", "trainer_from_args", "batch_indices",
           "CHECKPOINT", "CHECKPOINT_META"]

CHECKPOINT, CHECKPOINT_META = "checkpoint.npz", "checkpoint.json"
# options that must not change between a checkpoint and its resumption
RESUME_KEYS = ("model", "layers", "method", "sg_hidden", "sg_width", "sg_bn", "unlock", "batch", "seed")


def _fail_at(text: str) -> tuple[int, int]:
    group, _, step = text.partition(":")
    try:
        return int(group), int(step)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not GROUP:STEP (two integers)") from None


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--ray-address``, ``--window``, ``--checkpoint-every``, ``--resume``."""
    g = parser.add_argument_group("parallel workers (Ray)")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="train on a pipeline of this many Ray workers, one group of consecutive modules each "
                        "(dni/cdni: decoupled; bprop: locked; default: one process, no Ray)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (HEAD:6379); by default a local Ray instance is started")
    g.add_argument("--window", type=positive_int, default=None,
                   help="minibatches in flight in the pipeline (default: workers + 1)")
    g.add_argument("--checkpoint-every", type=positive_int, default=1000,
                   help="steps between checkpoints (the pipeline drains, then checkpoint.npz is written)")
    g.add_argument("--lockstep", action="store_true",
                   help="run the workers one at a time in the single-process order (deterministic, no parallelism; default: off)")
    g.add_argument("--resume", action="store_true",
                   help="continue from checkpoint.npz in --out (the number of workers may differ; default: off)")
    g.add_argument("--inject-failure", type=_fail_at, default=None, help=argparse.SUPPRESS)  # test hook


PIPELINE_ONLY = ("ray_address", "window", "lockstep", "resume")


def check_before_loading(args: argparse.Namespace) -> None:
    """The command line's checks before the data is read: pipeline options without ``--workers``,
    Ray missing (one line with the install command), options a pipeline cannot run."""
    if not args.workers:
        used = [f"--{k.replace('_', '-')}" for k in PIPELINE_ONLY if getattr(args, k)]
        if used:
            raise UsageError(f"{', '.join(used)} needs --workers K (training on a pipeline of Ray workers)")
        return
    require_ray()
    check_distributed_options(args)


def check_distributed_options(args: argparse.Namespace) -> None:
    """UsageError for options a pipeline cannot run (checked before Ray starts)."""
    if args.method not in MODES:
        raise UsageError(f"--workers runs --method {', '.join(MODES)}, got --method {args.method}")
    if args.workers > args.layers:
        raise UsageError(f"--workers {args.workers} is more than the {args.layers} modules (--layers) to share out")
    if args.p_update != 1.0:
        raise UsageError(f"--p-update {args.p_update} is not supported with --workers (every module updates each step)")
    if args.backend != "numpy":
        raise UsageError(f"--workers runs on --backend numpy, got --backend {args.backend}")


def batch_indices(step: int, *, n: int, batch: int, seed: int, cache: dict | None = None) -> np.ndarray:
    """Indices of the minibatch of ``step`` (from 1): batch ``k`` of epoch ``e``'s permutation (module docstring)."""
    epoch, k = divmod(step - 1, n // batch)
    if cache is not None and cache.get("epoch") == epoch:
        perm = cache["perm"]
    else:
        perm = np.random.default_rng([seed, 1, epoch]).permutation(n)
        if cache is not None:
            cache.update(epoch=epoch, perm=perm)
    return perm[k * batch:(k + 1) * batch]


def _resume_point(args: argparse.Namespace) -> tuple[dict | None, int]:
    meta_path, ckpt_path = args.out / CHECKPOINT_META, args.out / CHECKPOINT
    if not args.resume:
        return None, 0
    if not (meta_path.exists() and ckpt_path.exists()):
        raise UsageError(f"--resume: no checkpoint in {args.out} ({CHECKPOINT} and {CHECKPOINT_META})")
    import json  # noqa: PLC0415

    meta = json.loads(meta_path.read_text())
    changed = [f"--{k.replace('_', '-')} {meta['options'].get(k)} -> {getattr(args, k)}" for k in RESUME_KEYS
               if meta["options"].get(k) != getattr(args, k)]
    if changed:
        raise UsageError(f"--resume: options differ from the checkpoint's: {'; '.join(changed)}")
    return load_arrays(ckpt_path), int(meta["step"])


def trainer_from_args(args: argparse.Namespace, dataset: str):
    """``(trainer, per-example input shape)``: the network and trainer the single-process command builds."""
    from minidni.dni.feedforward import build_trainer  # noqa: PLC0415
    from minidni.experiments.feedforward import DATASETS, _check_options, _model  # noqa: PLC0415

    _check_options(args)
    rng = np.random.default_rng(args.seed)
    nets, in_shape = _model(args, DATASETS[dataset], rng)
    trainer = build_trainer(nets, method=args.method, in_shape=in_shape, lr=args.lr, sg_hidden=args.sg_hidden,
                            sg_width=sg_width(args), sg_bn=args.sg_bn, sg_lr=args.sg_lr, warmup=args.warmup,
                            unlock_forward=args.unlock == "forward", seed=args.seed, rng=rng)
    return trainer, in_shape


def sg_width(args: argparse.Namespace) -> int:
    return args.sg_width or (1024 if args.model == "fcn" else 128)


def run_distributed(args: argparse.Namespace, data, *, dataset: str = "mnist") -> dict:
    """Train as ``args`` say on a pipeline of ``args.workers`` Ray workers; write outputs; return the summary."""
    from tqdm import tqdm  # noqa: PLC0415

    from minidni.dni.feedforward import raise_if_diverged  # noqa: PLC0415
    from minidni.optim import StepDecay  # noqa: PLC0415

    require_ray()
    check_distributed_options(args)
    state, start_step = _resume_point(args)
    trainer, in_shape = trainer_from_args(args, dataset)
    x_train = np.asarray(data.x_train, np.float32).reshape(-1, *in_shape)
    y_train = np.asarray(data.y_train, np.int64)
    x_test = np.asarray(data.x_test, np.float32).reshape(-1, *in_shape)
    y_test = np.asarray(data.y_test, np.int64)
    if args.batch > x_train.shape[0]:
        raise UsageError(f"--batch {args.batch} is larger than the training set ({x_train.shape[0]} examples)")
    args.out.mkdir(parents=True, exist_ok=True)

    started_ray = init_ray(args.ray_address)
    try:
        with Pipeline(trainer, workers=args.workers, window=args.window, lockstep=args.lockstep,
                      fail_at=args.inject_failure) as pipe:
            for line in pipe.describe():
                print(f"{dataset}: {line}")
            if state is not None:
                pipe.load_state_dict(state)
            summary = _train(args, pipe, (x_train, y_train, x_test, y_test), start_step, StepDecay,
                             raise_if_diverged, tqdm)
    finally:
        if started_ray:
            require_ray().shutdown()
    summary.update({"dataset": dataset, "model": args.model, "layers": args.layers, "method": args.method,
                    "backend": args.backend, "sg_width": sg_width(args) if args.method != "bprop" else None,
                    "options": vars(args)})
    write_json(args.out / "summary.json", summary)
    _plot(summary, args.out / "learning_curve.png")
    return summary


def _train(args, pipe: Pipeline, arrays, start_step: int, StepDecay, raise_if_diverged, tqdm) -> dict:
    x_train, y_train, x_test, y_test = arrays
    schedule = StepDecay(args.lr, args.lr_decay_steps)
    sg_lr = args.sg_lr or args.lr
    order: dict = {}
    evals, logs, last_ckpt = [], [], (start_step if start_step else None)
    train_seconds, lr, err = 0.0, None, float("nan")

    def evaluate(step: int) -> float:
        e = pipe.error_percent(x_test, y_test)
        evals.append({"step": step, "test_error_percent": e, "train_seconds": train_seconds})
        return e

    def checkpoint(step: int) -> None:
        save_arrays(args.out / CHECKPOINT, pipe.state_dict())
        write_json(args.out / CHECKPOINT_META, {"step": step, "options": vars(args), "groups": pipe.groups})

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
            finished(pipe.submit(step, x_train[idx], y_train[idx]))
            bar.update(1)
            boundary = step % args.eval_every == 0 or step % args.checkpoint_every == 0 or step == args.steps
            if boundary:
                finished(pipe.drain())
                train_seconds += time.perf_counter() - t0
                if step % args.eval_every == 0 or step == args.steps:
                    err = evaluate(step)
                    bar.set_postfix(loss=f"{logs[-1]['loss']:.3f}" if logs else "-", test_err=f"{err:.2f}%",
                                    steps_s=f"{(step - start_step) / max(train_seconds, 1e-9):.1f}", refresh=False)
                if step % args.checkpoint_every == 0 or step == args.steps:
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
