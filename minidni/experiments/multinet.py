"""``python -m minidni.run multinet``: two LSTMs at two clock rates joined by a DNI (PAPER.md §1).

    python -m minidni.run multinet --mode dni --T 4 --steps 64000 --seed 0 --out runs/multinet
    python -m minidni.run multinet --modes locked,dni,none --seeds 0,1 --out runs/multinet_compare

Network A reads one digit image per step and every T steps counts the odd digits of
the last T steps; network B ticks every T steps on A's message and every T² steps
counts the odd digits of the last T² steps (:mod:`minidni.dni.multinet`,
:mod:`minidni.tasks.odd_digits`). ``--mode locked`` backpropagates B's loss through
the messages into A once per period (A updates every T² steps), ``dni`` updates A
every T steps with a synthetic gradient at its message, ``none`` lets no gradient
of B reach A. ``--steps`` counts fast ticks (images per row) and must be a multiple
of T² (whole periods); so must ``--eval-every`` and ``--checkpoint-every``.

Digits (``--digits``): ``auto`` reads MNIST from the data folder (``--data-dir``,
else ``$MINIDNI_DATA``, else the user cache; never downloads) and falls back to the
synthetic stand-in of :func:`minidni.data.mnist_or_standin` with a note; ``mnist``
requires MNIST; ``standin`` always uses the stand-in. Training periods are drawn
from the training split; accuracy is measured every ``--eval-every`` ticks on the
same ``--eval-periods`` held-out periods of ``--eval-batch`` rows from the test split
(the same for every mode and seed), as percent of A's answers (T per period and row)
and of B's (one per period and row) that are right.

**Defaults, by measurement** (MNIST, T=4, batch 32, Adam lr 1e-3, clip 1, seed 0,
16000 ticks, held-out accuracy of B; single runs on a shared 2-core machine). With a
16-wide message B's gradient hardly mattered: after 3200 ticks ``none`` reached
B 39.6% beside ``locked`` 35.9% and ``dni`` 42.7%, since A's own loss already makes
its state hold the count and a random projection of it carries enough to B. The
message is therefore a 2-wide bottleneck (``--message 2``) that only a trained message
layer can fill: ``locked`` 64.5%, ``none`` 31.2%. There ``dni`` with an SG that sees
only the message and the tick reached 38.4% (linear SG), 64.7% (one hidden layer) and
56.0% (two), with cos(SG, true gradient) between -0.22 and 0.06 at the logs: from A's side, B's
per-example gradient is mostly B's error on the other windows, which A cannot see.
Conditioning the SG on A's own label too (``--sg-condition tick-label``, the cDNI
idea; A knows its label at its tick) raised the cosine to 0.18-0.23 and B to 74.0%
with a linear SG, so that is the default.

Writes into ``--out`` (per run in ``--out/<mode>/seed<K>`` with several modes or
seeds): ``summary.json`` (mode, T, steps, fast_updates, slow_updates,
fast_accuracy, slow_accuracy, train_seconds and cpu_seconds: the wall and the CPU
time of the training work, chance levels, options, logs), ``curves.png`` (A's and
B's held-out accuracy against fast ticks, training wall seconds and CPU seconds) and
``checkpoint.npz`` every ``--checkpoint-every`` ticks and at the end, from which
``--resume`` (same options; ``--steps`` may grow) continues exactly as an
uninterrupted run would. With several runs it also writes ``curves.png`` (all runs
together), ``compare.json`` and ``table.md`` into ``--out``.

``--workers 2`` puts A and B into two Ray worker processes
(:mod:`minidni.experiments.multinet_workers`: in ``locked`` A waits for B's gradient,
in ``dni`` A runs up to ``--ahead`` periods ahead while B catches up) and measures the
wall time of the whole training; accuracy is measured before and after only, and no
checkpoint or curve is written.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minidni import backend
from minidni.cli import (TrainingDiverged, UsageError, add_common_args, int_range, make_parser as _make_parser,
                         nonnegative_float, parse_or_exit, positive_float, positive_int, prepare_out_dir, run_command,
                         seed_int)
from minidni.dni.multinet import MODES, SG_CONDITIONS, TwoClockTrainer
from minidni.io import CheckpointError, load_checkpoint, save_checkpoint, save_figure, write_json, write_text
from minidni.tasks.odd_digits import OddDigitStream

__all__ = ["main", "make_parser", "run", "load_digits", "chance_accuracy"]

CHECKPOINT = "checkpoint.npz"
DIGITS = ("auto", "mnist", "standin")
STANDIN_SIZES = (12000, 2000)  # training and test images of the synthetic stand-in
EVAL_SEED = 20161                # the held-out periods are the same for every run
MAX_T = 16                       # B's softmax has T²+1 classes


def _list(kind: str, parse, choices=None):
    """An argparse type for a comma-separated list of ``kind`` items (no repeats)."""

    accepted = f"a comma-separated list of distinct {kind}" + (f" from {', '.join(choices)}" if choices else "")

    def convert(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is empty (accepted: {accepted})")
        out = []
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)} (accepted: {accepted})")
            out.append(parse(item))
        if len(set(out)) != len(out):
            raise argparse.ArgumentTypeError(f"{text!r} repeats an item (accepted: {accepted})")
        return out

    convert.kind, convert.accepted = "list", accepted  # type: ignore[attr-defined]  (read by the bad-input tests)
    return convert


def make_parser() -> argparse.ArgumentParser:
    """The options of ``python -m minidni.run multinet``."""
    p = _make_parser("python -m minidni.run multinet",
                     "Train two LSTMs at two clock rates (A every step, B every T steps) on the odd-digit stream, "
                     "locked, through a DNI, or with no gradient from B to A (PAPER.md §1).")
    p.add_argument("--mode", choices=MODES, default="dni", help="how B's gradient reaches A")
    p.add_argument("--modes", type=_list("modes", str, MODES), default=None,
                   help="comma-separated modes to run one after another (overrides --mode), e.g. locked,dni,none")
    p.add_argument("--seeds", type=_list("seeds", seed_int), default=None,
                   help="comma-separated seeds to run (overrides --seed), e.g. 0,1")
    p.add_argument("--T", type=int_range(1, MAX_T), default=4, help="A's window and B's tick period (paper: 4)")
    p.add_argument("--steps", type=positive_int, default=64000, help="fast ticks (images per row); a multiple of T²")
    p.add_argument("--batch", type=positive_int, default=32, help="independent streams (batch rows)")
    p.add_argument("--embed", type=positive_int, default=64, help="units of A's image embedding")
    p.add_argument("--fast-hidden", type=positive_int, default=64, help="LSTM units of A")
    p.add_argument("--slow-hidden", type=positive_int, default=64, help="LSTM units of B")
    p.add_argument("--message", type=positive_int, default=2,
                   help="width of A's message to B (a bottleneck: module docstring, Defaults)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate of A and B")
    p.add_argument("--sg-lr", type=positive_float, default=None, help="Adam learning rate of the SG (default: --lr)")
    p.add_argument("--sg-scale", type=nonnegative_float, default=1.0, help="factor on the SG before it is injected")
    p.add_argument("--sg-hidden", type=int_range(0, 2), default=0, help="hidden layers of the SG model (0: linear)")
    p.add_argument("--sg-width", type=positive_int, default=64, help="units per hidden layer of the SG model")
    p.add_argument("--sg-condition", choices=SG_CONDITIONS, default="tick-label",
                   help="what the SG sees beside the message: B's tick index, or it and A's own label (cDNI)")
    p.add_argument("--clip", type=nonnegative_float, default=1.0, help="max global gradient norm per update (0: off)")
    p.add_argument("--digits", choices=DIGITS, default="auto", help="MNIST, the synthetic stand-in, or auto")
    p.add_argument("--eval-every", type=positive_int, default=1600, help="fast ticks between held-out evaluations")
    p.add_argument("--eval-periods", type=positive_int, default=4, help="held-out periods per evaluation")
    p.add_argument("--eval-batch", type=positive_int, default=256, help="held-out rows per period")
    p.add_argument("--checkpoint-every", type=positive_int, default=8000, help="fast ticks between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint(s) in --out")
    p.add_argument("--workers", type=int_range(1, 2), default=1,
                   help="1: one process; 2: A and B in two Ray workers (no checkpoints, no learning curves)")
    p.add_argument("--ahead", type=int_range(1, 100), default=2,
                   help="with --workers 2: periods A may run ahead of B (dni, none)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    add_common_args(p, default_out="runs/multinet")
    return p


def check_options(args: argparse.Namespace) -> None:
    """UsageError (one line, the accepted values) for tick counts that are not whole periods."""
    period = args.T * args.T
    for option in ("steps", "eval_every", "checkpoint_every"):
        value = getattr(args, option)
        if value % period:
            raise UsageError(f"--{option.replace('_', '-')} {value} is not a multiple of T² = {period} (one period of "
                             f"B's clock; accepted: {period}, {2 * period}, {3 * period}, ...)")


# -- data ------------------------------------------------------------------------------------------
def load_digits(choice: str, data_dir: Path | None):
    """``(source, x_train, y_train, x_test, y_test)``; source is "MNIST" or "stand-in"."""
    from minidni.data import DataError, load_mnist, mnist_or_standin  # noqa: PLC0415

    if choice != "standin":
        try:
            d = load_mnist(data_dir, download=False)
            return ("MNIST", d.x_train, d.y_train, d.x_test, d.y_test)
        except DataError:
            if choice == "mnist":
                raise
    return ("stand-in", *mnist_or_standin(*STANDIN_SIZES, folders=[]))


def chance_accuracy(labels: np.ndarray, n: int) -> float:
    """Percent right of the best constant answer to "how many odd digits among n": max_k P(Binomial(n, p) = k).

    ``p`` is the share of odd digits in ``labels`` (the split the held-out streams draw from).
    """
    p = float(np.mean(np.asarray(labels) % 2 == 1))
    return 100.0 * max(math.comb(n, k) * p ** k * (1.0 - p) ** (n - k) for k in range(n + 1))


# -- one run ---------------------------------------------------------------------------------------
class _Run:
    """One (mode, seed) training run: trainer, streams, logs, and their checkpoint."""

    def __init__(self, args: argparse.Namespace, mode: str, seed: int, out: Path, digits: tuple):
        self.args, self.mode, self.seed, self.out = args, mode, seed, out
        self.xp = backend.set_backend(args.backend)
        self.source, x_train, y_train, self.x_test, self.y_test = digits
        self.stream = OddDigitStream(x_train, y_train, args.batch, args.T, rng=np.random.default_rng([seed, 1]))
        self.trainer_options = dict(
            input_dim=x_train.shape[1], T=args.T, mode=mode, embed=args.embed, fast_hidden=args.fast_hidden,
            slow_hidden=args.slow_hidden, message=args.message, lr=args.lr, sg_lr=args.sg_lr,
            sg_scale=args.sg_scale, sg_hidden=args.sg_hidden, sg_width=args.sg_width,
            sg_condition=args.sg_condition, clip=args.clip)
        self.trainer = TwoClockTrainer(**self.trainer_options, rng=np.random.default_rng(seed))
        self.logs: list[dict] = []
        self.train_seconds = 0.0  # wall time of the training work (evaluations and checkpoints excluded)
        self.cpu_seconds = 0.0    # this process's CPU time over the same spans (wall time counts other programs too)

    @property
    def ticks(self) -> int:
        return self.trainer.periods * self.args.T ** 2

    # -- checkpoint ------------------------------------------------------------------------
    def _options(self) -> dict:
        skip = {"resume", "progress", "out", "steps", "checkpoint_every", "modes", "seeds", "data_dir", "mode", "seed"}
        opts = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items() if k not in skip}
        return {**opts, "mode": self.mode, "seed": self.seed, "digits_source": self.source}

    def save(self) -> None:
        arrays, meta = self.trainer.state_dict()
        save_checkpoint(self.out / CHECKPOINT, arrays, {"options": self._options(), "trainer": meta,
                                                         "stream": self.stream.state_dict(), "logs": self.logs,
                                                         "train_seconds": self.train_seconds,
                                                         "cpu_seconds": self.cpu_seconds})

    def load(self) -> None:
        path = self.out / CHECKPOINT
        arrays, host = load_checkpoint(path)
        mine = self._options()
        theirs = host.get("options", {})
        if theirs != mine:
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise UsageError(f"--resume: the checkpoint {path} was made with other options ({', '.join(diff)}); "
                             "rerun with the same options or another --out")
        try:
            self.trainer.load_state_dict(arrays, host["trainer"])
            self.stream.load_state_dict(host["stream"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} does not match this multinet run ({type(exc).__name__}: {exc}); "
                                  "delete it or choose another --out") from None
        self.logs, self.train_seconds, self.cpu_seconds = host["logs"], host["train_seconds"], host["cpu_seconds"]

    # -- training ----------------------------------------------------------------------------
    def evaluate(self) -> tuple[float, float]:
        """Held-out accuracy of A and B in percent (the same periods at every call)."""
        args = self.args
        stream = OddDigitStream(self.x_test, self.y_test, args.eval_batch, args.T, rng=np.random.default_rng(EVAL_SEED))
        right = [self.trainer.evaluate(stream.next_period()) for _ in range(args.eval_periods)]
        fast = sum(int(a) for a, _ in right) / (args.eval_periods * args.eval_batch * args.T)
        slow = sum(int(b) for _, b in right) / (args.eval_periods * args.eval_batch)
        return 100.0 * fast, 100.0 * slow

    def log(self) -> dict:
        d = self.trainer.collect_diagnostics()
        if not d.get("finite", True):
            raise TrainingDiverged(f"a loss or message gradient became NaN or inf before fast tick {self.ticks}; "
                                   "try a smaller --lr, --clip 1, or a smaller --sg-lr or --sg-scale")
        fast, slow = self.evaluate()
        tr = self.trainer
        entry = {"step": self.ticks, "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds,
                 "fast_updates": tr.fast_updates, "slow_updates": tr.slow_updates,
                 "fast_accuracy": fast, "slow_accuracy": slow,
                 **{k: v for k, v in d.items() if k not in ("periods", "finite")}}
        self.logs.append(entry)
        return entry

    def train(self) -> dict:
        from tqdm import tqdm  # noqa: PLC0415  (only the command line shows a bar)

        args = self.args
        prepare_out_dir(self.out)
        if args.resume and (self.out / CHECKPOINT).is_file():
            self.load()
        wall0 = time.perf_counter()
        if not self.logs:
            self.log()  # the accuracy before any training (tick 0)
        period = args.T ** 2
        bar = tqdm(total=args.steps, initial=min(self.ticks, args.steps), unit="tick", disable=not args.progress,
                   mininterval=1.0, dynamic_ncols=True, desc=f"{self.mode} seed {self.seed}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # NaN/inf are caught at each log
            since, since_cpu = time.perf_counter(), time.process_time()
            while self.ticks < args.steps:
                self.trainer.train_period(self.stream.next_period())
                bar.update(period)
                logging = self.ticks % args.eval_every == 0 or self.ticks == args.steps
                checkpointing = self.ticks % args.checkpoint_every == 0
                if not (logging or checkpointing):
                    continue
                backend.synchronize(self.xp)
                self.train_seconds += time.perf_counter() - since
                self.cpu_seconds += time.process_time() - since_cpu
                if logging:
                    e = self.log()
                    bar.set_postfix({"A%": f"{e['fast_accuracy']:.1f}", "B%": f"{e['slow_accuracy']:.1f}"},
                                    refresh=False)
                if checkpointing:
                    self.save()
                since, since_cpu = time.perf_counter(), time.process_time()  # evaluation, checkpoints: not training
        bar.close()
        if self.ticks % args.checkpoint_every:  # the last ticks, so that --resume can go further
            self.save()
        return self.summary(time.perf_counter() - wall0)

    def train_on_workers(self) -> dict:
        """Train A and B in two Ray workers (:mod:`minidni.experiments.multinet_workers`), then evaluate here."""
        from minidni.experiments.multinet_workers import train_on_workers  # noqa: PLC0415  (needs Ray)

        args, tr = self.args, self.trainer
        prepare_out_dir(self.out)
        wall0 = time.perf_counter()
        self.log()  # the accuracy before any training (tick 0), as in one process
        result = train_on_workers(self.trainer_options, self.seed, self.stream, args.steps // args.T ** 2,
                                  ahead=args.ahead)
        for params, state in ((tr.fast_params, result["fast"]), (tr.slow_params, result["slow"])):
            for k, v in params.items():
                v[...] = backend.to_device(state["params"][k], self.xp)
        tr.periods, tr.fast_updates, tr.slow_updates = self.stream.periods, result["fast"]["updates"], result["slow"]["updates"]
        self.train_seconds, self.cpu_seconds = result["seconds"], math.nan  # two processes: no one CPU clock
        self.log()
        return self.summary(time.perf_counter() - wall0, worker_cpu_seconds={
            "fast": result["fast_cpu_seconds"], "slow": result["slow_cpu_seconds"]})

    def summary(self, wall: float, **extra) -> dict:
        """Write ``summary.json`` (``extra``: more top-level entries) and return it."""
        args, tr = self.args, self.trainer
        last = self.logs[-1]
        s = {"task": "multinet", "mode": self.mode, "seed": self.seed, "T": args.T, "steps": self.ticks,
             "periods": tr.periods, "fast_updates": tr.fast_updates, "slow_updates": tr.slow_updates,
             "fast_accuracy": last["fast_accuracy"], "slow_accuracy": last["slow_accuracy"],
             "fast_chance": chance_accuracy(self.y_test, args.T), "slow_chance": chance_accuracy(self.y_test, args.T ** 2),
             "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds, "wall_seconds": wall,
             "digits": self.source, "workers": args.workers, "backend": args.backend, "options": self._options(), "logs": self.logs,
             **extra}
        write_json(self.out / "summary.json", s)
        return s


# -- figures ---------------------------------------------------------------------------------------
COLOURS = {"locked": "tab:blue", "dni": "tab:orange", "none": "tab:green"}


def plot_curves(summaries: list[dict], path: Path) -> None:
    """A's (top) and B's (bottom) held-out accuracy against fast ticks, training wall seconds and CPU seconds."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), layout="constrained")
    styles = ["-", "--", ":", "-."]
    seeds = sorted({s["seed"] for s in summaries})
    x_axes = (("step", "fast ticks (images per stream)"), ("train_seconds", "training wall time (s)"),
              ("cpu_seconds", "training CPU time of the process (s)"))
    for s in summaries:
        style = styles[seeds.index(s["seed"]) % len(styles)]
        label = f"{s['mode']} seed {s['seed']} (A {s['fast_updates']} / B {s['slow_updates']} updates)"
        for row, y_key in enumerate(("fast_accuracy", "slow_accuracy")):
            for col, (x_key, _) in enumerate(x_axes):
                axes[row, col].plot([e[x_key] for e in s["logs"]], [e[y_key] for e in s["logs"]], style,
                                    color=COLOURS[s["mode"]], lw=1.4, label=label if (row, col) == (0, 0) else None)
    s0 = summaries[0]
    T = s0["T"]
    for row, (who, chance) in enumerate(((f"A: odd digits in the last {T} steps", s0["fast_chance"]),
                                         (f"B: odd digits in the last {T * T} steps", s0["slow_chance"]))):
        for col, (_, x_label) in enumerate(x_axes):
            ax = axes[row, col]
            ax.axhline(chance, color="grey", ls="--", lw=1)
            ax.text(0.99, chance, "best constant guess", color="grey", fontsize=7, ha="right", va="bottom",
                    transform=ax.get_yaxis_transform())
            ax.set_title(who, fontsize=10)
            ax.set_ylabel("held-out accuracy (%)")
            ax.set_xlabel(x_label)
            ax.set_ylim(0, 100)
            ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(f"Two clocks: A every step, B every T={T} steps ({s0['digits']} digits, batch "
                 f"{s0['options']['batch']}, message width {s0['options']['message']}, {s0['steps']} ticks)")
    save_figure(fig, path)
    plt.close(fig)


