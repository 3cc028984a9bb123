"""``python -m minidni.run copy|repeat-copy|ptb``: an LSTM trained by truncated BPTT, DNI or DNI + Aux (Table 2).

    python -m minidni.run copy                       # DNI vs BPTT, T=3, a few minutes on a laptop CPU
    python -m minidni.run copy --mode dni-aux --T 4 --steps 20000 --out runs/copy_aux
    python -m minidni.run repeat-copy --mode dni --no-compare
    python -m minidni.run ptb --data-dir ../shared/data --T 8 --hidden 256 --steps 20000

Copy / Repeat Copy stream episodes into B rows (:class:`minidni.tasks.CopyTaskStream`)
under the 0.15-bit curriculum; the result is the longest episode length solved
(N+3 for Copy, N·R+3 for Repeat Copy, PAPER.md §3). PTB trains on the character
stream, evaluates bits per character on the validation split every ``--eval-every``
steps, stops early after ``--patience`` evaluations without improvement, and scores
the test split with the parameters of the best validation point.

``--compare`` (default for copy and repeat-copy) first trains ``--mode`` and then
plain BPTT with the same seed, options and data, so the default command shows what
the synthetic gradient adds at the same truncation T.

**Defaults, by measurement** (Copy, T=3, batch 32, Adam lr 3e-3, clip 1,
sg-scale 0.1, the 0.15-bit rule of :mod:`minidni.tasks.curriculum`, which sums the
bits over an episode's scored steps and channels, mean over 100 episodes). With the
SG's learning rate at lr/10 (the trainer's own default) M never learnt on Copy:
cos(SG, target) ≈ 0.01, |SG|/|target| ≈ 0.06, and neither DNI nor BPTT passed
length 4 (N=1) in 30000 windows (H=64, seed 0). With ``--sg-lr`` equal to ``--lr``
(now the command's default) and H=64, DNI solves length 5 after ~4000 windows while
BPTT stays at 4 up to 20000 windows (seeds 0, 1, 2). Variations at H=64 (seed 0,
20000 windows, each with its BPTT twin): lr 1e-3, lr 1e-2, batch 128, sg-scale 1
all gave DNI 5 (first at 3000-7000 windows) and BPTT 4. With 128 units and 20000
windows (the defaults) DNI solved 6, 5, 6 and BPTT 4, 4, 4 (seeds 0, 1, 2; one BLAS
thread each: DNI 229-279 windows/s, BPTT 314-371 windows/s), the clearest gap for
the time, so the default command (DNI, then BPTT) takes about 2 min on one core.
Repeat Copy keeps 64 units and 6000 windows (as in ``figures/table2.md``).

**PTB defaults** (256 units, T=8): ``--sg-scale 0.02`` and ``--sg-lr 2e-4``. With
the Copy values (0.1, and M's lr equal to the core's) DNI never learnt PTB at 256
units: its SG settled at about 16 times its bootstrapped target with cosine -0.58
from window 1500 on, and the validation BPC stayed above 3.1 (T=3 and T=8, also
with ``--sg-lr 2e-4``: ``figures/table2_ptb256*.md``, ``figures/ptb_time.md``).
With 0.02 (and 0.05) it trained at T=3 and T=8 (the SG below its target's norm).
A per-window discount of 0.1 makes M's bootstrapped target a sum that need not
converge when the state is never reset (PTB has no episodes); we did not measure
the window Jacobian that decides it. (128 units trained with 0.1: ``table2_ptb.md``.)

**Reset** (``--reset-state``, default ``episode``). Measured at the defaults
(6000 windows, seeds 0 and 1): ``never`` solved the same lengths (BPTT 4, DNI 5)
but the cell state sat 2-3 times higher (final RMS per unit 0.9-1.9 vs 0.5-0.9,
peak 1.7-2.9 vs 1.0) and the current level's error was higher (7.7-10.9 vs
6.4-8.4 bits per episode); the SG's ratio and cosine to its target were alike
(0.34-0.37 vs 0.30-0.35, 0.04-0.05 vs 0.03-0.05). The unbounded growth PAPER.md §6
saw (H=256, longer runs) did not appear in 6000 windows at H=64 with clipping;
``episode`` is the default because it keeps the state bounded by construction and
gives each episode's output the same start, and a window that ends an episode
gets no SG (it has no future).

**SG targets** (``--sg-target``, :mod:`minidni.dni.recurrent`): ``bootstrap`` (the
paper's one-window target), ``nstep --sg-horizon n`` (the true losses of n windows
and the SG after them) or ``lambda --sg-horizon K --sg-lambda λ`` (the λ-return over
K windows). Both of the latter recompute K windows per window (about K+1 times the
time of a bootstrap window) and keep those windows in the checkpoint.

Writes into ``--out`` (per mode in ``--out/<mode>`` with ``--compare``):
``summary.json`` (result, steps, wall_seconds, steps_per_second, backend, every
option, the logs and SG diagnostics, warnings), ``copy_curriculum.png`` (or
``ptb_bpc.png``), ``sg_diagnostics.png`` (|δ̂|/|δ| and cos(δ̂, δ) of each synthetic
gradient with its bootstrapped target, cell-state RMS), and a checkpoint
(``checkpoint.npz``: arrays and metadata in one atomically replaced file) every
``--checkpoint-every`` steps, from which ``--resume`` continues exactly as an
uninterrupted run would. ``--resume`` without a checkpoint is an error; with
``--compare``, a mode that never reached its first checkpoint starts from step 0
and says so.

Timing: the step timer synchronises the device only at log, evaluation and
checkpoint points, so on a GPU no window waits for the host.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from minidni import backend
from minidni.cli import (TrainingDiverged, UsageError, add_common_args, check_memory, command_main,
                         comparable_options, make_parser as _make_parser, nonnegative_float, nonnegative_int,
                         positive_float, positive_int, prepare_out_dir, probability)
from minidni.dni.future import compare, future_gradient
from minidni.dni.recurrent import MODES, QUANTITY, RESETS, SG_TARGETS, RecurrentTrainer, char_loss, copy_loss
from minidni.io import CheckpointError, load_checkpoint, save_checkpoint, save_figure, write_json
from minidni.tasks import BPCMeter, CharStream, CopyTaskStream, Curriculum, EpisodeScorer, one_hot
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS
from minidni.tasks.curriculum import DEFAULT_WINDOW, UNITS

__all__ = ["main_copy", "main_repeat_copy", "main_ptb", "make_parser", "memory_needed", "check_before_work", "run"]

CHECKPOINT = "checkpoint.npz"
PHASES = ("staggered", "aligned")
PTB_VOCAB = 50  # characters in PTB (an upper bound for the memory estimate before the data is read)
DEFAULT_HORIZON = 3   # --sg-horizon of nstep/lambda targets when not given
DEFAULT_LAMBDA = 0.5  # --sg-lambda of the lambda target when not given

DRIFT_RATIO = 10.0   # warn when the SG is this many times larger than its target ...
DRIFT_LOGS = 3       # ... for this many consecutive logs
TASKS = {"copy": "copy", "repeat-copy": "repeat_copy", "ptb": "ptb"}
# per-task defaults, chosen by measurement (module docstring: Defaults)
DEFAULTS = {
    "copy": dict(T=3, hidden=128, batch=32, lr=3e-3, sg_lr=None, sg_scale=0.1, steps=20000, log_every=200),
    "repeat-copy": dict(T=3, hidden=64, batch=32, lr=3e-3, sg_lr=None, sg_scale=0.1, steps=6000, log_every=200),
    "ptb": dict(T=8, hidden=256, batch=32, lr=2e-3, sg_lr=2e-4, sg_scale=0.02, steps=3000, log_every=100),
}


def make_parser(task: str) -> argparse.ArgumentParser:
    """The options of ``python -m minidni.run <task>``."""
    d = DEFAULTS[task]
    p = _make_parser(f"python -m minidni.run {task}",
                     f"Train an LSTM on {task} with truncated BPTT, DNI or DNI + Aux (PAPER.md §2-3).")
    p.add_argument("--mode", choices=MODES, default="dni", help="training method")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=task != "ptb",
                   help="also train plain bptt with the same seed and options, and print both")
    p.add_argument("--T", type=positive_int, default=d["T"], help="truncation: steps per window")
    p.add_argument("--hidden", type=positive_int, default=d["hidden"], help="LSTM units (paper: 256 Copy, 1024 PTB)")
    p.add_argument("--batch", type=positive_int, default=d["batch"], help="parallel streams (batch rows)")
    p.add_argument("--lr", type=positive_float, default=d["lr"], help="Adam learning rate of the LSTM and heads")
    p.add_argument("--sg-lr", type=positive_float, default=d["sg_lr"],
                   help=f"Adam learning rate of the SG model (default: {d['sg_lr'] or 'the same as --lr'})")
    p.add_argument("--sg-scale", type=nonnegative_float, default=d["sg_scale"],
                   help="factor on the SG before it is injected (the discount per window of M's target)")
    p.add_argument("--aux-weight", type=nonnegative_float, default=0.1, help="weight λ of the dni-aux loss")
    p.add_argument("--aux-in-target", action="store_true",
                   help="dni-aux: let the aux loss's gradient into M's bootstrapped target (the old behaviour, "
                        "for comparison; by default M regresses on the task and SG gradient only)")
    p.add_argument("--sg-target", choices=SG_TARGETS, default="bootstrap",
                   help="M's regression target: bootstrap (the next window's losses and SG), nstep (the next "
                        "--sg-horizon windows' losses and the SG after them) or lambda (the λ-return over "
                        "--sg-horizon windows); nstep and lambda cost about K extra windows per window")
    p.add_argument("--sg-horizon", type=positive_int, default=None,
                   help=f"windows an nstep/lambda target looks ahead (default {DEFAULT_HORIZON})")
    p.add_argument("--sg-lambda", type=probability, default=None,
                   help=f"λ of the lambda target: 0 = bootstrap, 1 = nstep (default {DEFAULT_LAMBDA})")
    p.add_argument("--reset-state", choices=RESETS, default="episode",
                   help="zero a row's LSTM state when its episode ends, or never (ptb: only at a new pass); "
                        "never: same lengths at the defaults but a 2-3x larger cell state (module docstring)")
    p.add_argument("--clip", type=nonnegative_float, default=1.0, help="max global gradient norm per window (0: off)")
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="training windows")
    p.add_argument("--log-every", type=positive_int, default=d["log_every"],
                   help="windows between logs, divergence checks and SG diagnostics")
    p.add_argument("--sg-truth-windows", type=nonnegative_int, default=0,
                   help="at each log, compare the SG with the true future gradient over the next K windows by BPTT "
                        "on a copy of the stream (0: off; costs about 2K windows per log)")
    p.add_argument("--checkpoint-every", type=positive_int, default=1000, help="windows between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="show a progress bar (default: when stderr is a terminal)")
    if task != "ptb":
        p.add_argument("--phase", choices=PHASES, default="staggered",
                       help="staggered: each batch row first idles a random 0..num_steps-1 steps, so the rows' "
                            "episodes are out of phase with each other and the windows; aligned: every row starts "
                            "its first episode at step 0 and the rows stay in phase (the paper does not say which)")
        p.add_argument("--curriculum-unit", choices=UNITS, default="episode",
                       help="what the 0.15-bit threshold is measured per: an episode's total error, per scored "
                            "output step, or per scored bit (9 channels per step)")
        p.add_argument("--curriculum-window", type=positive_int, default=DEFAULT_WINDOW,
                       help="completed episodes of the current level the mean error is taken over")
    if task == "ptb":
        p.add_argument("--eval-every", type=positive_int, default=500, help="windows between validation evaluations")
        p.add_argument("--patience", type=positive_int, default=5,
                       help="stop after this many validation evaluations without improvement")
        p.add_argument("--eval-batch", type=positive_int, default=32, help="parallel streams when evaluating")
        p.add_argument("--eval-chars", type=positive_int, default=None,
                       help="score only the first ~N characters of valid/test (default: all)")
        p.add_argument("--no-verify", dest="verify", action="store_false",
                       help="skip the PTB files' SHA-256 check (generated test files)")
    add_common_args(p, default_out=f"runs/{task}")
    return p


def memory_needed(task: str, args: argparse.Namespace) -> int:
    """About how many bytes a run with ``args`` allocates (float32): parameters with their gradients and
    two Adam moments, plus one window's LSTM activations, their gradients and the logits."""
    D, O = (IN_CHANNELS, OUT_CHANNELS) if task != "ptb" else (PTB_VOCAB, PTB_VOCAB)
    H, B, T = args.hidden, args.batch, args.T
    params = 4 * H * (D + H + 1) + O * (H + 1) + 2 * (2 * H * 2 * H + 2 * H)  # LSTM, head, SG and aux head
    window = T * B * (16 * H + D + O)  # gates, h, c and their gradients; inputs; logits
    replayed = sg_horizon(args) if args.sg_target != "bootstrap" else 0  # nstep/lambda: K windows recomputed
    return 4 * (4 * params + (3 + replayed) * window)


