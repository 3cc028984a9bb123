"""``python -m minidni.run bp-lambda``: do targets that mix backpropagated and predicted credit help? (BP(λ))

    python -m minidni.run bp-lambda                        # Copy at T=3 and the MNIST FCN, 3 seeds
    python -m minidni.run bp-lambda --parts copy --steps 20000 --extra "--phase aligned --curriculum-unit step"
    python -m minidni.run bp-lambda --parts mnist --data-dir ../shared/data --mnist-steps 3000 --resume

Two parts, every run one ``python -m minidni.run copy|mnist`` command (``OPENBLAS_NUM_THREADS=1``),
``--workers`` at a time as local processes or Ray tasks (:mod:`minidni.experiments.grid`),
each in its own folder under ``--out``:

``copy``
    DNI on Copy at truncation ``--T`` with M regressed on the bootstrapped target, on
    n-step targets (``--nsteps``) and on λ-returns over ``--horizon`` windows
    (``--lambdas``), x ``--seeds`` (:mod:`minidni.dni.recurrent`, Targets). Per run: the
    longest episode solved, the SG's cosine with the true future gradient over the next
    ``--truth-windows`` windows (the copy command's ``--sg-truth-windows``: its mean over
    the run's logs, ``diagnostics.mean_sg_true_cosine`` of summary.json) and windows/s.
    ``--extra`` passes protocol options to every Copy run (``--phase``, ``--curriculum-unit``, ...).
``mnist``
    the MNIST FCN (``--mnist-layers``, every-layer DNI) trained with BP(λ) for each
    ``--mnist-lambdas`` (λ = 0 is DNI, λ = 1 backprop) x ``--seeds``: the final test error,
    the mean cosine of the synthetic gradients with the true ones at the last log, steps/s
    (:mod:`minidni.dni.feedforward`, BP(λ)).

Writes ``<figures>/<name>.md`` (tables with the command, seeds, budget and wall time, each
run's values in brackets), ``<name>.json`` (every run's summary without its logs) and
``<name>.png``. With ``--resume`` a run whose summary.json holds the same options and all its
steps is reused (with local processes an interrupted one continues from its checkpoint).
Each run's options are checked with its command's own parser before anything starts; a run
that fails is listed with its command and makes the command exit 1.
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
from minidni.cli import (command_main, int_range, make_parser, output_path, positive_float, positive_int, probability,
                         seed_int)
from minidni.experiments import feedforward, recurrent
from minidni.experiments.grid import Cell, CellResult, add_grid_args, check_distinct, check_extra, finished_summary
from minidni.experiments.grid import fresh_cell, parse_cell_options, plain_name, read_summary, run_grid, write_grid
from minidni.io import portable_paths, save_figure

PROG = "python -m minidni.run bp-lambda"
PARTS = ("copy", "mnist")
MAX_HORIZON = 64  # windows a target may look ahead (each costs about one extra window of compute)
_RUN_ONLY = ("resume", "progress", "out")  # options that do not change a run's result
# options every Copy run's command line sets from the grid's own options: --extra may not repeat them
GRID_SET = ("--mode", "--T", "--seed", "--steps", "--compare", "--no-compare", "--progress", "--no-progress",
            "--out", "--backend", "--hidden", "--batch", "--lr", "--data-dir", "--resume", "--sg-target",
            "--sg-horizon", "--sg-lambda", "--sg-truth-windows")


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Copy with bootstrapped, n-step and λ-return SG targets, and the MNIST FCN with BP(λ).")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which experiments to run")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2], help="seeds of every configuration")
    p.add_argument("--T", type=positive_int, default=3, help="Copy: truncation (steps per window)")
    p.add_argument("--nsteps", type=int_range(2, MAX_HORIZON), nargs="*", default=[2, 3],
                   help="Copy: n of the n-step targets (n = 1 is the bootstrapped target, always run)")
    p.add_argument("--lambdas", type=probability, nargs="*", default=[0.25, 0.5, 0.75],
                   help="Copy: λ of the λ-return targets")
    p.add_argument("--horizon", type=int_range(2, MAX_HORIZON), default=4,
                   help="Copy: windows the λ-returns are truncated at")
    p.add_argument("--truth-windows", type=int_range(1, MAX_HORIZON), default=4,
                   help="Copy: windows of the true future gradient the SG is compared with at each log")
    p.add_argument("--steps", type=positive_int, default=20000, help="Copy: training windows per run")
    p.add_argument("--hidden", type=positive_int, default=None, help="Copy: LSTM units (default: the copy default)")
    p.add_argument("--batch", type=positive_int, default=None, help="Copy: streams (default: the copy default)")
    p.add_argument("--lr", type=positive_float, default=None, help="Copy: core lr (default: the copy default)")
    p.add_argument("--extra", default="", help="more options for every Copy run, e.g. \"--phase aligned\"")
    p.add_argument("--mnist-lambdas", type=probability, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="MNIST: λ of BP(λ) (0: every-layer DNI, 1: backprop)")
    p.add_argument("--mnist-layers", type=int_range(2, feedforward.MAX_LAYERS), default=3, help="MNIST: FCN depth")
    p.add_argument("--mnist-steps", type=positive_int, default=2000, help="MNIST: training steps per run")
    p.add_argument("--mnist-batch", type=positive_int, default=128, help="MNIST: minibatch size")
    p.add_argument("--mnist-lr", type=positive_float, default=1e-3, help="MNIST: Adam lr of modules and SGs")
    p.add_argument("--sg-width", type=positive_int, default=256,
                   help="MNIST: units of the synthesizers' two hidden layers (paper: 1024)")
    add_grid_args(p, default_workers=max(1, (os.cpu_count() or 1)))
    p.add_argument("--resume", action="store_true", help="reuse finished runs, continue interrupted ones")
    p.add_argument("--out", type=output_path, default=Path("runs/bp_lambda"), help="folder of the individual runs")
    p.add_argument("--figures", type=output_path, default=Path("figures"), help="folder for NAME.md/.json/.png")
    p.add_argument("--name", type=plain_name, default="bp_lambda", help="file name (no suffix) of the table and figure")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder holding mnist/")
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    return p


# -- the cells -----------------------------------------------------------------------------------
def _copy_targets(args) -> list[tuple[str, str, list[str]]]:
    """``(label, folder, target options)`` of each Copy configuration."""
    targets = [("bootstrap", "bootstrap", [])]
    targets += [(f"nstep n={n}", f"nstep{n}", ["--sg-target", "nstep", "--sg-horizon", str(n)]) for n in args.nsteps]
    targets += [(f"lambda λ={lam:g} K={args.horizon}", f"lambda{lam:g}-K{args.horizon}",
                 ["--sg-target", "lambda", "--sg-horizon", str(args.horizon), "--sg-lambda", str(lam)])
                for lam in args.lambdas]
    return targets


def _copy_argv(args, target: list[str], seed: int) -> list[str]:
    argv = ["copy", "--mode", "dni", "--T", str(args.T), "--seed", str(seed), "--steps", str(args.steps),
            "--no-compare", "--no-progress", "--backend", args.backend, "--sg-truth-windows", str(args.truth_windows)]
    for name in ("hidden", "batch", "lr"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    return argv + target + shlex.split(args.extra)


def _mnist_argv(args, lam: float, seed: int) -> list[str]:
    steps = args.mnist_steps
    argv = ["mnist", "--model", "fcn", "--layers", str(args.mnist_layers), "--method", "dni",
            "--sg-target", "bp-lambda", "--sg-lambda", str(lam), "--steps", str(steps), "--batch", str(args.mnist_batch),
            "--lr", str(args.mnist_lr), "--lr-decay-steps", "--eval-every", str(max(1, steps // 4)),
            "--log-every", str(max(1, steps // 20)), "--sg-width", str(args.sg_width), "--seed", str(seed),
            "--no-progress", "--backend", args.backend]
    return argv + (["--data-dir", str(args.data_dir)] if args.data_dir else [])


def _cells(args) -> list[dict]:
    """Every run: part, label, seed, argv (without --out), out, steps."""
    cells = []
    if "copy" in args.parts:
        for label, folder, target in _copy_targets(args):
            for seed in args.seeds:
                cells.append({"part": "copy", "label": label, "seed": seed, "argv": _copy_argv(args, target, seed),
                              "out": args.out / "copy" / folder / f"seed{seed}", "steps": args.steps})
    if "mnist" in args.parts:
        for lam in args.mnist_lambdas:
            for seed in args.seeds:
                cells.append({"part": "mnist", "label": f"λ={lam:g}", "lam": lam, "seed": seed,
                              "argv": _mnist_argv(args, lam, seed), "out": args.out / "mnist" / f"lambda{lam:g}" /
                              f"seed{seed}", "steps": args.mnist_steps})
    return cells


def _check_grid(args) -> None:
    """Repeats (the same run twice in one folder) and --extra setting what the grid sets: one line each."""
    check_distinct(args, ("parts", "seeds", "nsteps", "lambdas", "mnist_lambdas"))
    check_extra(args.extra, set(recurrent.make_parser("copy")._option_string_actions), GRID_SET, "--phase aligned")


def _cell_options(cell: dict) -> dict:
    """The options the run will have, as its summary.json stores them; UsageError if its command rejects them."""
    task = cell["part"]
    parser = recurrent.make_parser(task) if task == "copy" else feedforward.make_parser(task)
    ns, options = parse_cell_options(parser, [*cell["argv"][1:], "--out", str(cell["out"])], task, _RUN_ONLY)
    if task == "copy":
        recurrent.check_before_work(task, ns)
    else:
        feedforward.check_options(ns)
        feedforward.check_fits(ns, task)
    return options


def _grid_cell(args, cell: dict, executor: str) -> Cell:
    """The cell's command; a local process continues from its checkpoint when ``--resume`` finds one."""
    return fresh_cell((cell["part"], cell["label"], cell["seed"]), cell["argv"], cell["out"], executor=executor,
                      resume=args.resume)