def _cpu(s: dict) -> str:
    """CPU seconds of a run: the process's, or with two workers A's + B's."""
    w = s.get("worker_cpu_seconds")
    return f"{s['cpu_seconds']:.0f}" if w is None else f"A {w['fast']:.1f} + B {w['slow']:.1f}"


def table(summaries: list[dict], command: str) -> str:
    """Markdown: one row per run, then the mean per mode."""
    head = ("| mode | seed | A updates | B updates | A accuracy (%) | B accuracy (%) | training wall s | CPU s |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {s['mode']} | {s['seed']} | {s['fast_updates']} | {s['slow_updates']} | {s['fast_accuracy']:.1f} | "
            f"{s['slow_accuracy']:.1f} | {s['train_seconds']:.0f} | {_cpu(s)} |" for s in summaries]
    for mode in dict.fromkeys(s["mode"] for s in summaries):
        group = [s for s in summaries if s["mode"] == mode]
        if len(group) > 1:
            mean = {k: float(np.mean([s[k] for s in group]))
                    for k in ("fast_accuracy", "slow_accuracy", "train_seconds", "cpu_seconds")}
            rows.append(f"| **{mode} mean** | {len(group)} seeds | {group[0]['fast_updates']} | {group[0]['slow_updates']} | "
                        f"{mean['fast_accuracy']:.1f} | {mean['slow_accuracy']:.1f} | {mean['train_seconds']:.0f} | "
                        f"{mean['cpu_seconds']:.0f} |")
    s0 = summaries[0]
    return (f"Command: `{command}`\n\n{s0['digits']} digits, T={s0['T']}, {s0['steps']} fast ticks per run; "
            f"best constant guess: A {s0['fast_chance']:.1f}%, B {s0['slow_chance']:.1f}%.\n\n"
            + head + "\n".join(rows) + "\n")


