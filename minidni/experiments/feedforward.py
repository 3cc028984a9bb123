"""``python -m minidni.run mnist|cifar10``: feed-forward nets trained by bprop, no-bprop, DNI or cDNI (Table 1).

    python -m minidni.run mnist --model fcn --layers 3 --method cdni --steps 5000 --lr 3e-4 --out runs/m3
    python -m minidni.run cifar10 --model cnn --layers 3 --method dni --backend cupy

The defaults are the paper's setting (Adam, batch 256, lr 3e-5 divided by 10 at
300k and 400k steps, 500k steps; DNI's SG two hidden layers of 1024 units for
the FCN and 128 5x5 filters for the CNN, cDNI's linear), which takes hours to
days on a CPU: pass ``--steps`` and a larger ``--lr`` for a budget run.

Writes into ``--out``: ``summary.json`` (final test error, steps, wall time,
steps/s, backend, every option, the curves), ``learning_curve.png`` (test
error vs steps) and, for dni/cdni with ``--log-sg``, ``sg_diagnostics.png``
(cosine between each synthetic gradient and the true gradient, and each
synthesizer's regression loss, vs steps). The true gradient is computed by a
separate diagnostic pass every ``--log-every`` steps and never used to train.
Every ``--checkpoint-every`` steps ``checkpoint.npz`` (one atomically replaced
file: every module's, synthesizer's and optimiser's arrays, the shuffling and
coin generators, the curves) is written; ``--resume`` continues from it exactly
as an uninterrupted run would.

``--sg-target bp-lambda --sg-lambda λ`` trains dni/cdni with BP(λ): each module
learns from ``λ`` times the gradient backpropagated from above plus ``1 - λ``
times its synthetic gradient (λ = 0 is every-layer DNI, λ = 1 backprop; for
λ > 0 every module waits for the backward from the loss, as in backprop:
:mod:`minidni.dni.feedforward`). Not with ``--unlock`` or ``--workers``.

Code layout, for reuse (``table1`` calls these directly): :func:`make_parser`
builds the options, :func:`load_dataset` reads the data, :func:`run` trains and
writes the outputs from parsed options and a :class:`Dataset`. Running on
several workers (``--workers``/``--ray-address``, Ray) is a separate
executor for :func:`run`'s training loop: :mod:`minidni.experiments.pipeline` adds
its options to the command line and :func:`_main` hands the run to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minidni import backend, models
from minidni.cli import (UsageError, add_common_args, check_memory, command_main, comparable_options, int_range,
                         make_parser as _make_parser, nonnegative_int, positive_float, positive_int, prepare_out_dir,
                         probability)
from minidni.distributed.state import load_module_state, load_regressor_state, trainer_state
from minidni.dni.feedforward import METHODS, SG_TARGETS, build_trainer, error_percent, raise_if_diverged
from minidni.io import CheckpointError, load_checkpoint, save_checkpoint, save_figure, write_json
from minidni.optim import StepDecay

__all__ = ["Dataset", "main_mnist", "main_cifar10", "make_parser", "check_options", "load_dataset", "run"]

DATASETS = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DRIFT_RATIO = 10.0  # warn when a synthetic gradient is this many times larger than the true one
MAX_LAYERS = 1000   # --layers accepts 1 to this (the paper uses 3-6)
DEFAULT_SG_LAMBDA = 0.5  # --sg-target bp-lambda without --sg-lambda
CHECKPOINT = "checkpoint.npz"
# options that do not change what a run computes: a resumed run may differ in these
_RUN_ONLY = ("resume", "progress", "out", "steps", "checkpoint_every", "data_dir", "workers", "ray_address",
             "window", "steps_per_call", "lockstep", "inject_failure")


class Dataset(NamedTuple):
    """Host arrays: images (N, C, H, W) or (N, C*H*W) scaled to [0, 1], labels (N,) int in [0, 10)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_parser(dataset: str) -> argparse.ArgumentParser:
    """The options of ``python -m minidni.run <dataset>``."""
    p = _make_parser(f"python -m minidni.run {dataset}",
                     f"Train a feed-forward net on {dataset} with backprop, without it, or with (c)DNI.")
    p.add_argument("--model", choices=models.MODELS, default="fcn", help="network (paper's FCN or CNN)")
    p.add_argument("--layers", type=int_range(1, MAX_LAYERS), default=3, help="hidden layers = modules (paper: 3-6 FCN, 3-4 CNN)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="units per FCN layer / filters per CNN layer (default: the paper's 256 / 128)")
    p.add_argument("--method", choices=METHODS, default="dni", help="training method")
    p.add_argument("--sg-hidden", type=int_range(0, 2), default=None,
                   help="hidden layers of each synthesizer, 0 = linear (default: 2 for dni, 0 for cdni)")
    p.add_argument("--sg-width", type=positive_int, default=None,
                   help="units (FCN) or 5x5 filters (CNN) per synthesizer hidden layer (default 1024 / 128)")
    p.add_argument("--sg-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="batch-norm in the synthesizers' hidden layers")
    p.add_argument("--sg-lr", type=positive_float, default=None, help="synthesizers' Adam lr (default: --lr)")
    p.add_argument("--p-update", type=probability, default=1.0,
                   help="probability that each module runs its backward and update in a step")
    p.add_argument("--unlock", choices=("forward",), default=None,
                   help="'forward': complete unlock, each module also trains on inputs predicted from the image")
    p.add_argument("--warmup", type=nonnegative_int, default=0, help="synthesizer fits before its output is used (>= 0)")
    p.add_argument("--sg-target", choices=SG_TARGETS, default="bootstrap",
                   help="what each synthesizer regresses on: bootstrap (every-layer DNI: the SG above passed down) or "
                        "bp-lambda (BP(λ): modules learn from λ·backprop + (1-λ)·SG, which locks them as backprop "
                        "does for λ > 0; minidni.dni.feedforward)")
    p.add_argument("--sg-lambda", type=probability, default=None,
                   help="BP(λ)'s λ: 0 = every-layer DNI, 1 = backprop (default with --sg-target bp-lambda: 0.5)")
    p.add_argument("--steps", type=positive_int, default=500_000, help="training steps (paper: 500k)")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch size")
    p.add_argument("--lr", type=positive_float, default=3e-5, help="Adam learning rate of the modules")
    p.add_argument("--lr-decay-steps", type=positive_int, nargs="*", default=[300_000, 400_000],
                   help="steps at which every lr is divided by 10 (none: no decay)")
    p.add_argument("--eval-every", type=positive_int, default=1000, help="steps between test-set evaluations")
    p.add_argument("--log-every", type=positive_int, default=100,
                   help="steps between logged losses, divergence checks and SG diagnostics")
    p.add_argument("--log-sg", action=argparse.BooleanOptionalAction, default=True,
                   help="log cos(synthetic, true gradient) per synthesizer (a diagnostic backprop pass)")
    p.add_argument("--checkpoint-every", type=positive_int, default=1000,
                   help=f"steps between checkpoints ({CHECKPOINT} in --out; with --workers the pipeline drains first)")
    p.add_argument("--resume", action="store_true", help=f"continue from {CHECKPOINT} in --out exactly")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="show a progress bar (default: when stderr is a terminal)")
    add_common_args(p, default_out=f"runs/{dataset}")
    return p


def check_options(args: argparse.Namespace) -> None:
    """Cross-option checks argparse cannot express; raise UsageError naming the option."""
    if args.unlock and args.method not in ("dni", "cdni"):
        raise UsageError(f"--unlock forward needs --method dni or cdni, got --method {args.method}")
    if args.unlock and args.model != "fcn":
        raise UsageError("--unlock forward is implemented for --model fcn only (its synthetic-input models are MLPs)")
    if args.sg_target == "bp-lambda" and (args.method not in ("dni", "cdni") or args.unlock):
        raise UsageError(f"--sg-target bp-lambda needs --method dni or cdni without --unlock (got --method "
                         f"{args.method}{' --unlock ' + args.unlock if args.unlock else ''}): the mixture is "
                         "passed down the real chain of modules")
    if args.sg_lambda is not None and args.sg_target != "bp-lambda":
        raise UsageError(f"--sg-lambda {args.sg_lambda} needs --sg-target bp-lambda (got --sg-target {args.sg_target})")
    if args.method in ("dni", "cdni") and args.layers < 2:
        raise UsageError(f"--method {args.method} needs --layers 2 or more (a synthesizer sits between two modules)")
    decay = args.lr_decay_steps
    if any(a >= b for a, b in zip(decay, decay[1:])):
        raise UsageError(f"--lr-decay-steps must be strictly increasing, got {decay}")


def sg_lambda(args: argparse.Namespace) -> float:
    """BP(λ)'s λ of a run: ``--sg-lambda``, 0.5 when bp-lambda is chosen without it (0: unused otherwise)."""
    if args.sg_lambda is not None:
        return args.sg_lambda
    return DEFAULT_SG_LAMBDA if args.sg_target == "bp-lambda" else 0.0


def check_fits(args: argparse.Namespace, dataset: str) -> None:
    """UsageError (one line: how much) when the run would not fit in this machine's memory."""
    check_memory(memory_needed(args, DATASETS[dataset]),
                 f"--model {args.model} --layers {args.layers} --width {args.width} --batch {args.batch}",
                 "use fewer --layers or a smaller --width, --sg-width or --batch")


def memory_needed(args: argparse.Namespace, image_shape: tuple) -> int:
    """About how many bytes a run allocates (float32): the training set on the device, parameters with
    gradients and two Adam moments (modules and synthesizers), and one step's activations and gradients."""
    c, h, w = image_shape
    pixels = c * h * w
    data = 70_000 * pixels * 4
    if args.model == "fcn":
        width, sg = args.width or 256, args.sg_width or 1024
        params = pixels * width + args.layers * (width * width + 2 * width * sg + sg * sg)
        acts = args.batch * args.layers * (width + 2 * sg) * 6
    else:
        filters, sg = args.width or 128, args.sg_width or 128
        params = args.layers * 25 * (filters * filters + 2 * filters * sg + sg * sg)
        acts = args.batch * h * w * args.layers * (filters + 2 * sg) * 25 * 3  # im2col columns dominate
    return data + 4 * (4 * params + acts)


def _load_mnist(data_dir: Path | None) -> Dataset:
    from minidni.data.mnist import load_mnist  # noqa: PLC0415  (the data package is needed only here)

    return Dataset(*load_mnist(data_dir))


def _load_cifar10(data_dir: Path | None) -> Dataset:
    from minidni.data.cifar10 import load_cifar10  # noqa: PLC0415

    return Dataset(*load_cifar10(data_dir))


LOADERS: dict[str, Callable[[Path | None], Dataset]] = {"mnist": _load_mnist, "cifar10": _load_cifar10}


def load_dataset(name: str, data_dir: Path | None) -> Dataset:
    """The dataset ``name`` ("mnist" or "cifar10") from ``data_dir`` (DataError if missing)."""
    return LOADERS[name](data_dir)


def _model(args: argparse.Namespace, image_shape: tuple, rng: np.random.Generator):
    """(nets, per-example input shape) for the chosen model."""
    if args.model == "fcn":
        in_dim = int(np.prod(image_shape))
        return models.fcn(args.layers, in_dim=in_dim, width=args.width or 256, rng=rng), (in_dim,)
    return models.cnn(args.layers, in_shape=image_shape, filters=args.width or 128, rng=rng), tuple(image_shape)


class _Curves:
    """What is logged during training, as plain lists for summary.json and the figures."""

    def __init__(self):
        self.evals, self.logs, self.warnings = [], [], []

    def as_dict(self) -> dict:
        return {"evals": self.evals, "logs": self.logs, "warnings": self.warnings}


def run(args: argparse.Namespace, data: Dataset, *, dataset: str = "mnist") -> dict:
    """Train as ``args`` say on ``data``; write summary.json and figures into ``args.out``; return the summary."""
    from tqdm import tqdm  # noqa: PLC0415  (only the command line shows a bar)

    check_options(args)
    check_fits(args, dataset)
    xp = backend.set_backend(args.backend)
    image_shape = DATASETS[dataset]
    rng = np.random.default_rng(args.seed)
    nets, in_shape = _model(args, image_shape, rng)
    sg_width = args.sg_width or (1024 if args.model == "fcn" else 128)
    trainer = build_trainer(nets, method=args.method, in_shape=in_shape, lr=args.lr, sg_hidden=args.sg_hidden,
                            sg_width=sg_width, sg_bn=args.sg_bn, sg_lr=args.sg_lr, warmup=args.warmup,
                            p_update=args.p_update, unlock_forward=args.unlock == "forward",
                            seed=args.seed, sg_target=args.sg_target, sg_lambda=sg_lambda(args), rng=rng)
    x_train = backend.to_device(np.asarray(data.x_train, np.float32).reshape(-1, *in_shape))
    y_train = backend.to_device(np.asarray(data.y_train, np.int64))
    x_test = backend.to_device(np.asarray(data.x_test, np.float32).reshape(-1, *in_shape))
    y_test = backend.to_device(np.asarray(data.y_test, np.int64))
    n_train = x_train.shape[0]
    if args.batch > n_train:
        raise UsageError(f"--batch {args.batch} is larger than the training set ({n_train} examples)")

    schedule = StepDecay(args.lr, args.lr_decay_steps)
    sg_lr = args.sg_lr or args.lr
    order_rng = np.random.default_rng([args.seed, 1])
    order, cursor = order_rng.permutation(n_train), 0
    curves = _Curves()
    uses_sg = args.method in ("dni", "cdni")
    ckpt = _Checkpoint(args.out / CHECKPOINT, _options(args), trainer)
    if args.resume:
        ckpt.check_exists()
    args.out.mkdir(parents=True, exist_ok=True)

    def evaluate(step: int, train_seconds: float) -> float:
        err = error_percent(trainer.modules, x_test, y_test)
        curves.evals.append({"step": step, "test_error_percent": err, "train_seconds": train_seconds})
        return err

    start = time.perf_counter()
    first, train_seconds, last_log = 1, 0.0, None
    if args.resume:
        state = ckpt.load(order_rng)
        first, train_seconds, order, cursor = state["step"] + 1, state["train_seconds"], state["order"], state["cursor"]
        curves.evals, curves.logs, curves.warnings = state["evals"], state["logs"], state["warnings"]
        err = curves.evals[-1]["test_error_percent"]
    else:
        err = evaluate(0, 0.0)
    bar = tqdm(total=args.steps, initial=first - 1, unit="step", disable=not args.progress, mininterval=1.0,
               dynamic_ncols=True)
    since = time.perf_counter()  # training time not yet added to train_seconds (synchronised at log points)
    order_on_device = backend.to_device(order)  # one copy per epoch, not one per step
    for step in range(first, args.steps + 1):
        if cursor + args.batch > n_train:  # a new epoch: reshuffle
            order, cursor = order_rng.permutation(n_train), 0
            order_on_device = backend.to_device(order)
        idx = order_on_device[cursor:cursor + args.batch]
        cursor += args.batch
        lr = schedule(step - 1)
        trainer.set_lr(lr, sg_lr * lr / args.lr)
        logging = step % args.log_every == 0 or step == args.steps
        result = trainer.step(x_train[idx], y_train[idx], diagnose=logging and args.log_sg and uses_sg)
        evaluating = step % args.eval_every == 0 or step == args.steps
        checkpointing = step % args.checkpoint_every == 0
        if logging or evaluating or checkpointing:  # the device is synchronised only here
            backend.synchronize(xp)
            train_seconds += time.perf_counter() - since
        if logging:
            host = result.to_host()  # the only host copy of a log interval
            raise_if_diverged(host, step)
            last_log = {"step": step, **{k: host[k] for k in ("loss", "sg_loss", "input_loss", "cosine", "norm_ratio")}}
            curves.logs.append(last_log)
            for i, ratio in host["norm_ratio"].items():
                if ratio > DRIFT_RATIO:
                    msg = (f"warning: step {step}: the synthetic gradient after module {i} is {ratio:.1f}x the true "
                           f"gradient (cos {host['cosine'][i]:.2f}); it may be diverging (try a smaller --sg-lr)")
                    curves.warnings.append(msg)
                    bar.write(msg)
        if evaluating:
            err = evaluate(step, train_seconds)
        if checkpointing:
            ckpt.save(step, order_rng, order=order, cursor=cursor, train_seconds=train_seconds, curves=curves)
        bar.update(1)
        if logging:
            bar.set_postfix(loss=f"{last_log['loss']:.3f}", test_err=f"{err:.2f}%",
                            steps_s=f"{step / max(train_seconds, 1e-9):.1f}", refresh=False)
        if logging or evaluating or checkpointing:
            since = time.perf_counter()  # logging, evaluation and checkpoints are not training time
    bar.close()
    wall = time.perf_counter() - start

    summary = {
        "dataset": dataset, "model": args.model, "layers": args.layers, "method": args.method,
        "test_error_percent": err, "steps": args.steps, "wall_seconds": wall, "train_seconds": train_seconds,
        "steps_per_second": args.steps / max(train_seconds, 1e-9), "backend": args.backend,
        "sg_width": sg_width if uses_sg else None,
        "sg_hidden": ((2 if args.method == "dni" else 0) if args.sg_hidden is None else args.sg_hidden)
        if uses_sg else None,
        "sg_target": args.sg_target, "sg_lambda": sg_lambda(args) if args.sg_target == "bp-lambda" else None,
        "options": vars(args), "curves": curves.as_dict(),
    }
    write_json(args.out / "summary.json", summary)
    _plot_learning_curve(curves, summary, args.out / "learning_curve.png")
    if uses_sg and args.log_sg:
        _plot_sg(curves, summary, args.out / "sg_diagnostics.png")
    return summary


def _options(args: argparse.Namespace) -> dict:
    """The options that decide what a run computes (a checkpoint is resumed only under the same ones)."""
    return comparable_options({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                               if k not in _RUN_ONLY})


class _Checkpoint:
    """``checkpoint.npz`` of a single-process run: the trainer's arrays (keys as in
    :mod:`minidni.distributed.state`), the epoch's shuffle order, and as metadata the step, the
    options, the generators' states, the data cursor, the training time and the curves."""

    def __init__(self, path: Path, options: dict, trainer):
        self.path, self.options, self.trainer = path, options, trainer

    def save(self, step: int, order_rng, *, order, cursor: int, train_seconds: float, curves: _Curves) -> None:
        arrays = {**trainer_state(self.trainer), "order": np.asarray(order)}
        meta = {"step": step, "options": self.options, "cursor": cursor, "train_seconds": train_seconds,
                "order_rng": order_rng.bit_generator.state, "coins": self.trainer._coins.bit_generator.state,
                **curves.as_dict()}
        save_checkpoint(self.path, arrays, meta)

    def check_exists(self) -> None:
        if not self.path.is_file():
            raise UsageError(f"--resume: no checkpoint in {self.path.parent} (expected {self.path}); "
                             "run without --resume to start from step 0")

    def load(self, order_rng) -> dict:
        """Restore the trainer and ``order_rng`` in place; return the loop's state (step, order, cursor, ...)."""
        self.check_exists()
        arrays, meta = load_checkpoint(self.path)
        if meta.get("options") != self.options:
            old = meta.get("options") or {}
            diff = sorted(k for k in set(old) | set(self.options) if old.get(k) != self.options.get(k))
            raise UsageError(f"--resume: the checkpoint in {self.path.parent} was made with different options "
                             f"({', '.join(diff)}); rerun with the same options or another --out")
        try:
            tr = self.trainer
            for i, m in enumerate(tr.modules):
                load_module_state(i, m, {k: v for k, v in arrays.items() if k.startswith(f"m{i}.")})
            for i, sg in enumerate(tr.synthesizers):
                load_regressor_state(f"s{i}.", sg, {k: v for k, v in arrays.items() if k.startswith(f"s{i}.")})
            for i, im in enumerate(tr.input_models or [], start=1):
                load_regressor_state(f"in{i}.", im, {k: v for k, v in arrays.items() if k.startswith(f"in{i}.")})
            tr._coins.bit_generator.state = meta["coins"]
            order_rng.bit_generator.state = meta["order_rng"]
            # JSON made the per-module dicts' keys strings: back to module indices
            meta["logs"] = [{k: {int(i): x for i, x in v.items()} if isinstance(v, dict) else v for k, v in e.items()}
                            for e in meta["logs"]]
            return {**meta, "order": arrays["order"]}
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.path} does not match this run ({type(exc).__name__}: {exc}); "
                                  "delete it or choose another --out") from None


