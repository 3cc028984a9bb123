"""``python -m minidni.bench command``: what the copy command's loop costs on top of the bare trainer.

For each of ``--modes`` two setups train side by side, in interleaved rounds of
``--steps`` windows each (after an untimed warm-up round):

- **bare**: :meth:`RecurrentTrainer.train_window` on Copy windows generated before
  the block (their generation timed separately, ``data``), diagnostics collected
  once per block: what ``python -m minidni.bench recurrent`` measures;
- **command**: the training loop of ``python -m minidni.run copy`` itself
  (:class:`minidni.experiments.recurrent._Run`: the stream, the episode scorer, the
  curriculum moving at log points, a log every ``--log-every`` windows and a
  checkpoint every ``--checkpoint-every``, into a temporary folder).

Both start from the same seed and options. Reported per mode: seconds per window of
each (medians over rounds, wall clock and process CPU time) and the command's
overhead, ``command / (bare + data) - 1`` (what the command does beyond training
and making its data: scoring, curriculum, logs, checkpoints), also in CPU time, and
``command / bare - 1`` (data generation included in the overhead). Run with
``OPENBLAS_NUM_THREADS=1`` on a loaded machine and read the CPU-time figures: they
are what a window costs on a core of its own. Writes ``--out`` (JSON, with the BLAS
and the load average) and prints a table.

    python -m minidni.bench command                         # the main job's shape: H=128, B=32, T=3
    python -m minidni.bench command --hidden 256 --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minidni import backend
from minidni.bench.machine import blas_info, load_average
from minidni.bench.recurrent import _train_block, _windows
from minidni.cli import command_main, make_parser, output_path, positive_int, prepare_out_file, seed_int
from minidni.dni.recurrent import MODES
from minidni.experiments import recurrent
from minidni.io import write_json

PROG = "python -m minidni.bench command"


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Seconds per Copy window through the copy command's loop against the bare trainer.")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="training modes")
    p.add_argument("--hidden", type=positive_int, default=128, help="LSTM units")
    p.add_argument("--batch", type=positive_int, default=32, help="parallel streams")
    p.add_argument("--T", type=positive_int, default=3, help="steps per window")
    p.add_argument("--steps", type=positive_int, default=1000, help="windows per setup per round")
    p.add_argument("--rounds", type=positive_int, default=3, help="timed rounds (medians over rounds)")
    p.add_argument("--log-every", type=positive_int, default=200, help="the command's log interval")
    p.add_argument("--checkpoint-every", type=positive_int, default=1000, help="the command's checkpoint interval")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of both setups")
    p.add_argument("--out", type=output_path, default=Path("figures/bench_command.json"), help="JSON file to write")
    return p


def _command_run(args, mode: str, folder: Path) -> recurrent._Run:
    ns = recurrent.make_parser("copy").parse_args(
        ["--mode", mode, "--hidden", str(args.hidden), "--batch", str(args.batch), "--T", str(args.T),
         "--seed", str(args.seed), "--log-every", str(args.log_every),
         "--checkpoint-every", str(args.checkpoint_every), "--no-compare", "--no-progress", "--out", str(folder)])
    ns.steps = 0  # raised block by block
    return recurrent._Run(ns, "copy", mode, folder)


def _command_block(run: recurrent._Run, steps: int) -> tuple[float, float]:
    """``steps`` more windows of the command's own loop; wall and CPU seconds per window."""
    run.args.steps += steps
    bar = tqdm(disable=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    run._loop(bar, run.trainer.step)
    backend.synchronize(run.xp)
    return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps


def measure(args: argparse.Namespace) -> dict:
    load_start = load_average()
    fields = ("bare", "bare_cpu", "data", "data_cpu", "command", "command_cpu")
    samples: dict = {m: {k: [] for k in fields} for m in args.modes}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {m: _command_run(args, m, Path(tmp) / m) for m in args.modes}
        bare = {m: _command_run(args, m, Path(tmp) / f"bare-{m}") for m in args.modes}  # same trainer and stream
        for rnd in range(args.rounds + 1):  # round 0: warm-up
            for m in args.modes:
                cpu0 = time.process_time()
                windows, data_s = _windows(bare[m].stream, np, args.steps, args.T)
                data_cpu = (time.process_time() - cpu0) / args.steps
                step_s, cpu_s = _train_block(bare[m].trainer, windows, np)
                cmd_s, cmd_cpu = _command_block(runs[m], args.steps)
                if rnd:
                    for k, v in zip(fields, (step_s, cpu_s, data_s, data_cpu, cmd_s, cmd_cpu)):
                        samples[m][k].append(v)
    out = []
    for m, s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        out.append({"mode": m, **{f"{k}_seconds_per_window": v for k, v in med.items()},
                    "command_over_bare_and_data": med["command"] / (med["bare"] + med["data"]) - 1,
                    "command_over_bare": med["command"] / med["bare"] - 1,
                    "command_over_bare_and_data_cpu": med["command_cpu"] / (med["bare_cpu"] + med["data_cpu"]) - 1,
                    "samples": s})
    return {"config": {k: getattr(args, k) for k in ("hidden", "batch", "T", "steps", "rounds", "log_every",
                                                       "checkpoint_every", "seed")} | {"modes": list(args.modes)},
            "timing": "interleaved rounds after an untimed warm-up round; medians over rounds; data generation "
                      "of the bare setup timed separately; CPU fields are process CPU time",
            "machine": {"numpy": np.__version__, "blas": blas_info(), "load_average_start": load_start,
                        "load_average_end": load_average()},
            "runs": out}


def table(result: dict) -> str:
    c, m = result["config"], result["machine"]
    lines = [f"Copy, H={c['hidden']}, B={c['batch']}, T={c['T']}, {c['rounds']} rounds x {c['steps']} windows, "
             f"log every {c['log_every']}, checkpoint every {c['checkpoint_every']}; "
             f"load {m['load_average_start']} -> {m['load_average_end']}",
             f"{'mode':<8} {'bare ms':>8} {'data ms':>8} {'command ms':>10} {'overhead':>9} {'(no data)':>9} "
             f"{'CPU: bare+data':>14} {'command':>8} {'overhead':>9}"]
    for r in result["runs"]:
        lines.append(f"{r['mode']:<8} {r['bare_seconds_per_window'] * 1e3:8.3f} "
                     f"{r['data_seconds_per_window'] * 1e3:8.3f} {r['command_seconds_per_window'] * 1e3:10.3f} "
                     f"{r['command_over_bare_and_data']:9.1%} {r['command_over_bare']:9.1%} "
                     f"{(r['bare_cpu_seconds_per_window'] + r['data_cpu_seconds_per_window']) * 1e3:14.3f} "
                     f"{r['command_cpu_seconds_per_window'] * 1e3:8.3f} "
                     f"{r['command_over_bare_and_data_cpu']:9.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        prepare_out_file(args.out)
        result = measure(args)
        print(table(result))
        print(f"wrote {write_json(args.out, result)}")
        return 0

    return command_main(PROG, _parser(), argv, body)