def _human(prog: str, s: dict) -> str:
    return (f"{prog}: {s['mode']} seed {s['seed']} T={s['T']}: A {s['fast_accuracy']:.1f}% "
            f"(chance {s['fast_chance']:.1f}%), B {s['slow_accuracy']:.1f}% (chance {s['slow_chance']:.1f}%) after "
            f"{s['steps']} ticks; A {s['fast_updates']} updates, B {s['slow_updates']}; {s['train_seconds']:.1f} s training")


def run(args: argparse.Namespace, prog: str = "python -m minidni.run multinet", command: str | None = None) -> list[dict]:
    """Train every (mode, seed) the options name; write the outputs; return the summaries."""
    check_options(args)
    if args.workers == 2 and args.resume:
        raise UsageError("--resume is not offered with --workers 2 (the workers write no checkpoints); "
                         "accepted: --workers 1")
    modes = args.modes or [args.mode]
    seeds = args.seeds if args.seeds is not None else [args.seed]
    several = len(modes) * len(seeds) > 1
    outs = {(m, k): args.out / m / f"seed{k}" if several else args.out for m in modes for k in seeds}
    if args.resume and not any((o / CHECKPOINT).is_file() for o in outs.values()):
        raise UsageError(f"--resume: no checkpoint in {args.out} (expected {CHECKPOINT} there"
                         f"{' or in its <mode>/seed<K> folders' if several else ''}); run without --resume to start at tick 0")
    prepare_out_dir(args.out)
    digits = load_digits(args.digits, args.data_dir)
    started = False
    if args.workers == 2:
        from minidni.distributed import init_ray  # noqa: PLC0415  (Ray is optional)

        started = init_ray(num_cpus=2)
    summaries = []
    try:
        for (mode, seed), out in outs.items():
            r = _Run(args, mode, seed, out, digits)
            s = r.train() if args.workers == 1 else r.train_on_workers()
            if args.workers == 1:
                plot_curves([s], out / "curves.png")
            print(_human(prog, s), flush=True)
            summaries.append(s)
    finally:
        if started:
            import ray  # noqa: PLC0415

            ray.shutdown()
    if several:
        if args.workers == 1:
            plot_curves(summaries, args.out / "curves.png")
        write_json(args.out / "compare.json", [{k: v for k, v in s.items() if k != "logs"} for s in summaries])
        write_text(args.out / "table.md", table(summaries, command or prog))
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minidni.run multinet``."""
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_or_exit(parser, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    command = " ".join(["python -m minidni.run multinet", *map(shlex.quote, argv)])

    def body() -> int:
        run(args, parser.prog, command)
        return 0

    return run_command(parser.prog, body)