def _title(summary: dict) -> str:
    mix = f" BP(λ={summary['sg_lambda']:g})" if summary.get("sg_target") == "bp-lambda" else ""
    return f"{summary['dataset']} {summary['model'].upper()}-{summary['layers']} {summary['method']}{mix}"


def _plot_learning_curve(curves: _Curves, summary: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["step"] for e in curves.evals], [e["test_error_percent"] for e in curves.evals], marker=".",
            label=f"{summary['method']} (final {summary['test_error_percent']:.2f} %)")
    ax.set_xlabel("training step (minibatches)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title(f"{_title(summary)}: test error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def _plot_sg(curves: _Curves, summary: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax_cos, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    modules = sorted({i for log in curves.logs for i in log["cosine"]})
    for i in modules:
        pts = [(log["step"], log["cosine"][i]) for log in curves.logs if i in log["cosine"]]
        ax_cos.plot(*zip(*pts), label=f"SG after module {i}")
        pts = [(log["step"], log["sg_loss"][i]) for log in curves.logs if i in log["sg_loss"]]
        if pts:
            ax_loss.plot(*zip(*pts), label=f"SG after module {i}")
    ax_cos.set_xlabel("training step (minibatches)")
    ax_cos.set_ylabel("cos(synthetic, true gradient)")
    ax_cos.set_ylim(-0.2, 1.0)
    ax_cos.set_title(f"{_title(summary)}: SG alignment")
    ax_loss.set_xlabel("training step (minibatches)")
    ax_loss.set_ylabel("regression loss (per-example units)")
    ax_loss.set_yscale("log")
    ax_loss.set_title("synthesizer regression loss")
    for ax in (ax_cos, ax_loss):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # (no regression loss is logged before a synthesizer's first fit)
            ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def _main(dataset: str, argv: Sequence[str] | None, load: Callable[[Path | None], Dataset] | None) -> int:
    from minidni.experiments.pipeline import add_pipeline_args, check_before_loading, run_pipeline  # noqa: PLC0415

    parser = make_parser(dataset)
    add_pipeline_args(parser)  # --workers K: the same training on a pipeline of Ray workers
    def body(args: argparse.Namespace) -> int:
        check_options(args)
        check_fits(args, dataset)
        check_before_loading(args)  # Ray missing or pipeline-only options: one line before the data loads
        data = (load or LOADERS[dataset])(args.data_dir)
        if not args.resume:  # (a resume needs the folder with its checkpoint: run() says so if it is missing)
            prepare_out_dir(args.out)
        if args.workers:
            s = run_pipeline(args, data, dataset=dataset, model=lambda rng: _model(args, DATASETS[dataset], rng))
            d = s["distributed"]
            n = d["steps_per_call"]
            auto = " (auto)" if d["steps_per_call_choice"] else ""
            per_call = "" if d["mode"] == "locked" else f", {n} minibatch{'' if n == 1 else 'es'} per Ray call{auto}"
            print(f"{parser.prog}: {s['method']} {s['model']}-{s['layers']} on {args.workers} workers: test error "
                  f"{s['test_error_percent']:.2f} % after {s['steps']} steps ({s['steps_per_second']:.1f} steps/s"
                  f"{per_call}); summary in {args.out / 'summary.json'}")
            return 0
        s = run(args, data, dataset=dataset)
        print(f"{parser.prog}: {s['method']} {s['model']}-{s['layers']}: test error {s['test_error_percent']:.2f} % "
              f"after {s['steps']} steps ({s['steps_per_second']:.1f} steps/s, {s['wall_seconds']:.0f} s wall); "
              f"summary in {args.out / 'summary.json'}")
        return 0

    return command_main(parser.prog, parser, argv, body)


def main_mnist(argv: Sequence[str] | None = None, *, load: Callable[[Path | None], Dataset] | None = None) -> int:
    """``python -m minidni.run mnist``; ``load(data_dir) -> Dataset`` replaces the MNIST reader (tests)."""
    return _main("mnist", argv, load)


def main_cifar10(argv: Sequence[str] | None = None, *, load: Callable[[Path | None], Dataset] | None = None) -> int:
    """``python -m minidni.run cifar10``; ``load(data_dir) -> Dataset`` replaces the CIFAR-10 reader (tests)."""
    return _main("cifar10", argv, load)
