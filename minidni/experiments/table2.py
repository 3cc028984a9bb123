"""``python -m minidni.run table2``: the Table 2 grid (task x mode x T x seeds) at a stated budget.

    python -m minidni.run table2                                 # Copy and Repeat Copy, T = 2..5, 3 seeds
    python -m minidni.run table2 --tasks ptb --data-dir ../shared/data --T 2 3 --name table2_ptb
    python -m minidni.run table2 --workers 2 --steps 20000 --resume

Every cell is one ``python -m minidni.run TASK --mode M --T T --seed S
--no-compare`` run (``OPENBLAS_NUM_THREADS=1``), ``--workers`` at a time, as a local
process or a Ray task (``--executor``, ``--ray-address`` for a cluster:
:mod:`minidni.experiments.grid`), its files landing in ``--out/TASK/MODE/T{T}/seed{S}``
on this machine as it finishes; a cell whose summary.json already has ``--steps``
steps and the same options is reused with ``--resume`` (with local processes, an
interrupted cell continues from its checkpoint). Each cell's
options are checked with its task's parser (and its memory need) before anything
starts, so a bad ``--extra`` is one error line, not a grid of failed runs; ``--extra``
cannot set what the grid sets itself (``--mode``, ``--T``, ``--seed``, ``--out`` ...),
and repeated tasks, modes, T or seeds are refused. A cell that fails anyway is
reported with its command and its last error line, marked failed in the table, and
makes the command exit with status 1. The result of a cell is the
longest episode length solved (Copy: N+3, Repeat Copy: N*R+3) or the test BPC
(PTB), averaged over seeds.

Writes ``<figures>/<name>.md`` (``--name`` default ``table2``: ours beside the
paper's numbers, the command, the budget, seeds and wall time, and whether DNI
beat BPTT at each T), ``<name>.json`` (every run's summary without its logs) and
``<name>.png`` (result vs T per task, one line per mode; the paper's dashed).
The paper trained to convergence; a CPU budget of a few thousand windows
solves far shorter sequences, so compare the ORDER of the modes at equal T,
not the absolute lengths.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from minidni import backend
from minidni.cli import UsageError, command_main, make_parser, output_path, positive_float, positive_int, seed_int
from minidni.dni.recurrent import MODES
from minidni.experiments import recurrent
from minidni.experiments.grid import Cell, CellResult, add_grid_args, check_distinct, check_extra, finished_summary
from minidni.experiments.grid import fresh_cell, parse_cell_options, plain_name, read_summary, run_grid, write_grid
from minidni.io import portable_paths, save_figure

PROG = "python -m minidni.run table2"
TASKS = ("copy", "repeat-copy", "ptb")
# Table 2 of the paper: {task: {mode: {T: value}}} (Copy / Repeat Copy: length solved; PTB: test BPC)
PAPER = {
    "copy": {"bptt": {2: 7, 3: 8, 4: 10, 5: 8}, "dni": {2: 16, 3: 14, 4: 18, 5: 18},
             "dni-aux": {2: 16, 3: 17, 4: 19, 5: 18}},
    "repeat-copy": {"bptt": {2: 7, 3: 5, 4: 19, 5: 23}, "dni": {2: 39, 3: 33, 4: 39, 5: 59},
                    "dni-aux": {2: 39, 3: 59, 4: 67, 5: 59}},
    "ptb": {"bptt": {2: 1.39, 3: 1.38, 4: 1.37, 5: 1.37, 8: 1.35, 20: 1.35, 40: 1.34},
            "dni": {2: 1.37, 3: 1.36, 4: 1.35, 5: 1.35, 8: 1.34},
            "dni-aux": {2: 1.37, 3: 1.36, 4: 1.35, 5: 1.35, 8: 1.33}},
}
METRIC = {"copy": "max_episode_length", "repeat-copy": "max_episode_length", "ptb": "test_bpc"}
_RUN_ONLY = {"resume", "progress", "out"}  # options that do not change a run's result
# options every cell's command line sets from the grid's own options: --extra may not repeat them
GRID_SET = ("--mode", "--T", "--seed", "--steps", "--compare", "--no-compare", "--progress", "--no-progress",
            "--out", "--backend", "--hidden", "--batch", "--lr", "--data-dir", "--resume")
COLORS = {"bptt": "tab:blue", "dni": "tab:orange", "dni-aux": "tab:green"}
OFFSET = {"bptt": -0.06, "dni": 0.0, "dni-aux": 0.06}


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Run the Table 2 grid (task x mode x T x seeds) at a stated budget and tabulate it.")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=["copy", "repeat-copy"], help="tasks (rows)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="training modes")
    p.add_argument("--T", type=positive_int, nargs="+", default=[2, 3, 4, 5], help="truncation lengths")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2], help="seeds per cell")
    p.add_argument("--steps", type=positive_int, default=8000, help="training windows per run (the budget)")
    p.add_argument("--hidden", type=positive_int, default=None, help="LSTM units (default: each task's default)")
    p.add_argument("--batch", type=positive_int, default=None, help="streams (default: each task's default)")
    p.add_argument("--lr", type=positive_float, default=None, help="core lr (default: each task's default)")
    add_grid_args(p, default_workers=max(1, (os.cpu_count() or 1)))
    p.add_argument("--extra", default="", help="more options passed to every run, e.g. \"--sg-lr 1e-3\"")
    p.add_argument("--resume", action="store_true", help="reuse finished cells, continue interrupted ones")
    p.add_argument("--out", type=output_path, default=Path("runs/table2"), help="folder of the individual runs")
    p.add_argument("--figures", type=output_path, default=Path("figures"), help="folder for NAME.md/.json/.png")
    p.add_argument("--name", type=plain_name, default="table2", help="file name (no suffix) of the table and figure")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder (PTB)")
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    return p


def _check_grid(args) -> None:
    """One line for a grid that would silently be something else: repeats, or --extra setting grid options."""
    check_distinct(args, ("tasks", "modes", "T", "seeds"))
    known = {o for task in args.tasks for o in recurrent.make_parser(task)._option_string_actions}
    check_extra(args.extra, known, GRID_SET, "--sg-lr 1e-3")


def _cells(args) -> list[dict]:
    cells = []
    for task in args.tasks:
        for mode in args.modes:
            for T in args.T:
                for seed in args.seeds:
                    cells.append({"task": task, "mode": mode, "T": T, "seed": seed,
                                  "out": args.out / task / mode / f"T{T}" / f"seed{seed}"})
    return cells


def _argv(args, cell: dict) -> list[str]:
    argv = [cell["task"], "--mode", cell["mode"], "--T", str(cell["T"]), "--seed", str(cell["seed"]),
            "--steps", str(args.steps), "--no-compare", "--no-progress", "--backend", args.backend]
    for name in ("hidden", "batch", "lr"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    if cell["task"] == "ptb" and args.data_dir is not None:
        argv += ["--data-dir", str(args.data_dir)]
    return argv + shlex.split(args.extra)


def _cell_options(args, cell: dict) -> dict:
    """The options the cell's run will have (its task's parser on its argv), as its summary.json stores them.

    Raises UsageError (one line) when the task's parser rejects them, e.g. a bad ``--extra``.
    """
    ns, options = parse_cell_options(recurrent.make_parser(cell["task"]),
                                     [*_argv(args, cell)[1:], "--out", str(cell["out"])], cell["task"], _RUN_ONLY)
    recurrent.check_before_work(cell["task"], ns)
    return options


def _finished(cell: dict, options: dict, steps: int) -> dict | None:
    """The cell's summary if it finished (all ``steps``, or stopped early) with these options, else None."""
    return finished_summary(cell["out"], options, steps)


