"""``python -m minidni.run calibrate``: choose the Copy protocol on the truncated-BPTT baseline.

    python -m minidni.run calibrate                       # BPTT, 2 phases x 3 units x T = 2..5, seed 0
    python -m minidni.run calibrate --seeds 0 1 --resume  # add a seed, reuse what has run

The paper leaves two choices open that decide how far truncated BPTT gets on Copy
and Repeat Copy (``figures/copy_protocol.md``): whether the batch rows' episodes
are in phase (``--phase aligned|staggered``) and what the 0.15-bit curriculum
threshold is measured per (``--curriculum-unit episode|step|bit``). This command
runs the BPTT-only Table 2 grid (:mod:`minidni.experiments.table2`, one grid per
protocol, cells in ``--out/PHASE-UNIT/...``, each protocol's own table in
``--out/tables/``) and ranks the protocols by how close their BPTT lengths come to
the paper's BPTT column: the mean over tasks and T of ``|log2(ours / paper)|``
(a factor of 2 too short or too long counts 1), with seeds averaged first.

Writes ``<figures>/<name>.md`` (``--name`` default ``table2_calibration``: every
protocol's lengths beside the paper's, its distance, the ranking, the command and
wall time) and ``<name>.json``. The chosen protocol is the one with the smallest
distance; Table 2 is then run under it (``table2 --extra "--phase P
--curriculum-unit U"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from minidni.cli import UsageError, command_main, make_parser, output_path, positive_int, prepare_out_dir, seed_int
from minidni.experiments import table2
from minidni.experiments.grid import add_grid_args, check_distinct, plain_name
from minidni.io import portable_paths, write_json, write_text
from minidni.tasks.curriculum import UNITS

PROG = "python -m minidni.run calibrate"
PHASES = ("aligned", "staggered")
TASKS = ("copy", "repeat-copy")


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Rank the Copy protocols (batch-row phase x curriculum unit) by how close truncated "
                          "BPTT comes to the paper's BPTT column.")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks")
    p.add_argument("--T", type=positive_int, nargs="+", default=[2, 3, 4, 5], help="truncation lengths")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0], help="seeds per cell")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="batch-row phases tried")
    p.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS), help="curriculum units tried")
    p.add_argument("--steps", type=positive_int, default=20000, help="training windows per run")
    p.add_argument("--hidden", type=positive_int, default=128, help="LSTM units")
    p.add_argument("--batch", type=positive_int, default=32, help="streams")
    add_grid_args(p, default_workers=max(1, (os.cpu_count() or 1)))
    p.add_argument("--resume", action="store_true", help="reuse finished cells, continue interrupted ones")
    p.add_argument("--out", type=output_path, default=Path("runs/calibrate"), help="folder of the individual runs")
    p.add_argument("--figures", type=output_path, default=Path("figures"), help="folder for NAME.md/.json")
    p.add_argument("--name", type=plain_name, default="table2_calibration", help="file name (no suffix)")
    return p


def _table2_argv(args, phase: str, unit: str) -> list[str]:
    """The BPTT-only ``table2`` command line of one protocol."""
    argv = ["--modes", "bptt", "--tasks", *args.tasks, "--T", *map(str, args.T), "--seeds", *map(str, args.seeds),
            "--steps", str(args.steps), "--hidden", str(args.hidden), "--batch", str(args.batch),
            "--workers", str(args.workers), "--executor", args.executor,
            "--extra", f"--phase {phase} --curriculum-unit {unit}",
            "--out", str(args.out / f"{phase}-{unit}"), "--figures", str(args.out / "tables"),
            "--name", f"{phase}-{unit}"]
    if args.ray_address is not None:
        argv += ["--ray-address", args.ray_address]
    if args.ray_timeout is not None:
        argv += ["--ray-timeout", str(args.ray_timeout)]
    return argv + (["--resume"] if args.resume else [])


def distance(lengths: dict, paper: dict) -> float:
    """Mean over (task, T) of ``|log2(ours / paper)|``; ``lengths`` {task: {T: mean length}}, NaN if none.

    A length of 0 (not even N=1 solved) counts as 3, the shortest length scored.
    """
    terms = [abs(math.log2(max(v, 3) / paper[task][T])) for task, Ts in lengths.items() for T, v in Ts.items()
             if not math.isnan(v)]
    return sum(terms) / len(terms) if terms else math.nan


def _protocol_result(path: Path) -> tuple[dict, float]:
    """({task: {T: {"mean", "values"}}} of the BPTT rows of one protocol's table2 JSON, its runs' seconds)."""
    data = json.loads(path.read_text())
    lengths = {task: {int(T): {"mean": e["mean"], "values": e["values"]} for T, e in modes["bptt"].items()}
               for task, modes in data["table"].items()}
    return lengths, sum(r.get("wall_seconds", 0.0) for r in data["runs"])


def _markdown(args, command: str, results: dict, wall: float) -> str:
    paper = table2.PAPER
    Ts = sorted(args.T)
    ranked = sorted(results, key=lambda k: (math.isnan(results[k]["distance"]), results[k]["distance"]))
    lines = ["# Calibrating the Copy protocol on truncated BPTT", "",
             f"Command: `{command}`", "",
             f"Truncated BPTT only, {args.steps} windows per run, {args.hidden} units, batch {args.batch}, "
             f"seeds {', '.join(map(str, args.seeds))} (mean shown, each seed in brackets when more than one); "
             f"{sum(r['run_seconds'] for r in results.values()) / 60:.1f} min of run time summed over the runs "
             f"({args.workers} at a time, one BLAS thread each), {wall / 60:.1f} min of wall time for this "
             "invocation (runs reused with --resume cost nothing). Every other option at the "
             "command's defaults (Adam 3e-3, clip 1, per-episode reset, a window of 100 episodes).", "",
             "Cells: longest episode length solved (Copy N+3, Repeat Copy N·R+3), the paper's BPTT in "
             "parentheses. Distance: the mean over tasks and T of |log2(ours / paper)| (1 = a factor of 2 off). "
             "Protocols ranked by it, closest first.", "",
             "| protocol (phase, unit) | " + " | ".join(f"{t} T={T}" for t in args.tasks for T in Ts)
             + " | distance |", "|---|" + "---|" * (len(args.tasks) * len(Ts) + 1)]
    for key in ranked:
        r = results[key]
        cells = []
        for task in args.tasks:
            for T in Ts:
                e = r["lengths"][task].get(T, {"mean": math.nan, "values": []})
                seeds = " [" + ", ".join(f"{v:g}" for v in e["values"]) + "]" if len(e["values"]) > 1 else ""
                mean = "–" if math.isnan(e["mean"]) else f"{e['mean']:.3g}"
                cells.append(f"{mean}{seeds} ({paper[task]['bptt'][T]})")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {r['distance']:.2f} |")
    spread = max((max(v) - min(v) for task in args.tasks for T in Ts
                  if (v := [r["lengths"][task][T]["mean"] for r in results.values() if T in r["lengths"][task]])),
                 default=math.nan)
    best = ranked[0]
    phase, unit = best.split(", ")
    lines += ["", f"Distances span {results[ranked[0]]['distance']:.2f} to {results[ranked[-1]]['distance']:.2f}; "
              f"at any one task and T the protocols differ by at most {spread:.3g} in length solved."]
    lines += ["", f"Closest to the paper: **{best}** (distance {results[best]['distance']:.2f}). Table 2 under it: "
              f"`python -m minidni.run table2 --extra \"--phase {phase} --curriculum-unit {unit}\" ...`.", "",
              f"Each protocol's own table: `{portable_paths([str(args.out / 'tables')])[0]}/PHASE-UNIT.md`."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args: argparse.Namespace) -> int:
        check_distinct(args, ("tasks", "T", "seeds", "phases", "units"))
        missing = sorted(T for T in args.T if T not in table2.PAPER["copy"]["bptt"])
        if missing:
            raise UsageError(f"--T {missing[0]} has no BPTT length in the paper to calibrate against; "
                             f"accepted: {', '.join(map(str, sorted(table2.PAPER['copy']['bptt'])))}")
        prepare_out_dir(args.out)
        prepare_out_dir(args.figures, option="--figures")
        t0 = time.perf_counter()
        results, status = {}, 0
        for phase in args.phases:
            for unit in args.units:
                print(f"{PROG}: protocol phase {phase}, unit {unit}", flush=True)
                code = table2.main(_table2_argv(args, phase, unit))
                if code == 2:  # a usage error, already printed: nothing ran
                    return code
                status = max(status, code)
                found, seconds = _protocol_result(args.out / "tables" / f"{phase}-{unit}.json")
                means = {task: {T: e["mean"] for T, e in Ts.items()} for task, Ts in found.items()}
                results[f"{phase}, {unit}"] = {"phase": phase, "unit": unit, "lengths": found, "run_seconds": seconds,
                                               "distance": distance(means, {t: table2.PAPER[t]["bptt"]
                                                                            for t in found})}
        wall = time.perf_counter() - t0
        command = PROG + " " + shlex.join(portable_paths(argv))
        base = args.figures / args.name
        write_text(base.with_suffix(".md"), _markdown(args, command, results, wall))
        write_json(base.with_suffix(".json"), {"command": command, "wall_seconds": wall,
                                               "paper_bptt": {t: table2.PAPER[t]["bptt"] for t in args.tasks},
                                               "protocols": results})
        print(f"{PROG}: wrote {base}.md, .json ({wall / 60:.1f} min)", flush=True)
        return status

    return command_main(PROG, _parser(), argv, body)