def sg_horizon(args: argparse.Namespace) -> int:
    """The horizon of an nstep/lambda target: ``--sg-horizon``, or its default."""
    return DEFAULT_HORIZON if args.sg_horizon is None else args.sg_horizon


def sg_lambda(args: argparse.Namespace) -> float:
    """λ of the lambda target: ``--sg-lambda``, or its default."""
    return DEFAULT_LAMBDA if args.sg_lambda is None else args.sg_lambda


def _check_targets(args: argparse.Namespace) -> None:
    """One line for SG-target options that do not fit together."""
    target = args.sg_target
    if target != "bootstrap" and args.mode == "bptt":
        raise UsageError(f"--sg-target {target} needs --mode dni or dni-aux (bptt has no synthetic gradient)")
    if target == "bootstrap" and (args.sg_horizon is not None or args.sg_lambda is not None):
        given = "--sg-horizon" if args.sg_horizon is not None else "--sg-lambda"
        raise UsageError(f"{given} needs --sg-target nstep or lambda (bootstrap looks one window ahead)")
    if target == "nstep" and args.sg_lambda is not None:
        raise UsageError(f"--sg-lambda {args.sg_lambda} needs --sg-target lambda (nstep is λ = 1)")
    if target != "bootstrap" and args.aux_in_target:
        raise UsageError(f"--aux-in-target needs --sg-target bootstrap (the {target} target leaves the aux loss out)")