def _reused(args, cell: dict) -> dict | None:
    """With ``--resume``, the record of a cell that already finished with the same options, else None."""
    if args.resume and (done := _finished(cell, cell["options"], args.steps)) is not None:
        return {**{k: v for k, v in done.items() if k != "logs"}, **_tag(cell), "reused": True}
    return None


def _tag(cell: dict) -> dict:
    return {k: cell[k] for k in ("task", "mode", "T", "seed")}


def _grid_cell(args, cell: dict, executor: str) -> Cell:
    """The cell's command; a local process continues from the cell's checkpoint when ``--resume`` finds one."""
    return fresh_cell(tuple(_tag(cell).values()), _argv(args, cell), cell["out"], executor=executor,
                      resume=args.resume, checkpoint=recurrent.CHECKPOINT)


def _record(cell: dict, grid_cell: Cell, result: CellResult) -> dict:
    """What the table needs of a finished cell: its summary without logs, or its command and error line."""
    summary = {k: v for k, v in read_summary(cell["out"] / "summary.json").items() if k != "logs"}
    if "options" in summary:
        summary["options"] = {**summary["options"], "out": str(cell["out"])}  # not a Ray worker's temporary folder
    if result.returncode != 0:
        summary.update(error=result.error, command="python -m minidni.run " + shlex.join(
            portable_paths([*grid_cell.argv, "--out", str(cell["out"])])))
    return {**summary, **_tag(cell), "reused": False}