def _tag(cell: dict) -> dict:
    return {k: cell[k] for k in ("part", "label", "seed")}


def _record(cell: dict, result: CellResult | None) -> dict:
    """What the tables need of a finished run (None: reused): its values, or its command and error line."""
    s = read_summary(cell["out"] / "summary.json")
    r = {**_tag(cell), "reused": result is None, "wall_seconds": s.get("wall_seconds", 0.0),
         "steps": s.get("steps"), "options": {**s.get("options", {}), "out": str(cell["out"])}}
    if result is not None and result.returncode != 0:
        return {**r, "error": result.error,
                "command": "python -m minidni.run " + shlex.join(portable_paths([*cell["argv"], "--out", str(cell["out"])]))}
    if cell["part"] == "copy":
        d = s.get("diagnostics", {})
        return {**r, "solved": s.get("max_episode_length"), "true_cosine": d.get("mean_sg_true_cosine"),
                "return_cosine": d.get("mean_sg_return_cosine"), "target_cosine": d.get("final_sg_cosine"),
                "speed": s.get("steps_per_second")}
    logs = s.get("curves", {}).get("logs", [])
    cosines = list(logs[-1]["cosine"].values()) if logs and logs[-1].get("cosine") else []
    return {**r, "lam": cell["lam"], "test_error": s.get("test_error_percent"),
            "true_cosine": sum(cosines) / len(cosines) if cosines else None, "speed": s.get("steps_per_second")}