def check_before_work(task: str, args: argparse.Namespace) -> None:
    """Checks that need no data and write nothing: options that fit together, and the run fits in memory
    (one line saying how much it needs)."""
    _check_targets(args)
    check_memory(memory_needed(task, args), f"--hidden {args.hidden} --batch {args.batch} --T {args.T}"
                 + (f" --sg-horizon {sg_horizon(args)}" if args.sg_target != "bootstrap" else ""),
                 "use a smaller --hidden, --batch, --T or --sg-horizon")


def _check_ptb_T(args: argparse.Namespace, data) -> None:
    """A window cannot be longer than each batch row's share of the training characters."""
    per_row = (len(data.train) - 1) // args.batch
    if args.T > per_row:
        raise UsageError(f"--T {args.T} is longer than each of the {args.batch} training streams "
                         f"({per_row} characters each); accepted: 1 to {per_row}")


# -- one run -------------------------------------------------------------------------------------
class _Run:
    """A training run's mutable parts (trainer, streams, logs) and their checkpoint."""

    def __init__(self, args: argparse.Namespace, task: str, mode: str, out: Path, data=None):
        self.args, self.task, self.mode, self.out = args, task, mode, out
        self.xp = backend.set_backend(args.backend)
        self.copy = task != "ptb"
        if self.copy:
            self.curriculum = Curriculum(TASKS[task], unit=args.curriculum_unit, window=args.curriculum_window)
            self.stream = CopyTaskStream(self.curriculum, args.batch, rng=np.random.default_rng([args.seed, 1]),
                                         stagger=args.phase == "staggered")
            self.scorer = EpisodeScorer(args.batch)
            dims = (IN_CHANNELS, OUT_CHANNELS)
        else:
            self.data = data
            self.vocab = len(data.vocab)
            self.stream = CharStream(data.train, args.batch)
            dims = (self.vocab, self.vocab)
            self.best = {"valid_bpc": math.inf, "step": 0}
            self.best_params: dict | None = None
            self.bad_evals = 0
            self.evals: list[dict] = []
        sg_lr = args.lr if args.sg_lr is None else args.sg_lr
        self.trainer = RecurrentTrainer(*dims, args.hidden, mode=mode, lr=args.lr, sg_lr=sg_lr,
                                        sg_scale=args.sg_scale, aux_weight=args.aux_weight, clip=args.clip,
                                        reset=args.reset_state, rng=np.random.default_rng(args.seed),
                                        aux_in_target=args.aux_in_target, **self._targets(args, mode))
        self.logs: list[dict] = []
        self.warnings: list[str] = []
        self.drift = 0
        self.train_seconds = 0.0
        self.stopped_early = False

    @staticmethod
    def _targets(args: argparse.Namespace, mode: str) -> dict:
        """The trainer's SG-target arguments (a --compare bptt twin has no SG, so no target)."""
        if mode == "bptt" or args.sg_target == "bootstrap":
            return {}
        return {"sg_target": args.sg_target, "sg_horizon": sg_horizon(args), "sg_lambda": sg_lambda(args)}

    # -- checkpoint ------------------------------------------------------------------------
    def _options(self) -> dict:
        skip = {"resume", "progress", "out", "steps", "checkpoint_every", "compare", "data_dir"}
        return comparable_options({k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()
                                   if k not in skip})

    def save(self) -> None:
        arrays, meta = self.trainer.state_dict()
        host = {"options": self._options(), "mode": self.mode, "trainer": meta, "stream": self.stream.state_dict(),
                "logs": self.logs, "warnings": self.warnings, "drift": self.drift,
                "train_seconds": self.train_seconds}
        if self.copy:
            host.update(curriculum=self.curriculum.state_dict(), scorer=self.scorer.state_dict())
        else:
            host.update(best=self.best, bad_evals=self.bad_evals, evals=self.evals)
            if self.best_params is not None:
                arrays.update({f"best.{k}": v for k, v in self.best_params.items()})
        save_checkpoint(self.out / CHECKPOINT, arrays, host)

    def load(self) -> None:
        path = self.out / CHECKPOINT
        arrays, host = load_checkpoint(path)
        try:
            self._restore(arrays, host)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} does not match this command's {self.task} run "
                                  f"({type(exc).__name__}: {exc}); delete it or choose another --out") from None

    def _restore(self, arrays: dict, host: dict) -> None:
        if host["options"] != self._options() or host["mode"] != self.mode:
            diff = sorted(k for k in set(host["options"]) | set(self._options())
                          if host["options"].get(k) != self._options().get(k))
            raise UsageError(f"--resume: the checkpoint in {self.out} was made with different options ({', '.join(diff) or 'mode'}); "
                             f"rerun with the same options or another --out")
        best = {k[5:]: v for k, v in arrays.items() if k.startswith("best.")}
        self.trainer.load_state_dict({k: v for k, v in arrays.items() if not k.startswith("best.")}, host["trainer"])
        if self.copy:
            self.curriculum.load_state_dict(host["curriculum"])
            self.scorer.load_state_dict(host["scorer"])
        else:
            self.best, self.bad_evals, self.evals = host["best"], host["bad_evals"], host["evals"]
            self.best_params = best or None
        self.stream.load_state_dict(host["stream"])
        self.logs, self.warnings, self.drift = host["logs"], host["warnings"], host["drift"]
        self.train_seconds = host["train_seconds"]

    # -- training ----------------------------------------------------------------------------
    def window(self) -> None:
        """Train one window (and feed the curriculum with the episodes that ended in it)."""
        xp, tr = self.xp, self.trainer
        if self.copy:
            w = self.stream.next_window(self.args.T)
            target, mask = backend.to_device(w.target, xp), backend.to_device(w.mask, xp)
            out = {}

            def loss_grad(logits):
                loss, dlogits, out["bits"] = copy_loss(logits, target, mask)
                return loss, dlogits

            tr.train_window(backend.to_device(w.x, xp), loss_grad, episode_end=w.episode_end,
                            replay=partial(copy_loss, target=target, mask=mask))  # (nstep/lambda replay it)
            self.scorer.add(out["bits"], w.episode_end, w.level)  # on the device: scored at log time
        else:
            w = self.stream.next_window(self.args.T)
            if w.first:
                tr.reset_state()
            loss_grad = partial(char_loss, labels=backend.to_device(w.y, xp))
            tr.train_window(one_hot(w.x, self.vocab, xp=xp), loss_grad, replay=loss_grad)

    def score_episodes(self) -> None:
        """Copy: hand the episodes completed since the last log to the curriculum (one host copy).

        The curriculum therefore moves on at log points (every ``--log-every`` windows), never in between.
        """
        episodes = self.scorer.collect()
        bad = [e for e in episodes if not math.isfinite(e.bits)]
        if bad:
            raise TrainingDiverged(
                f"the episode error became NaN or inf ({bad[0].bits} bits) by step {self.trainer.step}; "
                "try a smaller --lr, --clip 1, a smaller --sg-lr or --sg-scale, or --reset-state episode")
        self.curriculum.update(episodes)

    def log(self, step: int, bar) -> dict:
        d = self.trainer.collect_diagnostics()
        bad = d.get("first_nonfinite")
        if bad is not None:
            at, field = bad
            last = self.logs[-1]["sg_ratio"] if self.logs else math.nan
            raise TrainingDiverged(
                f"{QUANTITY[field]} became NaN or inf at step {at} (the SG's ratio to its target at the last log: "
                f"{last:.3g}); try --sg-lr smaller, --sg-scale smaller, --reset-state episode, or --clip 1")
        if self.copy:  # (after the diagnostics, which name the first step where a value went bad)
            self.score_episodes()
        entry = {"step": step, "train_seconds": self.train_seconds, **{k: v for k, v in d.items() if k != "first_nonfinite"}}
        if self.copy:
            entry.update(level=self.curriculum.level, episode_steps=self.curriculum.num_steps(),
                         max_episode_length=self.curriculum.max_episode_length,
                         recent_bits=self.curriculum.recent_mean)
        else:
            entry["train_bpc"] = d["loss"] / self.args.T / math.log(2.0)
        if self.args.sg_truth_windows and self.trainer.uses_sg and self.trainer.pending is not None:
            entry.update(self.sg_against_the_truth(self.args.sg_truth_windows))
        self.logs.append(entry)
        ratio = d.get("sg_ratio", math.nan)
        self.drift = self.drift + 1 if ratio > DRIFT_RATIO else 0
        if self.drift >= DRIFT_LOGS and not self.warnings:
            msg = (f"WARNING: step {step}: the synthetic gradient has been more than {DRIFT_RATIO:g}x its "
                   f"bootstrapped target for {DRIFT_LOGS} logs (ratio {ratio:.1f}, cosine {d['sg_cosine']:.2f}); "
                   f"it may be diverging: try --sg-lr smaller, --sg-scale smaller or --reset-state episode")
            self.warnings.append(msg)
            bar.write(msg)
        return entry

    def _future_windows(self, K: int) -> list:
        """The next ``K`` windows of the real stream, from a copy of it (the training stream is not advanced)."""
        stream, xp, T, windows = copy.deepcopy(self.stream), self.xp, self.args.T, []
        for _ in range(K):
            w = stream.next_window(T)
            if self.copy:
                target, mask = backend.to_device(w.target, xp), backend.to_device(w.mask, xp)
                windows.append((backend.to_device(w.x, xp), partial(copy_loss, target=target, mask=mask),
                                w.episode_end))
            else:
                if w.first:  # a new pass starts from a zero state: the future ends here
                    break
                windows.append((one_hot(w.x, self.vocab, xp=xp),
                                partial(char_loss, labels=backend.to_device(w.y, xp)), None))
        return windows

    def sg_against_the_truth(self, K: int) -> dict:
        """cos and norm ratio of the SG injected at the last boundary against the true future gradient over the
        next K windows (undiscounted, no tail) and against the K-step bootstrapped return (:mod:`minidni.dni.future`)."""
        tr = self.trainer
        s, p, keep = tr.pending
        windows = self._future_windows(K)
        if not windows:
            return {}
        true = future_gradient(tr, tr.state, windows)
        ret = future_gradient(tr, tr.state, windows, discount=tr.sg_scale, tail=True)
        (c_true, r_true), (c_ret, r_ret) = compare(p, true, keep), compare(p, ret, keep)
        return {"sg_true_cosine": c_true, "sg_true_ratio": r_true, "sg_return_cosine": c_ret, "sg_return_ratio": r_ret,
                "sg_truth_windows": len(windows)}

    def evaluate(self, ids) -> float:
        """Bits per character of the model on ``ids`` (state carried across windows, reset once)."""
        tr, xp = self.trainer, self.xp
        ids = ids if self.args.eval_chars is None else ids[:self.args.eval_chars + 1]
        stream = CharStream(ids, min(self.args.eval_batch, len(ids) - 1))
        meter, state = BPCMeter(), None
        for w in stream.iter_pass(100):
            logits, state = tr.forward_logits(one_hot(w.x, self.vocab, xp=xp), state)
            loss, _ = char_loss(logits, backend.to_device(w.y, xp))
            meter.add(loss / w.x.shape[0], w.x.size)
        return meter.bpc

    def maybe_evaluate(self, step: int) -> bool:
        """PTB: validation BPC, best-so-far bookkeeping; returns True to stop early."""
        bpc = self.evaluate(self.data.valid)
        self.evals.append({"step": step, "valid_bpc": bpc, "train_seconds": self.train_seconds})
        if not math.isfinite(bpc):
            raise TrainingDiverged(f"the validation BPC became {bpc} at step {step}; try --lr smaller or --clip 1")
        if bpc < self.best["valid_bpc"]:
            self.best = {"valid_bpc": bpc, "step": step}
            self.best_params = {k: np.array(backend.to_numpy(v)) for k, v in self.trainer.core_params.items()}
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.args.patience

    def train(self) -> dict:
        from tqdm import tqdm  # noqa: PLC0415  (only the command line shows a bar)

        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if args.resume and (self.out / CHECKPOINT).exists():
            self.load()
        start_step = self.trainer.step
        wall0 = time.perf_counter()
        bar = tqdm(total=args.steps, initial=start_step, unit="step", disable=not args.progress, mininterval=1.0,
                   dynamic_ncols=True, desc=self.mode)
        step = start_step
        # NaN/inf are detected at each log (TrainingDiverged names the quantity and the step),
        # so NumPy's overflow warnings on the way there would only add noise
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self._loop(bar, step)
        except TrainingDiverged as exc:  # keep what was learnt about the failure, then stop
            bar.close()
            self.summary(time.perf_counter() - wall0, diverged=str(exc))
            raise
        bar.close()
        return self.summary(time.perf_counter() - wall0)

    def _loop(self, bar, step: int) -> None:
        """Train to ``--steps``. The device is synchronised only where the host needs a value (log,
        evaluation, checkpoint), and the training time is the wall time between those points."""
        args = self.args
        since = time.perf_counter()  # start of the training time not yet added to train_seconds

        def account() -> None:
            nonlocal since
            backend.synchronize(self.xp)
            now = time.perf_counter()
            self.train_seconds += now - since
            since = now

        while step < args.steps and not self.stopped_early:
            self.window()
            step = self.trainer.step
            bar.update(1)
            logging = step % args.log_every == 0 or step == args.steps
            evaluating = not self.copy and (step % args.eval_every == 0 or step == args.steps)
            checkpointing = step % args.checkpoint_every == 0
            if not (logging or evaluating or checkpointing):
                continue
            account()
            if logging:
                entry = self.log(step, bar)
                post = ({"N": self.curriculum.lengths()[0], "bits": f"{entry['recent_bits']:.2f}"} if self.copy
                        else {"bpc": f"{entry['train_bpc']:.3f}"})
                post["steps/s"] = f"{step / max(self.train_seconds, 1e-9):.0f}"
                bar.set_postfix(post, refresh=False)
            if evaluating:
                self.stopped_early = self.maybe_evaluate(step)
            if checkpointing:
                self.save()
            since = time.perf_counter()  # logging, evaluation and checkpoints are not training time

    def summary(self, wall: float, diverged: str | None = None) -> dict:
        """Write ``summary.json``; ``diverged``: the TrainingDiverged message of a stopped run."""
        args = self.args
        ratios = [e["sg_ratio"] for e in self.logs if math.isfinite(e.get("sg_ratio", math.nan))]
        cosines = [e["sg_cosine"] for e in self.logs if math.isfinite(e.get("sg_cosine", math.nan))]
        s = {"task": self.task, "mode": self.mode, "T": args.T, "steps": self.trainer.step,
             "wall_seconds": wall, "train_seconds": self.train_seconds,
             "steps_per_second": self.trainer.step / max(self.train_seconds, 1e-9), "backend": args.backend,
             "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
             "diagnostics": {"final_sg_ratio": ratios[-1] if ratios else None,
                             "max_sg_ratio": max(ratios) if ratios else None,
                             "final_sg_cosine": cosines[-1] if cosines else None,
                             **{f"mean_{k}": _mean_finite(e.get(k) for e in self.logs)
                                for k in ("sg_true_cosine", "sg_true_ratio", "sg_return_cosine", "sg_return_ratio")
                                if args.sg_truth_windows},
                             "final_cell_rms": self.logs[-1]["cell_rms"] if self.logs else None},
             "warnings": self.warnings, "diverged": diverged, "logs": self.logs}
        if self.copy:
            s.update(max_episode_length=self.curriculum.max_episode_length, level=self.curriculum.level,
                     curriculum=self.curriculum.state_dict())
        elif diverged is None:
            if self.best_params is not None:  # test at the best validation point
                for k, v in self.trainer.core_params.items():
                    v[...] = backend.to_device(self.best_params[k], self.xp)
            s.update(valid_bpc=self.best["valid_bpc"], best_step=self.best["step"], evals=self.evals,
                     test_bpc=self.evaluate(self.data.test), stopped_early=self.stopped_early)
        write_json(self.out / "summary.json", s)
        return s