def _aggregate(runs: list[dict]) -> dict:
    """{task: {mode: {T: {"mean", "values", "errors"}}}} of each task's metric over seeds."""
    table: dict = {}
    for r in runs:
        metric = METRIC[r["task"]]
        entry = table.setdefault(r["task"], {}).setdefault(r["mode"], {}).setdefault(
            r["T"], {"values": [], "errors": [], "wall_seconds": 0.0})
        if "error" in r or r.get(metric) is None:
            entry["errors"].append(r.get("error", "no result"))
        else:
            entry["values"].append(r[metric])
        entry["wall_seconds"] += r.get("wall_seconds", 0.0)
    for modes in table.values():
        for Ts in modes.values():
            for e in Ts.values():
                e["mean"] = sum(e["values"]) / len(e["values"]) if e["values"] else math.nan
    return table


def _fmt(task: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if task == "ptb" else f"{value:.3g}"


def _headline(task: str, modes: dict, mode: str) -> str | None:
    """'dni vs bptt: better at T=2, 3; equal at T=4; worse at T=5' (means over seeds), or None."""
    if mode not in modes or "bptt" not in modes:
        return None
    verdict: dict[str, list] = {"better": [], "equal": [], "worse": []}
    for T in sorted(set(modes[mode]) & set(modes["bptt"])):
        ours, base = modes[mode][T]["mean"], modes["bptt"][T]["mean"]
        if math.isnan(ours) or math.isnan(base):
            continue
        gain = base - ours if task == "ptb" else ours - base  # PTB: lower BPC is better
        verdict["better" if gain > 0 else "worse" if gain < 0 else "equal"].append(str(T))
    parts = [f"{k} at T={', '.join(v)}" for k, v in verdict.items() if v]
    return f"{mode} vs bptt (mean over seeds): " + ("; ".join(parts) or "no comparable cells")


def _ratio_line(task: str, modes: dict, mode: str) -> str | None:
    """'dni / bptt length (mean over seeds): T=2 1.2x (paper 2.3x), ...' for Copy-like tasks, or None."""
    if task == "ptb" or mode not in modes or "bptt" not in modes:
        return None
    parts = []
    for T in sorted(set(modes[mode]) & set(modes["bptt"])):
        ours, base = modes[mode][T]["mean"], modes["bptt"][T]["mean"]
        paper = PAPER[task][mode].get(T, math.nan) / PAPER[task]["bptt"].get(T, math.nan)
        if base > 0 and not math.isnan(ours):
            parts.append(f"T={T} {ours / base:.2f}x" + ("" if math.isnan(paper) else f" (paper {paper:.2f}x)"))
    return f"{mode} / bptt length (means over seeds): " + ", ".join(parts) if parts else None


def _truth_line(task: str, runs: list[dict], mode: str) -> str | None:
    """'dni: cos(SG, true gradient of the next K windows) T=2 0.041, ...' when the runs measured it
    (``--sg-truth-windows K`` in ``--extra``), means over log points and seeds; else None."""
    by_T: dict[int, list[float]] = {}
    for r in runs:
        value = r.get("diagnostics", {}).get("mean_sg_true_cosine")
        if r["task"] == task and r["mode"] == mode and value is not None:
            by_T.setdefault(r["T"], []).append(value)
    if not by_T:
        return None
    K = next(r["options"]["sg_truth_windows"] for r in runs if r["task"] == task and r["mode"] == mode)
    return (f"{mode}: cos(SG, true gradient of the next {K} windows), mean over log points and seeds: "
            + ", ".join(f"T={T} {sum(v) / len(v):.3f}" for T, v in sorted(by_T.items())))


def _options_line(runs: list[dict], task: str) -> str | None:
    o = next((r["options"] for r in runs if r["task"] == task and "options" in r), None)
    if o is None:
        return None
    return (f"Options: hidden {o['hidden']}, batch {o['batch']}, lr {o['lr']}, sg-lr {o['sg_lr'] or 'as lr'}, "
            f"sg-scale {o['sg_scale']}, aux-weight {o['aux_weight']}, reset-state {o['reset_state']}, "
            f"clip {o['clip']}" + ("" if task == "ptb" else
                                   f", phase {o.get('phase', 'staggered')}, curriculum 0.15 bits per "
                                   f"{o.get('curriculum_unit', 'episode')} over {o.get('curriculum_window', 100)} "
                                   "episodes") + ".")


def _markdown(args, command: str, table: dict, runs: list[dict], wall: float) -> str:
    run_seconds = sum(r.get("wall_seconds", 0.0) for r in runs)
    reused = sum(bool(r.get("reused")) for r in runs)
    lines = ["# Table 2 (recurrent DNI): ours beside the paper", "",
             f"Command: `{command}`", "",
             f"Budget: **{args.steps} training windows per run** (the paper trained to convergence), "
             f"seeds {', '.join(map(str, args.seeds))} (mean shown, each seed in brackets), {args.backend}; "
             f"grid wall time {wall / 60:.1f} min with {args.workers} parallel workers "
             f"({len(runs)} runs, {reused} reused from an earlier invocation; "
             f"{run_seconds / 60:.1f} min of run time in all).", "",
             "Copy / Repeat Copy: longest episode length solved under the 0.15-bit curriculum "
             "(N+3 / N·R+3; 0 = not even N=1). PTB: test bits per character. "
             "Paper in parentheses. Compare the order of the modes at equal T; absolute numbers need the "
             "paper's budget."]
    for task, modes in table.items():
        Ts = sorted({T for m in modes.values() for T in m})
        lines += ["", f"## {task}", ""]
        if (opts := _options_line(runs, task)) is not None:
            lines += [opts, ""]
        lines += ["| mode | " + " | ".join(f"T={T} ours (paper)" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for mode in MODES:
            if mode not in modes:
                continue
            cells = []
            for T in Ts:
                e = modes[mode].get(T)
                ours = "–" if e is None else _fmt(task, e["mean"])
                seeds = "" if e is None or len(e["values"]) < 2 else " [" + ", ".join(_fmt(task, v) for v in e["values"]) + "]"
                failed = "" if e is None or not e["errors"] else f" ({len(e['errors'])} failed)"
                cells.append(f"{ours}{seeds}{failed} ({_fmt(task, PAPER[task].get(mode, {}).get(T))})")
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        heads = [h for m in MODES[1:] for h in (_headline(task, modes, m), _ratio_line(task, modes, m),
                                                 _truth_line(task, runs, m)) if h is not None]
        if heads:
            lines += [""] + [f"- {h}" for h in heads]
        if task == "ptb":
            lines += ["", "Validation BPC at the best validation point (the test BPC above uses its parameters):"]
            for r in sorted((r for r in runs if r["task"] == "ptb" and "valid_bpc" in r),
                            key=lambda r: (MODES.index(r["mode"]), r["T"], r["seed"])):
                lines.append(f"- {r['mode']} T={r['T']} seed {r['seed']}: valid {r['valid_bpc']:.3f} at window "
                             f"{r['best_step']}, test {r['test_bpc']:.3f}, {r['steps']} windows"
                             f"{' (stopped early)' if r.get('stopped_early') else ''}")
    errors = [r for r in runs if "error" in r]
    if errors:
        lines += ["", "Failed runs (not counted in the means above):"] + [
            f"- {r['task']} {r['mode']} T={r['T']} seed {r['seed']}: `{r['command']}`: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _plot(table: dict, args, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(table), figsize=(max(6.0, 5.2 * len(table)), 4), layout="constrained", squeeze=False)
    for ax, (task, modes) in zip(axes[0], table.items()):
        ticks: set = set()
        for mode, Ts in modes.items():
            xs = sorted(Ts)
            shift = OFFSET[mode]  # modes that tie would hide each other
            ax.plot([T + shift for T in xs], [Ts[T]["mean"] for T in xs], marker="o", color=COLORS[mode],
                    label=f"{mode} (ours, mean of {len(args.seeds)} seeds)")
            paper = PAPER[task].get(mode, {})
            px = [T for T in sorted(paper) if T in Ts or task != "ptb"]
            ax.plot(px, [paper[T] for T in px], ls="--", marker="x", color=COLORS[mode], alpha=0.6,
                    label=f"{mode} (paper)")
            ticks |= set(xs) | set(px)
        ax.set_xticks(sorted(ticks))
        ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
        ax.set_xlabel("truncation T (time steps per window; ours shifted a little per mode)")
        if task == "ptb":
            ax.set_ylabel("test bits per character")
        else:  # ours (a few steps) and the paper's (up to 67) on one readable axis
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_yticks([3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 60])
            ax.set_ylabel("longest episode length solved (steps, log scale)")
        ax.set_title(f"{task}: {args.steps} windows per run" + ("" if task == "ptb" else " (paper: to convergence)"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Table 2: truncated BPTT vs DNI vs DNI + Aux")
    save_figure(fig, path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args: argparse.Namespace) -> int:
        if "ptb" in args.tasks and args.data_dir is None and not os.environ.get("MINIDNI_DATA"):
            raise UsageError("--tasks ptb needs --data-dir (or $MINIDNI_DATA) pointing at the folder with ptb/")
        _check_grid(args)
        backend.set_backend(args.backend)  # CuPy asked for but unusable: one line now, not one per cell
        backend.set_backend("numpy")
        cells = _cells(args)
        for cell in cells:  # every run's options checked before any starts
            cell["options"] = _cell_options(args, cell)

        def line(r: dict) -> str:
            res = r.get(METRIC[r["task"]]) if "error" not in r else f"FAILED: {r['error']} (command: {r['command']})"
            return f"{r['task']} {r['mode']} T={r['T']} seed {r['seed']}: {res}"

        runs, wall = run_grid(PROG, args, cells, what=f"{len(cells)} runs of {args.steps} windows",
                              reused=lambda cell: _reused(args, cell),
                              grid_cell=lambda cell, executor: _grid_cell(args, cell, executor),
                              record=_record, line=line)
        table = _aggregate(runs)
        command = PROG + " " + shlex.join(portable_paths(argv))
        payload = {"command": command, "budget": {"steps": args.steps, "seeds": args.seeds, "workers": args.workers,
                                                  "wall_seconds": wall},
                   "table": table, "paper": PAPER, "runs": portable_paths(runs)}
        return write_grid(PROG, args.figures / args.name, runs, wall, markdown=_markdown(args, command, table, runs, wall),
                          payload=payload, plot=lambda path: _plot(table, args, path))

    return command_main(PROG, _parser(), argv, body)
