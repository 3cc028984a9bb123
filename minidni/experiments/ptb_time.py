"""``python -m minidni.run ptb-time``: PTB runs compared in training time (the paper's "twice as fast").

    python -m minidni.run ptb --mode bptt --T 40 --steps 4000 --eval-every 200 --no-compare --out runs/ptb_speed/bptt_T40
    python -m minidni.run ptb --mode dni --T 8 --steps 20000 --eval-every 1000 --no-compare --out runs/ptb_speed/dni_T8
    python -m minidni.run ptb-time runs/ptb_speed/bptt_T40 runs/ptb_speed/dni_T8 --name ptb_time

The paper: DNI at T = 8 reaches the PTB score of BPTT at T = 40 about twice as fast.
This command reads finished ``ptb`` runs (their ``summary.json``: the validation BPC
at every evaluation with the training seconds so far, which leave out evaluation,
logging and checkpoints) and writes ``<figures>/<name>.png`` (validation BPC against
training seconds and against characters seen, one line per run) and ``<name>.md``:
each run's best validation and test BPC, its training time and characters, and the
training time it took to first reach the **reference** BPC, the best validation BPC
of the first run given (``--reference`` picks another). Runs that train side by side
share the machine, so compare runs made under the same conditions (the markdown
records each run's windows/s).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from minidni.cli import UsageError, command_main, make_parser, nonnegative_int, output_path, prepare_out_dir
from minidni.experiments.grid import plain_name, read_summary
from minidni.io import portable_paths, save_figure, write_text

PROG = "python -m minidni.run ptb-time"


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Compare finished ptb runs by training time: validation BPC against training seconds.")
    p.add_argument("runs", nargs="+", type=Path, help="folders of finished ptb runs (each with summary.json)")
    p.add_argument("--reference", type=nonnegative_int, default=0,
                   help="index (0-based) of the run whose best validation BPC the others must reach")
    p.add_argument("--figures", type=output_path, default=Path("figures"), help="folder for NAME.md/.png")
    p.add_argument("--name", type=plain_name, default="ptb_time", help="file name (no suffix)")
    return p


def load_runs(folders: Sequence[Path]) -> list[dict]:
    """The summaries of finished ptb runs; UsageError naming a folder that holds none."""
    runs = []
    for folder in folders:
        s = read_summary(folder / "summary.json")
        if s.get("task") != "ptb" or not s.get("evals"):
            raise UsageError(f"{folder} holds no finished ptb run (summary.json with evaluations); "
                             "accepted: the --out folder of a python -m minidni.run ptb run")
        runs.append({**s, "folder": folder})
    return runs


def time_to_reach(evals: list[dict], bpc: float) -> float | None:
    """Training seconds at the first evaluation whose validation BPC is at most ``bpc``, else None."""
    return next((e["train_seconds"] for e in evals if e["valid_bpc"] <= bpc), None)


def _label(s: dict) -> str:
    o = s["options"]
    sg = "" if s["mode"] == "bptt" else f", sg-scale {o['sg_scale']:g}"
    return f"{s['mode']} T={s['T']} (H={o['hidden']}, B={o['batch']}{sg})"


def _characters(s: dict, step: int) -> int:
    return step * s["T"] * s["options"]["batch"]


def _markdown(runs: list[dict], ref: int, command: str) -> str:
    target = min(e["valid_bpc"] for e in runs[ref]["evals"])
    base = time_to_reach(runs[ref]["evals"], target)
    lines = ["# PTB in training time", "", f"Command: `{command}`", "",
             f"Reference: the best validation BPC of **{_label(runs[ref])}**, {target:.3f}. Training time excludes "
             "evaluation, logging and checkpoints.", "",
             "| run | windows | characters | windows/s | best valid BPC | test BPC | training s | "
             "s to reach the reference | vs the reference |", "|---|---|---|---|---|---|---|---|---|"]
    for s in runs:
        reach = time_to_reach(s["evals"], target)
        ratio = "–" if reach is None or base is None else f"{base / reach:.2f}x as fast"
        lines.append(f"| {_label(s)} | {s['steps']} | {_characters(s, s['steps']):,} | {s['steps_per_second']:.0f} | "
                     f"{s['valid_bpc']:.3f} | {s['test_bpc']:.3f} | {s['train_seconds']:.0f} | "
                     f"{'not reached' if reach is None else f'{reach:.0f}'} | {ratio} |")
    lines += ["", "Run folders: " + ", ".join(f"`{p}`" for p in portable_paths([str(s["folder"]) for s in runs])) + "."]
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict], ref: int, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    target = min(e["valid_bpc"] for e in runs[ref]["evals"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for s in runs:
        valid = [e["valid_bpc"] for e in s["evals"]]
        axes[0].plot([e["train_seconds"] for e in s["evals"]], valid, marker="o", ms=3, label=_label(s))
        axes[1].plot([_characters(s, e["step"]) / 1e6 for e in s["evals"]], valid, marker="o", ms=3, label=_label(s))
    for ax, xlabel in zip(axes, ("training seconds (evaluation excluded)", "characters seen (millions)")):
        ax.axhline(target, color="gray", ls="--", lw=1, label=f"reference: best of {_label(runs[ref])}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation bits per character")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("PTB: validation BPC against training time and against data")
    save_figure(fig, path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        if args.reference >= len(args.runs):
            raise UsageError(f"--reference {args.reference} is not one of the {len(args.runs)} runs given; "
                             f"accepted: 0 to {len(args.runs) - 1}")
        runs = load_runs(args.runs)
        prepare_out_dir(args.figures, option="--figures")
        if any(math.isnan(s.get("valid_bpc", math.nan)) for s in runs):
            raise UsageError("a run has no validation BPC (it diverged); drop it from the list")
        command = PROG + " " + shlex.join(portable_paths(list(sys.argv[1:] if argv is None else argv)))
        base = args.figures / args.name
        write_text(base.with_suffix(".md"), _markdown(runs, args.reference, command))
        _plot(runs, args.reference, base.with_suffix(".png"))
        print(f"{PROG}: wrote {base}.md, .png")
        return 0

    return command_main(PROG, _parser(), argv, body)