# -- tables and figure ---------------------------------------------------------------------------
METRICS = {"copy": ("solved", "true_cosine", "return_cosine", "speed"), "mnist": ("test_error", "true_cosine", "speed")}


def _aggregate(runs: list[dict]) -> dict:
    """{part: {label: {metric: {"mean", "values"}, "errors": [...]}}} over seeds, labels in run order."""
    table: dict = {}
    for r in runs:
        entry = table.setdefault(r["part"], {}).setdefault(r["label"], {"errors": []})
        if "error" in r:
            entry["errors"].append(r["error"])
            continue
        for m in METRICS[r["part"]]:
            values = entry.setdefault(m, {"values": []})["values"]
            if r.get(m) is not None and math.isfinite(r[m]):
                values.append(r[m])
    for labels in table.values():
        for entry in labels.values():
            for m, e in entry.items():
                if m != "errors":
                    e["mean"] = sum(e["values"]) / len(e["values"]) if e["values"] else math.nan
    return table


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _speed(value) -> str:
    return _fmt(value) if value is None or math.isnan(value) or value < 100 else f"{value:.0f}"


def _cell(entry: dict, metric: str, digits: int = 3) -> str:
    e = entry.get(metric)
    if e is None:
        return "–"
    seeds = " [" + ", ".join(_fmt(v, digits) for v in e["values"]) + "]" if len(e["values"]) > 1 else ""
    return _fmt(e["mean"], digits) + seeds