def _mean_finite(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


# -- figures ---------------------------------------------------------------------------------------
def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _label(s: dict) -> str:
    o = s.get("options", {})
    target = o.get("sg_target", "bootstrap")
    if s["mode"] == "bptt" or target == "bootstrap":
        return f"{s['mode']} T={s['T']}"
    K = o["sg_horizon"] or DEFAULT_HORIZON
    lam = f", λ={DEFAULT_LAMBDA if o['sg_lambda'] is None else o['sg_lambda']:g}" if target == "lambda" else ""
    return f"{s['mode']} T={s['T']} {target} K={K}{lam}"


def _thousands(ax) -> None:
    """Step axis in thousands (``12k``): plain tick labels of 5-digit steps run into each other."""
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


def plot_progress(summaries: list[dict], path: Path) -> None:
    """Copy/Repeat Copy: solved episode length vs steps; PTB: train and validation BPC vs steps."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    task = summaries[0]["task"]
    for s in summaries:
        steps = [e["step"] for e in s["logs"]]
        if task == "ptb":
            line, = ax.plot(steps, [e["train_bpc"] for e in s["logs"]], alpha=0.6, label=f"{_label(s)} train")
            ax.plot([e["step"] for e in s["evals"]], [e["valid_bpc"] for e in s["evals"]], marker="o",
                    color=line.get_color(), label=f"{_label(s)} valid (test {s['test_bpc']:.3f})")
        else:
            line, = ax.step(steps, [e["max_episode_length"] for e in s["logs"]], where="post",
                            label=f"{_label(s)}: solved length (final {s['max_episode_length']})")
    ax.set_xlabel("training step (windows of T time steps)")
    if task == "ptb":
        ax.set_ylabel("bits per character")
        ax.set_title(f"PTB characters: BPC (H={summaries[0]['options']['hidden']})")
    else:
        ax.set_ylabel("longest episode length solved (N+3 / N·R+3)")
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # lengths are whole time steps
        ax.set_title(f"{task}: curriculum (H={summaries[0]['options']['hidden']}, "
                     f"batch {summaries[0]['options']['batch']}, 0.15-bit rule)")
    _thousands(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_sg(summaries: list[dict], path: Path) -> None:
    """|δ̂|/|δ| (log), cos(δ̂, δ) and cell-state RMS vs steps, for each run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    for s in summaries:
        steps = [e["step"] for e in s["logs"]]
        if s["mode"] != "bptt":
            line, = axes[0].plot(steps, [e["sg_ratio"] for e in s["logs"]], label=f"{_label(s)} vs bootstrapped target")
            axes[1].plot(steps, [e["sg_cosine"] for e in s["logs"]], label=f"{_label(s)} vs bootstrapped target",
                         color=line.get_color())
            truth = [e for e in s["logs"] if "sg_true_cosine" in e]
            if truth:
                K = truth[-1]["sg_truth_windows"]
                for ax, key in ((axes[0], "sg_true_ratio"), (axes[1], "sg_true_cosine")):
                    ax.plot([e["step"] for e in truth], [e[key] for e in truth], ls="--", color=line.get_color(),
                            label=f"{_label(s)} vs true gradient of the next {K} windows")
        axes[2].plot(steps, [e["cell_rms"] for e in s["logs"]], label=_label(s))
    axes[0].axhline(DRIFT_RATIO, color="red", ls="--", lw=1, label=f"warning level ({DRIFT_RATIO:g}x)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("|SG| / |reference gradient|")
    axes[0].set_title("synthetic gradient norm ratio")
    axes[1].set_ylabel("cos(SG, reference gradient)")
    axes[1].set_ylim(-0.2, 1.0)
    axes[1].set_title("synthetic gradient alignment")
    axes[2].set_ylabel("cell state RMS (per unit)")
    axes[2].set_title("LSTM cell state scale at window ends")
    for ax in axes:
        ax.set_xlabel("training step (windows)")
        _thousands(ax)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{summaries[0]['task']}: SG diagnostics (mean over each log interval)")
    save_figure(fig, path)
    plt.close(fig)


def _human(prog: str, s: dict) -> str:
    speed = f"{s['steps']} steps ({s['wall_seconds']:.0f} s, {s['steps_per_second']:.0f} steps/s)"
    if s["task"] == "ptb":
        return f"{prog}: {_label(s)}: test BPC {s['test_bpc']:.3f} (valid {s['valid_bpc']:.3f} at step {s['best_step']}) after {speed}"
    what = "Copy" if s["task"] == "copy" else "Repeat Copy"
    return f"{prog}: {_label(s)}: solved {what} episodes up to length {s['max_episode_length']} in {speed}"


def run(args: argparse.Namespace, task: str, data=None, prog: str = "minidni") -> list[dict]:
    """Train as ``args`` say (``--mode``, then bptt with ``--compare``); write outputs; return the summaries."""
    modes = [args.mode] + (["bptt"] if args.compare and args.mode != "bptt" else [])
    outs = {mode: args.out / mode if len(modes) > 1 else args.out for mode in modes}
    if args.resume:
        missing = [mode for mode in modes if not (outs[mode] / CHECKPOINT).is_file()]
        if len(missing) == len(modes):
            where = " or ".join(str(outs[m] / CHECKPOINT) for m in modes)
            raise UsageError(f"--resume: no checkpoint in {args.out} (expected {where}); "
                             "run without --resume to start from step 0")
        for mode in missing:
            print(f"{prog}: --resume: {mode} has no checkpoint in {outs[mode]} yet; it starts from step 0", flush=True)
    summaries = []
    for mode in modes:
        out = outs[mode]
        s = _Run(args, task, mode, out, data).train()
        fig_name = "ptb_bpc.png" if task == "ptb" else "copy_curriculum.png"
        plot_progress([s], out / fig_name)
        plot_sg([s], out / "sg_diagnostics.png")
        print(_human(prog, s), flush=True)
        summaries.append(s)
    if len(summaries) > 1:
        plot_progress(summaries, args.out / ("ptb_bpc.png" if task == "ptb" else "copy_curriculum.png"))
        plot_sg(summaries, args.out / "sg_diagnostics.png")
        write_json(args.out / "compare.json", {s["mode"]: {k: v for k, v in s.items() if k != "logs"} for s in summaries})
    return summaries


def _main(task: str, argv: Sequence[str] | None) -> int:
    parser = make_parser(task)
    def body(args: argparse.Namespace) -> int:
        check_before_work(task, args)
        data = None
        if task == "ptb":
            from minidni.data.ptb import load_ptb_chars  # noqa: PLC0415

            data = load_ptb_chars(args.data_dir, verify=args.verify)
            _check_ptb_T(args, data)
        if not args.resume:  # (a resume needs the folder with its checkpoint: run() says so if it is missing)
            prepare_out_dir(args.out)
        run(args, task, data, parser.prog)
        return 0

    return command_main(parser.prog, parser, argv, body)


def main_copy(argv: Sequence[str] | None = None) -> int:
    """``python -m minidni.run copy``."""
    return _main("copy", argv)


def main_repeat_copy(argv: Sequence[str] | None = None) -> int:
    """``python -m minidni.run repeat-copy``."""
    return _main("repeat-copy", argv)


def main_ptb(argv: Sequence[str] | None = None) -> int:
    """``python -m minidni.run ptb``."""
    return _main("ptb", argv)