def _markdown(args, command: str, table: dict, runs: list[dict], wall: float) -> str:
    run_seconds = sum(r.get("wall_seconds") or 0.0 for r in runs)
    lines = ["# BP(λ): synthetic-gradient targets that mix backpropagated and predicted credit", "",
             f"Command: `{command}`", "",
             f"Seeds {', '.join(map(str, args.seeds))} (mean shown, each seed in brackets), {args.backend}; wall time "
             f"{wall / 60:.1f} min with {args.workers} parallel workers ({len(runs)} runs, "
             f"{sum(r['reused'] for r in runs)} reused; {run_seconds / 60:.1f} min of run time in all)."]
    if "copy" in table:
        o = next((r["options"] for r in runs if r["part"] == "copy" and "hidden" in r["options"]), {})
        base = table["copy"].get("bootstrap", {}).get("speed", {}).get("mean", math.nan)
        lines += ["", f"## Copy at T={args.T}: {args.steps} windows per run", "",
                  f"DNI, hidden {o.get('hidden')}, batch {o.get('batch')}, lr {o.get('lr')}, sg-scale (γ) "
                  f"{o.get('sg_scale')}, phase {o.get('phase')}, curriculum 0.15 bits per {o.get('curriculum_unit')}, "
                  f"reset {o.get('reset_state')}; extra options: `{args.extra or 'none'}`. Solved: the longest "
                  "episode length solved (N+3). cos(SG, truth): the SG against the true (undiscounted) gradient of "
                  f"the next {args.truth_windows} windows, mean over the run's logs; cos(SG, return): against the "
                  f"{args.truth_windows}-step bootstrapped return. Cost: windows/s relative to bootstrap.", "",
                  "| target | solved | cos(SG, truth) | cos(SG, return) | windows/s | cost |", "|---|---|---|---|---|---|"]
        for label, e in table["copy"].items():
            speed = e.get("speed", {}).get("mean", math.nan)
            failed = f" ({len(e['errors'])} failed)" if e["errors"] else ""
            lines.append(f"| {label}{failed} | {_cell(e, 'solved')} | {_cell(e, 'true_cosine', 2)} | "
                         f"{_cell(e, 'return_cosine', 2)} | {_speed(speed)} | {_fmt(base / speed, 2)}x |")
    if "mnist" in table:
        lines += ["", f"## MNIST FCN-{args.mnist_layers}, every-layer DNI trained with BP(λ): {args.mnist_steps} "
                      "steps per run", "",
                  f"Batch {args.mnist_batch}, Adam lr {args.mnist_lr:g} (modules and synthesizers, no decay), "
                  f"synthesizers 2x{args.sg_width} units with BN. λ = 0 is every-layer DNI, λ = 1 backprop; for "
                  "λ > 0 every module waits for the backward from the loss. cos(SG, truth): the synthesizers' "
                  "predictions against the true gradients at the last log, mean over the synthesizers.", "",
                  "| λ | test error (%) | cos(SG, truth) | steps/s |", "|---|---|---|---|"]
        for label, e in table["mnist"].items():
            failed = f" ({len(e['errors'])} failed)" if e["errors"] else ""
            lines.append(f"| {label[2:]}{failed} | {_cell(e, 'test_error')} | {_cell(e, 'true_cosine', 2)} | "
                         f"{_speed(e.get('speed', {}).get('mean', math.nan))} |")
    errors = [r for r in runs if "error" in r]
    if errors:
        lines += ["", "Failed runs (not counted above):"] + [
            f"- {r['part']} {r['label']} seed {r['seed']}: `{r['command']}`: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _points(ax, runs: list[dict], part: str, metric: str, x_of) -> None:
    """Each run of ``part`` as a grey dot at ``x_of(run)``."""
    for r in runs:
        if r["part"] == part and r.get(metric) is not None:
            ax.plot(x_of(r), r[metric], "o", color="tab:gray", alpha=0.6, ms=4)


def _plot(table: dict, runs: list[dict], args, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [("copy", "solved", "longest episode length solved (N+3)"),
              ("copy", "true_cosine", f"cos(SG, true gradient of {args.truth_windows} windows)"),
              ("mnist", "test_error", "test error (%)")]
    panels = [p for p in panels if p[0] in table]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), layout="constrained", squeeze=False)
    for ax, (part, metric, ylabel) in zip(axes[0], panels):
        labels = list(table[part])
        if part == "copy":
            x_of = {label: i for i, label in enumerate(labels)}
            ax.bar(range(len(labels)), [table[part][k].get(metric, {}).get("mean", math.nan) for k in labels],
                   color="tab:orange", alpha=0.6, label=f"mean of {len(args.seeds)} seeds")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
            ax.set_xlabel("target of the synthetic gradient model M")
            ax.set_title(f"Copy, T={args.T}, {args.steps} windows")
            _points(ax, runs, part, metric, lambda r: x_of[r["label"]])
        else:
            lams = [float(k[2:]) for k in labels]
            ax.plot(lams, [table[part][k][metric]["mean"] for k in labels], marker="s", color="tab:green",
                    label=f"mean of {len(args.seeds)} seeds")
            ax.set_xlabel("λ (0: every-layer DNI, 1: backprop)")
            ax.set_title(f"MNIST FCN-{args.mnist_layers}, BP(λ), {args.mnist_steps} steps")
            _points(ax, runs, part, metric, lambda r: r["lam"])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("BP(λ): mixing backpropagated and predicted credit (dots: single seeds)")
    save_figure(fig, path)
    plt.close(fig)


# -- the command ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args: argparse.Namespace) -> int:
        _check_grid(args)
        backend.set_backend(args.backend)  # CuPy asked for but unusable: one line now, not one per run
        backend.set_backend("numpy")
        cells = _cells(args)
        for cell in cells:  # every run's options checked before any starts
            cell["options"] = _cell_options(cell)

        def reused(cell: dict) -> dict | None:
            finished = args.resume and finished_summary(cell["out"], cell["options"], cell["steps"]) is not None
            return _record(cell, None) if finished else None

        def line(r: dict) -> str:
            if "error" in r:
                return f"{r['part']} {r['label']} seed {r['seed']}: FAILED: {r['error']} (command: {r['command']})"
            metric = "solved" if r["part"] == "copy" else "test_error"
            return (f"{r['part']} {r['label']} seed {r['seed']}: {metric} {_fmt(r.get(metric))}, cos(SG, truth) "
                    f"{_fmt(r.get('true_cosine'), 2)}, {_speed(r.get('speed'))}/s")

        runs, wall = run_grid(PROG, args, cells, what=f"{len(cells)} runs", reused=reused,
                              grid_cell=lambda cell, executor: _grid_cell(args, cell, executor),
                              record=lambda cell, grid_cell, result: _record(cell, result), line=line)
        table = _aggregate(runs)
        command = PROG + " " + shlex.join(portable_paths(argv))
        payload = {"command": command, "seeds": args.seeds, "wall_seconds": wall, "table": table,
                   "runs": portable_paths(runs)}
        return write_grid(PROG, args.figures / args.name, runs, wall, markdown=_markdown(args, command, table, runs, wall),
                          payload=payload, plot=lambda path: _plot(table, runs, args, path))

    return command_main(PROG, _parser(), argv, body)
